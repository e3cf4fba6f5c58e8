"""Chapter 6.2.6: feature maps and receptive fields, measured by backpropagation.

    python experiments/04_receptive_field.py [--quick] [--out-dir DIR]

The receptive field of an output element is every input element that can affect it. For a
stack of layers it is exactly where the gradient of that one output element with respect to the
input is nonzero. This script builds several stacks (LeNet's encoder among them) with random
*positive* weights (so no sum can cancel to zero by chance) and average pooling (max pooling
would pass the gradient to one element per window only), takes ``jax.grad`` of the centre output
element, and compares the nonzero region with ``jaxconv.shapes.receptive_field``: its bounding
box must be the predicted size at the predicted place. Dilated kernels leave holes inside the
box; the dilations 1, 2, 4 fill it.
Figure: ``receptive_fields.png`` (the gradient, and the predicted field as a red box).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import NamedTuple

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.patches import Rectangle

import jaxconv
from jaxconv.shapes import receptive_field

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, out_dir, save, table  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/04_receptive_field")  # figures and tables go here
    quick: bool = False  # nothing to shrink: every stack is small
    seed: int = 0  # random seed
    margin: int = 6  # input pixels around the field on every side


class Layer(NamedTuple):
    kind: str  # "conv" or "pool" (average)
    kernel: int
    stride: int = 1
    dilation: int = 1
    padding: int = 0


def conv(k: int, s: int = 1, d: int = 1, p: int = 0) -> Layer:
    return Layer("conv", k, s, d, p)


def pool(k: int, s: int) -> Layer:
    return Layer("pool", k, s)


STACKS: dict[str, list[Layer]] = {
    "conv3": [conv(3)],
    "conv3 x2": [conv(3), conv(3)],
    "LeNet encoder": [conv(5, p=2), pool(2, 2), conv(5), pool(2, 2)],
    "conv3/2 x2": [conv(3, s=2), conv(3, s=2)],
    "conv3 dilation 2": [conv(3, d=2)],
    "conv3 dilations 1,2,4": [conv(3, d=1), conv(3, d=2), conv(3, d=4)],
    "conv5 x10 (6.3)": [conv(5)] * 10,
}


def predicted_field(layers: list[Layer], out_index: int) -> tuple[int, int]:
    """(first input row, size) of the field of output row ``out_index`` along one axis.

    Size from :func:`receptive_field`; the start walks back through the strides and paddings:
    output i of a layer starts at input ``i * stride - padding``.
    """
    size = receptive_field([(ly.kernel, ly.stride, ly.dilation) for ly in layers])[0]
    start, jump = 0, 1
    for ly in layers:
        start -= ly.padding * jump
        jump *= ly.stride
    return start + out_index * jump, size


def build_stack(layers: list[Layer], rng: np.random.Generator):
    """The stack as ``f(x)`` on (1, 1, H, W) NCHW, conv kernels uniform in [0.5, 1.5)."""
    weights = [
        rng.uniform(0.5, 1.5, (1, 1, ly.kernel, ly.kernel)).astype(np.float32) for ly in layers
    ]

    def f(x: jax.Array) -> jax.Array:
        for w, ly in zip(weights, layers, strict=True):
            if ly.kind == "conv":
                x = jaxconv.conv2d(x, w, stride=ly.stride, padding=ly.padding, dilation=ly.dilation)
            else:
                x = jaxconv.avg_pool2d(x, ly.kernel, stride=ly.stride)
        return x

    return f


def measure(layers: list[Layer], size: int, rng: np.random.Generator) -> dict:
    """Gradient of the centre output element w.r.t. a (size, size) input; its nonzero region."""
    f = build_stack(layers, rng)
    x = rng.standard_normal((1, 1, size, size), np.float32)
    out_shape = jax.eval_shape(f, x).shape  # (1, 1, oh, ow)
    i, j = out_shape[2] // 2, out_shape[3] // 2
    grad = jax.jit(jax.grad(lambda x: f(x)[0, 0, i, j]))(x)[0, 0]  # (size, size)
    rows, cols = np.nonzero(np.asarray(grad))
    return {
        "grad": np.asarray(grad),
        "out_index": (i, j),
        "box": (
            int(rows.min()),
            int(cols.min()),
            int(rows.max() - rows.min() + 1),
            int(cols.max() - cols.min() + 1),
        ),  # (top, left, height, width)
        "nonzero": int(rows.size),
    }


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    rng = np.random.default_rng(cfg.seed)

    results, rows = {}, []
    for name, layers in STACKS.items():
        rf = receptive_field([(ly.kernel, ly.stride, ly.dilation) for ly in layers])
        size = rf[0] + 2 * cfg.margin
        res = measure(layers, size, rng)
        top, size_h = predicted_field(layers, res["out_index"][0])
        left, size_w = predicted_field(layers, res["out_index"][1])
        res.update(receptive_field=rf, predicted_box=(top, left, size_h, size_w), input=size)
        res["match"] = res["box"] == res["predicted_box"]
        results[name] = res
        rows.append(
            {
                "stack": name,
                "receptive_field": f"{rf[0]}x{rf[1]}",
                "predicted box (t,l,h,w)": res["predicted_box"],
                "gradient box": res["box"],
                "nonzero": f"{res['nonzero']}/{rf[0] * rf[1]}",
                "match": res["match"],
            }
        )
    print(table(rows))

    fig, axes = plt.subplots(2, 4, figsize=(15, 8), layout="constrained")
    for ax, (name, res) in zip(axes.flat, results.items(), strict=False):  # 8 axes, 7 stacks
        g = np.abs(res["grad"])
        ax.imshow(
            np.where(g > 0, g, np.nan), cmap="viridis", interpolation="nearest", norm=LogNorm()
        )  # log: the faint edge of a deep stack's field still shows
        ax.set_facecolor("0.92")  # zero gradient: outside the field (and dilation holes)
        top, left, h, w = res["predicted_box"]
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="red", lw=1.5))
        ax.set_title(f"{name}\nfield {h}x{w}, {res['nonzero']} nonzero of {h * w}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes.flat[-1].axis("off")
    legend = (
        "colour: |d out[centre] / d input|, log scale\n"
        "grey: zero gradient\n"
        "red box: jaxconv.receptive_field\n(size) and strides/paddings (place)"
    )
    axes.flat[-1].text(0.0, 0.5, legend, fontsize=10, va="center")
    fig.suptitle("6.2.6 Receptive field of one output element = where its gradient is nonzero")
    figure = save(fig, out / "receptive_fields.png")

    return {"stacks": results, "figures": [figure]}


if __name__ == "__main__":
    cli(Config, main, __doc__)
