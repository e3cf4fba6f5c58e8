"""Chapter 6.4: multiple input and output channels, and the 1x1 convolution.

    python experiments/06_channels.py [--quick] [--out-dir DIR]

Reproduces:
  * 6.4.1  two input channels, summed: corr2d_multi_in(X, K) -> [[56, 72], [104, 120]];
  * 6.4.2  K stacked with K + 1 and K + 2 into a (3, 2, 2, 2) kernel, three output channels
           [[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]];
  * 6.4.3  a 1x1 convolution as one matrix product (``conv1x1``) equals
           ``corr2d_multi_in_out`` on a random (3, 3, 3) input and (2, 3, 1, 1) kernel
           (the chapter asserts a summed |difference| < 1e-6).
Each op runs both ways (``impl="lax"`` and the chapter's ``impl="vmap"``).
Figure: ``channels.png``.
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
from _common import cli, draw_matrix, out_dir, save, show  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/06_channels")  # figures and tables go here
    quick: bool = False  # nothing to shrink here
    seed: int = 0  # random seed


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)

    # --- 6.4.1: multiple input channels ---------------------------------------------------------
    X = jnp.array(
        [
            [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]],
            [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]],
        ]
    )  # (ci=2, 3, 3)
    K = jnp.array([[[0.0, 1.0], [2.0, 3.0]], [[1.0, 2.0], [3.0, 4.0]]])  # (ci=2, 2, 2)
    multi_in = jaxconv.corr2d_multi_in(X, K)  # (2, 2): sum over channels of corr2d
    multi_in_vmap = jaxconv.corr2d_multi_in(X, K, impl="vmap")
    show("corr2d_multi_in(X, K)", multi_in)

    # --- 6.4.2: multiple output channels --------------------------------------------------------
    K3 = jnp.stack((K, K + 1, K + 2), 0)  # (co=3, ci=2, 2, 2)
    print(f"K.shape = {K3.shape}")
    multi_out = jaxconv.corr2d_multi_in_out(X, K3)  # (3, 2, 2)
    multi_out_vmap = jaxconv.corr2d_multi_in_out(X, K3, impl="vmap")
    show("corr2d_multi_in_out(X, K)", multi_out)
    impl_diff = float(
        max(
            jnp.max(jnp.abs(multi_in - multi_in_vmap)), jnp.max(jnp.abs(multi_out - multi_out_vmap))
        )
    )
    print(f"impl='lax' vs impl='vmap': max |diff| = {impl_diff:.1e}")

    # --- 6.4.3: 1x1 convolution = a fully connected layer at every pixel -------------------------
    rng = np.random.default_rng(cfg.seed)
    X1 = jnp.asarray(rng.standard_normal((3, 3, 3), np.float32))  # (ci=3, h, w)
    K1 = jnp.asarray(rng.standard_normal((2, 3, 1, 1), np.float32))  # (co=2, ci=3, 1, 1)
    Y1 = jaxconv.conv1x1(X1, K1)  # (2, 3, 3), one (2, 3) @ (3, 9) product
    Y2 = jaxconv.corr2d_multi_in_out(X1, K1)
    sum_diff = float(jnp.sum(jnp.abs(Y1 - Y2)))
    max_diff = float(jnp.max(jnp.abs(Y1 - Y2)))
    print(
        f"conv1x1 vs corr2d_multi_in_out: max |diff| = {max_diff:.2e}, "
        f"sum |diff| = {sum_diff:.2e} (the chapter asserts < 1e-6)"
    )
    assert sum_diff < 1e-6

    # --- figure -------------------------------------------------------------------------------
    fig, axes = plt.subplots(3, 4, figsize=(12, 9), layout="constrained")
    draw_matrix(axes[0, 0], X[0], "X channel 0")
    draw_matrix(axes[0, 1], X[1], "X channel 1")
    draw_matrix(axes[0, 2], K[0], "K channel 0")
    draw_matrix(axes[0, 3], K[1], "K channel 1")
    for o in range(3):
        draw_matrix(axes[1, o], multi_out[o], f"output channel {o} (kernel K + {o})")
    draw_matrix(axes[1, 3], multi_in, "corr2d_multi_in(X, K)\n= output channel 0")
    draw_matrix(
        axes[2, 0],
        K1.reshape(2, 3),
        "1x1 kernel as a (co, ci) matrix",
        cmap="coolwarm",
        fmt="{:.2f}",
    )
    draw_matrix(axes[2, 1], Y1[0], "conv1x1 output channel 0", cmap="coolwarm", fmt="{:.2f}")
    draw_matrix(axes[2, 2], Y2[0], "corr2d_multi_in_out channel 0", cmap="coolwarm", fmt="{:.2f}")
    draw_matrix(
        axes[2, 3],
        np.abs(np.asarray(Y1 - Y2)).sum(0),
        f"|difference| summed over channels\n(max {max_diff:.0e})",
        cmap="magma",
        fmt="{:.0e}",
    )
    fig.suptitle("6.4 Multiple input and output channels; 1x1 convolution as a matrix product")
    figure = save(fig, out / "channels.png")

    return {
        "multi_in": np.asarray(multi_in),
        "K_shape": tuple(K3.shape),
        "multi_out": np.asarray(multi_out),
        "impl_diff": impl_diff,
        "conv1x1_max_diff": max_diff,
        "conv1x1_sum_diff": sum_diff,
        "figures": [figure],
    }


if __name__ == "__main__":
    cli(Config, main, __doc__)
