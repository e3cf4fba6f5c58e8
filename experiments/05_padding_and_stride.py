"""Chapter 6.3: padding and stride.

    python experiments/05_padding_and_stride.py [--quick] [--out-dir DIR]

Reproduces the chapter's four shapes on an 8x8 input (its ``comp_conv2d``):
  kernel 3, padding 1 -> 8x8;  kernel (5, 3), padding (2, 1) -> 8x8;
  kernel 3, padding 1, stride 2 -> 4x4;  kernel (3, 5), padding (0, 1), stride (3, 4) -> 2x2;
checks the chapter's formula floor((n - k + p + s) / s) (p = total padding) against
``conv_output_shape`` and against the shape ``conv2d`` really returns over a grid of sizes,
kernels, paddings, strides and dilations (``output_sizes.csv``), and runs the opening remark:
a 240x240 image through 10 layers of 5x5 convolutions ends at 200x200 (at 240x240 with
padding 2). Figure: ``padding_and_stride.png``.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import sys
from pathlib import Path

import jax
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import jaxconv
from jaxconv.shapes import conv_output_shape

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, out_dir, save, table  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/05_padding_and_stride")  # figures and tables go here
    quick: bool = False  # a smaller grid of configurations
    seed: int = 0  # random seed


# The chapter's four conv layers on an 8x8 input: (kernel_size, padding, stride).
CHAPTER_CASES = [
    ((3, 3), (1, 1), (1, 1)),
    ((5, 3), (2, 1), (1, 1)),
    ((3, 3), (1, 1), (2, 2)),
    ((3, 5), (0, 1), (3, 4)),
]


def comp_conv2d(rng: np.random.Generator, X: jax.Array, kernel, padding, stride) -> jax.Array:
    """The chapter's helper: a 1-in 1-out conv layer with random weights on a 2-D input.

    (h, w) -> (1, 1, h, w) -> conv -> (1, 1, oh, ow) -> (oh, ow).
    """
    bound = 1.0 / np.sqrt(kernel[0] * kernel[1])  # PyTorch's default init range
    w = rng.uniform(-bound, bound, (1, 1, *kernel)).astype(np.float32)  # OIHW
    b = rng.uniform(-bound, bound, (1,)).astype(np.float32)
    Y = jaxconv.conv2d(X.reshape((1, 1) + X.shape), w, b, padding=padding, stride=stride)
    return Y.reshape(Y.shape[2:])


def chapter_formula(n: int, k: int, p_total: int, s: int, d: int = 1) -> int:
    """floor((n - k + p + s) / s), with the dilated kernel extent d * (k - 1) + 1."""
    return (n - (d * (k - 1) + 1) + p_total + s) // s


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    rng = np.random.default_rng(cfg.seed)

    # --- the chapter's shapes -------------------------------------------------------------------
    X = rng.uniform(size=(8, 8)).astype(np.float32)
    shapes = []
    for k, p, s in CHAPTER_CASES:
        Y = comp_conv2d(rng, X, k, p, s)
        shapes.append(tuple(Y.shape))
        print(f"kernel_size={k}, padding={p}, stride={s}: {tuple(Y.shape)}")

    # --- formula vs conv_output_shape vs the real output shape, over a grid ----------------------
    sizes = (8,) if cfg.quick else (5, 8, 11)
    rows = []
    for n, k, p, s, d in itertools.product(sizes, (1, 2, 3, 5), (0, 1, 2), (1, 2, 3), (1, 2)):
        if d * (k - 1) + 1 > n + 2 * p:
            continue  # the kernel does not fit
        formula = chapter_formula(n, k, 2 * p, s, d)  # padding p on each side: 2p in total
        shape = conv_output_shape((n, n), k, s, p, d)
        x = jax.ShapeDtypeStruct((1, 1, n, n), np.float32)
        w = jax.ShapeDtypeStruct((1, 1, k, k), np.float32)
        real = jax.eval_shape(
            lambda x, w, s=s, p=p, d=d: jaxconv.conv2d(x, w, stride=s, padding=p, dilation=d), x, w
        ).shape[2:]
        rows.append(
            {
                "n": n,
                "k": k,
                "p": p,
                "s": s,
                "d": d,
                "formula": formula,
                "conv_output_shape": shape[0],
                "conv2d": real[0],
                "match": formula == shape[0] == real[0] == real[1] == shape[1],
            }
        )
    with open(out / "output_sizes.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(table(rows[:: max(1, len(rows) // 12)]))  # a sample; all rows in output_sizes.csv
    mismatches = [r for r in rows if not r["match"]]
    print(
        f"{len(rows)} configurations, {len(mismatches)} mismatches "
        f"(all rows in {out / 'output_sizes.csv'})"
    )

    # --- 240x240 through 10 layers of 5x5 -------------------------------------------------------
    img = rng.standard_normal((1, 1, 240, 240), np.float32)
    w5 = rng.standard_normal((1, 1, 5, 5), np.float32) / 5.0
    sides = {}
    for pad in (0, 2):

        def ten_layers(x: jax.Array, pad: int = pad) -> list[jax.Array]:
            outs = []
            for _ in range(10):
                x = jaxconv.conv2d(x, w5, padding=pad)  # (1, 1, h, w) -> (1, 1, h-4+2pad, ...)
                outs.append(x)
            return outs

        outs = jax.eval_shape(ten_layers, img)  # the shapes are the point: nothing computed
        sides[pad] = [240] + [int(o.shape[-1]) for o in outs]
        print(f"240x240, 10 layers of 5x5, padding {pad}: {tuple(outs[-1].shape[2:])}")

    # --- figure ---------------------------------------------------------------------------------
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for pad, side in sides.items():
        ax0.plot(range(11), side, "o-", label=f"padding {pad}")
    ax0.set_xlabel("5x5 conv layers applied")
    ax0.set_ylabel("height = width")
    ax0.set_title("6.3: 240x240 -> 200x200 without padding")
    ax0.legend()
    _draw_strided_windows(ax1, n=8, kernel=(3, 5), padding=(0, 1), stride=(3, 4))
    figure = save(fig, out / "padding_and_stride.png")

    return {
        "chapter_shapes": shapes,
        "grid": rows,
        "mismatches": mismatches,
        "sides": sides,
        "figures": [figure],
    }


def _draw_strided_windows(ax, n: int, kernel, padding, stride) -> None:
    """The padded n x n input, with every window of the strided conv outlined."""
    (kh, kw), (ph, pw), (sh, sw) = kernel, padding, stride
    H, W = n + 2 * ph, n + 2 * pw
    grid = np.zeros((H, W))
    grid[ph : ph + n, pw : pw + n] = 1.0  # input cells; padding stays 0
    ax.imshow(grid, cmap="Greys", vmin=0.0, vmax=3.0, interpolation="nearest")
    ax.set_xticks(np.arange(W + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(H + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", lw=0.8)
    ax.tick_params(which="minor", length=0)
    oh, ow = conv_output_shape((n, n), kernel, stride, padding)
    for idx, (i, j) in enumerate(itertools.product(range(oh), range(ow))):
        ax.add_patch(
            Rectangle(
                (j * sw - 0.5 + 0.08, i * sh - 0.5 + 0.08),
                kw - 0.16,
                kh - 0.16,
                fill=False,
                ec=f"C{idx}",
                lw=2.5,
                label=f"output ({i}, {j})",
            )
        )
    ax.set_xticks(range(W))
    ax.set_yticks(range(H))
    ax.set_title(
        f"{n}x{n} input (grey) + padding {padding} (white), kernel {kernel}, "
        f"stride {stride}\n-> {oh}x{ow} windows; a 3rd column would not fit",
        fontsize=9,
    )
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)


if __name__ == "__main__":
    cli(Config, main, __doc__)
