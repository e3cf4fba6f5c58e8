"""Chapter 6.2.1-6.2.3: cross-correlation, the convolution layer, edge detection.

    python experiments/01_cross_correlation.py [--quick] [--out-dir DIR]

Reproduces, in order:
  * 6.2.1  corr2d on the 3x3 example -> [[19, 25], [37, 43]] (the lax op and the manual vmap);
  * 6.2.2  the Conv2D layer (learnable kernel + scalar bias on corr2d): its parameters and output;
  * 6.2.3  a 6x8 image with a black vertical band, the kernel [[1, -1]], the edges it finds
           (+1 white->black, -1 black->white), and nothing on the transposed image.
Draws the image, the kernel and both outputs to ``edge_detection.png``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import jaxconv
from jaxconv.models import Conv2D

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, draw_matrix, out_dir, save, show  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/01_cross_correlation")  # figures and tables go here
    quick: bool = False  # nothing to shrink here; accepted for a uniform command line
    seed: int = 0  # random seed


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)

    # --- 6.2.1: the cross-correlation of the chapter's figure ---------------------------------
    X = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])  # (3, 3)
    K = jnp.array([[0.0, 1.0], [2.0, 3.0]])  # (2, 2)
    Y = jaxconv.corr2d(X, K)  # (2, 2): 0*0 + 1*1 + 3*2 + 4*3 = 19 top left
    Y_vmap = jaxconv.corr2d_vmap(X, K)
    show("corr2d(X, K)", Y)
    print(f"corr2d_vmap agrees: max |diff| = {float(jnp.max(jnp.abs(Y - Y_vmap))):.1e}")

    # --- 6.2.2: a convolution layer = corr2d + scalar bias, kernel initialised at random ------
    layer = Conv2D(kernel_size=(2, 2))
    params = layer.init(jax.random.key(cfg.seed), X)
    shapes = jax.tree_util.tree_map(jnp.shape, params)
    print(f"Conv2D parameters: {shapes}")
    layer_out = layer.apply(params, X)  # (2, 2)
    show("Conv2D(X) with its random kernel", layer_out)

    # --- 6.2.3: edge detection ----------------------------------------------------------------
    img = jnp.ones((6, 8)).at[:, 2:6].set(0.0)  # (6, 8): white, a black band in columns 2-5
    edge_k = jnp.array([[1.0, -1.0]])  # (1, 2): nonzero where horizontal neighbours differ
    edges = jaxconv.corr2d(img, edge_k)  # (6, 7)
    edges_t = jaxconv.corr2d(img.T, edge_k)  # (8, 5): the kernel sees no vertical change
    show("X", img)
    show("Y = corr2d(X, K)", edges)
    show("corr2d(X.T, K)", edges_t)

    fig, axes = plt.subplots(
        1, 5, figsize=(15, 3.6), layout="constrained", gridspec_kw={"width_ratios": [8, 2, 7, 6, 5]}
    )
    draw_matrix(axes[0], img, "X (6x8): 1 white, 0 black", cmap="gray")
    draw_matrix(axes[1], edge_k, "K = [[1, -1]]", cmap="coolwarm")
    draw_matrix(axes[2], edges, "corr2d(X, K): +1 white->black, -1 black->white", cmap="coolwarm")
    draw_matrix(axes[3], img.T, "X.T (8x6)", cmap="gray")
    draw_matrix(axes[4], edges_t, "corr2d(X.T, K): no edges", cmap="coolwarm")
    fig.suptitle("6.2.3 Edge detection with a 1x2 kernel")
    figure = save(fig, out / "edge_detection.png")

    return {
        "corr2d": np.asarray(Y),
        "corr2d_vmap": np.asarray(Y_vmap),
        "conv2d_layer_params": jax.device_get(params),
        "conv2d_layer_out": np.asarray(layer_out),
        "X": np.asarray(img),
        "edges": np.asarray(edges),
        "edges_transposed": np.asarray(edges_t),
        "figures": [figure],
    }


if __name__ == "__main__":
    cli(Config, main, __doc__)
