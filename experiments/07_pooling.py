"""Chapter 6.5: maximum and average pooling, padding and stride.

    python experiments/07_pooling.py [--quick] [--out-dir DIR]

Reproduces:
  * 6.5.1  the chapter's pool2d on the 3x3 example: max -> [[4, 5], [7, 8]],
           avg -> [[2, 3], [5, 6]] (and the same through max_pool2d / avg_pool2d, stride 1);
  * 6.5.2  on X = arange(16).reshape(1, 1, 4, 4):
           MaxPool2d(3) -> [[10]] (stride defaults to the window),
           MaxPool2d(3, padding=1, stride=2) -> [[5, 7], [13, 15]],
           MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1)) -> [[5, 7], [13, 15]];
and adds what the chapter leaves to PyTorch's documentation: a table of ``ceil_mode`` and
``count_include_pad`` on two examples (5x5 with 2x2 windows, 6x6 with 3x3 windows; stride 2,
padding 0 or 1).
Figure: ``pooling.png``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxconv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, draw_matrix, out_dir, save, show, table  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/07_pooling")  # figures and tables go here
    quick: bool = False  # nothing to shrink here


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)

    # --- 6.5.1: the chapter's pool2d ------------------------------------------------------------
    X = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])  # (3, 3)
    pool_max = jaxconv.pool2d(X, (2, 2))  # (2, 2)
    pool_avg = jaxconv.pool2d(X, (2, 2), "avg")
    show("pool2d(X, (2, 2))", pool_max)
    show("pool2d(X, (2, 2), 'avg')", pool_avg)
    lib_diff = float(
        max(
            jnp.max(jnp.abs(pool_max - jaxconv.max_pool2d(X[None], 2, stride=1)[0])),
            jnp.max(jnp.abs(pool_avg - jaxconv.avg_pool2d(X[None], 2, stride=1)[0])),
        )
    )
    print(f"pool2d vs max_pool2d/avg_pool2d (stride 1): max |diff| = {lib_diff:.1e}")

    # --- 6.5.2: padding and stride ----------------------------------------------------------------
    X4 = jnp.arange(16, dtype=jnp.float32).reshape((1, 1, 4, 4))  # (N, C, H, W)
    show("X", X4)
    cases = {
        "MaxPool2d(3)": dict(kernel_size=3),
        "MaxPool2d(3, padding=1, stride=2)": dict(kernel_size=3, padding=1, stride=2),
        "MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))": dict(
            kernel_size=(2, 3), stride=(2, 3), padding=(0, 1)
        ),
    }
    pooled = {}
    for name, kw in cases.items():
        pooled[name] = np.asarray(jaxconv.max_pool2d(X4, **kw))  # (1, 1, oh, ow)
        show(name, pooled[name])

    # --- beyond the chapter: ceil_mode and count_include_pad ------------------------------------
    # (n, window, stride): 5x5 with 2x2/2, where a ceil-mode window would start in the padding
    # and is dropped; 6x6 with 3x3/2, where it starts inside and overhangs the padding.
    rows, variants = [], {}
    for n, k, s in ((5, 2, 2), (6, 3, 2)):
        Xn = jnp.arange(n * n, dtype=jnp.float32).reshape((1, 1, n, n))
        for padding in (0, 1):
            for ceil_mode in (False, True):
                common = dict(stride=s, padding=padding, ceil_mode=ceil_mode)
                mx = jaxconv.max_pool2d(Xn, k, **common)
                variants[(n, "max", padding, ceil_mode, None)] = np.asarray(mx)[0, 0]
                rows.append(
                    {
                        "input": f"{n}x{n}",
                        "window": f"{k}x{k}/{s}",
                        "op": "max",
                        "padding": padding,
                        "ceil_mode": ceil_mode,
                        "count_include_pad": "-",
                        "shape": tuple(mx.shape[2:]),
                        "output": _flat(mx),
                    }
                )
                for include in (True, False):
                    av = jaxconv.avg_pool2d(Xn, k, count_include_pad=include, **common)
                    variants[(n, "avg", padding, ceil_mode, include)] = np.asarray(av)[0, 0]
                    rows.append(
                        {
                            "input": f"{n}x{n}",
                            "window": f"{k}x{k}/{s}",
                            "op": "avg",
                            "padding": padding,
                            "ceil_mode": ceil_mode,
                            "count_include_pad": include,
                            "shape": tuple(av.shape[2:]),
                            "output": _flat(av),
                        }
                    )
    print("X = arange(n * n).reshape(n, n):")
    print(table(rows))

    # --- figure ---------------------------------------------------------------------------------
    fig, axes = plt.subplots(2, 5, figsize=(16, 7), layout="constrained")
    draw_matrix(axes[0, 0], X, "X (3x3)")
    draw_matrix(axes[0, 1], pool_max, "pool2d(X, (2, 2)) max")
    draw_matrix(axes[0, 2], pool_avg, "pool2d(X, (2, 2), 'avg')")
    draw_matrix(axes[0, 3], np.arange(36.0).reshape(6, 6), "arange(36), 6x6")
    draw_matrix(
        axes[0, 4],
        variants[(6, "avg", 1, True, False)],
        "avg 3x3/2, padding 1, ceil_mode,\ncount_include_pad=False",
        fmt="{:.2f}",
    )
    draw_matrix(axes[1, 0], X4[0, 0], "X = arange(16), 4x4")
    for ax, (name, val) in zip(axes[1, 1:4], pooled.items(), strict=True):
        draw_matrix(ax, val[0, 0], name.replace(", s", ",\ns"))
    draw_matrix(
        axes[1, 4],
        variants[(6, "avg", 1, True, True)],
        "avg 3x3/2, padding 1, ceil_mode,\ncount_include_pad=True",
        fmt="{:.2f}",
    )
    fig.suptitle("6.5 Pooling: the chapter's examples (left) and ceil_mode / count_include_pad")
    figure = save(fig, out / "pooling.png")

    return {
        "pool2d_max": np.asarray(pool_max),
        "pool2d_avg": np.asarray(pool_avg),
        "library_diff": lib_diff,
        "pooled": pooled,
        "variants": variants,
        "figures": [figure],
    }


def _flat(y) -> str:
    """A (1, 1, oh, ow) output as one line: rows separated by ' | '."""
    arr = np.asarray(y)[0, 0]
    return " | ".join(" ".join(f"{v:g}" for v in row) for row in np.round(arr, 3))


if __name__ == "__main__":
    cli(Config, main, __doc__)
