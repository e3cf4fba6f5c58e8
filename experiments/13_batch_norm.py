"""Chapter 7.5: batch normalization, LeNet with and without it.

    python experiments/13_batch_norm.py [--quick] [--out-dir DIR]

  1. The layer-by-layer output shapes of the batch-norm LeNet (the book's concise version:
     BatchNorm2d/BatchNorm1d after every conv and linear layer but the last) on a (1, 1, 28,
     28) input, and its parameter count (44,878).
  2. Training through ``jaxconv.train.fit`` with the book's recipe (SGD lr 1.0, batch 256,
     10 epochs), then the book's look at the first batch-norm layer's learned scale
     (``gamma``, torch's ``weight``) and shift (``beta``, ``bias``). ``--quick``: one epoch on
     the first 8/4 images, batch 4.
  3. The section's point, measured: the same LeNet without its batch-norm layers and with
     them, each trained one epoch (``jaxconv.steps.train_epoch``; SGD, the book's rates 0.9
     and 1.0), then the mean and standard deviation of what each sigmoid receives on a batch
     of 512 test images in training mode, as during training (batch norm on the batch's
     statistics; ``bn_activations.png``): with batch norm every layer's input sits near mean
     0, std 1 (its learned shift and scale), where the sigmoid is steep; without, each layer
     has its own, drifting with training. ``--quick``: each trained on the first 256 images.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402

from jaxconv import data as data_lib  # noqa: E402
from jaxconv.networks import lenet_bn  # noqa: E402
from jaxconv.nn import BatchNorm1d, BatchNorm2d, Sequential, Sigmoid  # noqa: E402
from jaxconv.steps import TrainState, model_input, train_epoch  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/13_batch_norm")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images, 1 epoch, batch 4; 256 for the comparison
    epochs: int = 10  # the book trains 10
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar
    seed: int = 0  # init and shuffling of the with/without comparison


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. shapes ------------------------------------------------------------------------------
    shapes, n_params = _ch7.summary("lenet_bn", 28)
    # --- 2. training, and the first batch-norm layer's scale and shift -------------------------
    t = _ch7.Training("lenet_bn", 28, cfg.epochs, cfg.quick, 28, cfg.data_dir, cfg.progress)
    result = _ch7.train(t, out)
    gamma = np.asarray(result.state.params["1"]["weight"])  # (6,)
    beta = np.asarray(result.state.params["1"]["bias"])  # (6,)
    with np.printoptions(precision=4, suppress=True):
        print(f"first BatchNorm2d: gamma {gamma}, beta {beta}")
    # --- 3. activation statistics with and without batch norm ---------------------------------
    ds = data_lib.load_fashion_mnist(cfg.data_dir or None)
    n = 256 if cfg.quick else len(ds.train)
    stats = {
        "without batch norm": _sigmoid_inputs(_without_bn(), 0.9, ds, n, cfg.seed),
        "with batch norm": _sigmoid_inputs(lenet_bn(), 1.0, ds, n, cfg.seed),
    }
    for name, rows in stats.items():
        print(name + ": " + ", ".join(f"layer {i + 1} mean {m:+.2f} std {s:.2f}"
                                      for i, (m, s) in enumerate(rows)))  # fmt: skip
    figures = [_draw_stats(stats, out / "bn_activations.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "gamma": gamma,
        "beta": beta,
        "activation_stats": stats,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def _without_bn() -> Sequential:
    """The batch-norm LeNet with its batch-norm layers taken out (the book's LeNet with
    unpadded first conv)."""
    layers = tuple(m for m in lenet_bn().layers if not isinstance(m, BatchNorm1d | BatchNorm2d))
    return Sequential(layers, example_input_shape=(1, 1, 28, 28))


def _sigmoid_inputs(net: Sequential, lr: float, ds: Any, n: int, seed: int) -> list[tuple]:
    """Train ``net`` one epoch on the first ``n`` images (batch 128, SGD ``lr``), then
    ``[(mean, std)]`` of each sigmoid's input over the first 512 test images as one batch,
    in training mode (batch norm on that batch's statistics)."""
    state = TrainState.create(net, optax.sgd(lr), seed)
    images, labels = jnp.asarray(ds.train.images[:n]), jnp.asarray(ds.train.labels[:n])
    state, _ = train_epoch(state, images, labels, batch_size=128)
    x = model_input(net, jnp.asarray(ds.test.images[:512]))  # (512, 1, 28, 28)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    capture = jax.jit(
        lambda v, x: net.apply(
            v, x, train=True, capture_intermediates=True, mutable=["intermediates", "batch_stats"]
        )[1]["intermediates"]
    )  # one compiled forward instead of one compile per primitive
    inter = capture(variables, x)
    rows = []
    for i, layer in enumerate(net.layers):
        if isinstance(layer, Sigmoid):
            a = np.asarray(inter[str(i - 1)]["__call__"][0])  # what the sigmoid receives
            rows.append((float(a.mean()), float(a.std())))
    return rows


def _draw_stats(stats: dict[str, list[tuple]], path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    width = 0.38
    for k, (name, rows) in enumerate(stats.items()):
        layers = np.arange(1, len(rows) + 1)
        for ax, j in zip(axes, (0, 1), strict=True):
            ax.bar(layers + (k - 0.5) * width, [r[j] for r in rows], width, label=name)
    for ax, what in zip(axes, ("mean", "standard deviation"), strict=True):
        ax.set_xlabel("sigmoid layer")
        ax.set_title(f"{what} of each sigmoid's input", fontsize=10)
        ax.set_xticks(range(1, 5))
        ax.legend(fontsize=8)
    axes[0].axhline(0, color="k", lw=0.5)
    axes[1].axhline(1, color="k", lw=0.5, ls="--")
    fig.suptitle("LeNet after one epoch, with and without batch normalization (a test batch)")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
