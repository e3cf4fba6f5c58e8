"""Chapter 6.2.5: cross-correlation and convolution.

    python experiments/03_convolution_vs_correlation.py [--quick] [--out-dir DIR]

Deep-learning "convolution" layers compute a cross-correlation; a true convolution flips the
kernel first. This script shows that
  * ``convolve2d(X, K) == corr2d(X, flip(K))`` on random inputs, and that both agree with
    SciPy's ``signal.convolve2d`` / ``signal.correlate2d`` (mode "valid");
  * the two are different functions for an asymmetric kernel, the same for a symmetric one;
  * learning the kernel from the same input/output pairs with either op gives kernels that are
    flips of each other, and layers whose outputs agree: which op a layer uses does not matter
    once its kernel is learned.
Figure: ``conv_vs_corr.png``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax
from scipy import signal

import jaxconv

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, draw_matrix, minimise, out_dir, save, show  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/03_convolution_vs_correlation")  # figures and tables go here
    quick: bool = False  # fewer training images
    seed: int = 0  # random seed
    n_images: int = 32  # random training images
    image_size: int = 12  # image height = width
    steps: int = 150  # SGD steps per op
    lr: float = 0.2  # SGD on the mean squared error


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    if cfg.quick:
        cfg = dataclasses.replace(cfg, n_images=8, steps=100)
    rng = np.random.default_rng(cfg.seed)  # NumPy draws: no XLA compile per shape

    # --- the two ops on one example -----------------------------------------------------------
    X = jnp.asarray(rng.standard_normal((6, 7), np.float32))  # (h, w)
    K = jnp.array([[1.0, 2.0, 0.0], [0.0, -1.0, 3.0]])  # (2, 3), asymmetric
    conv = jaxconv.convolve2d(X, K)  # (5, 5)
    corr = jaxconv.corr2d(X, K)
    corr_flipped = jaxconv.corr2d(X, jnp.flip(K))  # flip both axes
    Xd, Kd = np.asarray(X, np.float64), np.asarray(K, np.float64)
    diffs = {
        "convolve2d(X, K) vs corr2d(X, flip(K))": float(jnp.max(jnp.abs(conv - corr_flipped))),
        "convolve2d vs scipy.signal.convolve2d": float(
            np.max(np.abs(conv - signal.convolve2d(Xd, Kd, mode="valid")))
        ),
        "corr2d vs scipy.signal.correlate2d": float(
            np.max(np.abs(corr - signal.correlate2d(Xd, Kd, mode="valid")))
        ),
        "convolve2d(X, K) vs corr2d(X, K) (asymmetric K)": float(jnp.max(jnp.abs(conv - corr))),
    }
    sym = jnp.array([[1.0, 2.0, 1.0], [1.0, 2.0, 1.0]])  # flip(sym) == sym
    diffs["convolve2d vs corr2d (symmetric K)"] = float(
        jnp.max(jnp.abs(jaxconv.convolve2d(X, sym) - jaxconv.corr2d(X, sym)))
    )
    for name, d in diffs.items():
        print(f"max |{name}| = {d:.2e}")

    # --- learn one kernel with each op from the same pairs --------------------------------------
    true_k = jnp.asarray(rng.standard_normal((3, 3), np.float32))  # asymmetric, almost surely
    size = (cfg.n_images, cfg.image_size, cfg.image_size)
    images = jnp.asarray(rng.standard_normal(size, np.float32))  # (n, h, w)
    targets = jax.vmap(jaxconv.corr2d, in_axes=(0, None))(images, true_k)  # (n, oh, ow)
    starts = rng.uniform(-1.0, 1.0, (2, 3, 3)).astype(np.float32)  # one start per op

    learned = {}
    ops = {"corr2d": jaxconv.corr2d, "convolve2d": jaxconv.convolve2d}
    for k0, (name, op) in zip(starts, ops.items(), strict=True):

        def loss(k, op=op):
            return jnp.mean((jax.vmap(op, in_axes=(0, None))(images, k) - targets) ** 2)

        k, curve = jax.jit(lambda p, loss=loss: minimise(loss, p, optax.sgd(cfg.lr), cfg.steps))(k0)
        learned[name] = np.asarray(k)
        print(f"learned with {name}: final loss {float(curve[-1]):.2e}")
        show(f"kernel learned with {name}", k)
    flip_err = float(np.max(np.abs(learned["convolve2d"] - np.flip(learned["corr2d"]))))
    true_err = float(np.max(np.abs(learned["corr2d"] - np.asarray(true_k))))
    out_err = float(
        jnp.max(
            jnp.abs(
                jaxconv.convolve2d(images[0], learned["convolve2d"])
                - jaxconv.corr2d(images[0], learned["corr2d"])
            )
        )
    )
    print(f"max |K_convolve2d - flip(K_corr2d)| = {flip_err:.2e}")
    print(f"max |K_corr2d - K_true| = {true_err:.2e}")
    print(f"max |layer outputs| difference = {out_err:.2e}")

    # --- figure -----------------------------------------------------------------------------
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.5), layout="constrained")
    draw_matrix(axes[0, 0], K, "K (asymmetric)", cmap="coolwarm")
    draw_matrix(axes[0, 1], jnp.flip(K), "flip(K)", cmap="coolwarm")
    draw_matrix(axes[0, 2], corr, "corr2d(X, K)", cmap="coolwarm", fmt="{:.2f}")
    draw_matrix(
        axes[0, 3], conv, "convolve2d(X, K) = corr2d(X, flip(K))", cmap="coolwarm", fmt="{:.2f}"
    )
    draw_matrix(
        axes[1, 0], true_k, "true kernel (data made by corr2d)", cmap="coolwarm", fmt="{:.2f}"
    )
    draw_matrix(axes[1, 1], learned["corr2d"], "learned with corr2d", cmap="coolwarm", fmt="{:.2f}")
    draw_matrix(
        axes[1, 2], learned["convolve2d"], "learned with convolve2d", cmap="coolwarm", fmt="{:.2f}"
    )
    draw_matrix(
        axes[1, 3],
        np.flip(learned["convolve2d"]),
        f"flip(learned with convolve2d)\nmax diff to corr2d's {flip_err:.0e}",
        cmap="coolwarm",
        fmt="{:.2f}",
    )
    fig.suptitle("6.2.5 Cross-correlation vs convolution: a learned kernel just comes out flipped")
    figure = save(fig, out / "conv_vs_corr.png")

    return {
        "diffs": diffs,
        "learned": learned,
        "true_kernel": np.asarray(true_k),
        "flip_error": flip_err,
        "true_error": true_err,
        "output_error": out_err,
        "figures": [figure],
    }


if __name__ == "__main__":
    cli(Config, main, __doc__)
