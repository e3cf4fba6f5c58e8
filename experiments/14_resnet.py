"""Chapter 7.6: residual networks (ResNet) on Fashion-MNIST.

    python experiments/14_resnet.py [--quick] [--out-dir DIR]

  1. The book's block-by-block output shapes of ResNet-18 on a (1, 1, 224, 224) input (the
     stem (1, 64, 56, 56), four stages to (1, 512, 7, 7), the global average pool, (1, 10))
     and its parameter count (11,178,378).
  2. Training through ``jaxconv.train.fit`` with the book's recipe (SGD lr 0.05, batch 256,
     10 epochs, images resized to 96 on device): hours on a CPU. ``--quick``: one epoch on the
     first 8/4 images at 8 px, batch 4.
  3. The section's point, measured: two deep stacks of ``--depth`` two-conv blocks (8
     channels, 14x14 input, no batch norm, torch's default init), the same but for the
     identity path ``x + f(x)`` of the residual one, trained alike (Adam ``--lr``); their
     training loss step by step (``plain_vs_residual.png``): the plain stack barely moves
     off ln 10, the residual one learns. ``--quick``: stacks of 6 blocks (14 layers, already
     too deep for the plain one) on 512 images.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402

from jaxconv import data as data_lib  # noqa: E402
from jaxconv.nn import Conv2d, Linear  # noqa: E402
from jaxconv.steps import TrainState, train_step  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/14_resnet")  # figures and tables go here
    quick: bool = False  # 8/4 images at 8 px, 1 epoch, batch 4; stacks of 6 on 512 images
    epochs: int = 10  # the book trains 10
    image_size: int = 96  # the book's resize
    depth: int = 12  # two-conv blocks in each deep stack
    lr: float = 3e-3  # Adam rate of the deep stacks
    stack_epochs: int = 4  # epochs of the deep stacks (on 512 images in quick mode)
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar
    seed: int = 0  # init and shuffling of the deep stacks


class Block(nn.Module):
    """Two 3x3 convs (ReLU between and after), with the identity added when ``residual``:
    ``relu(x + f(x))`` against ``relu(f(x))``, (N, C, H, W) -> (N, C, H, W)."""

    channels: int
    residual: bool

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.channels
        y = Conv2d(c, c, 3, padding=1)(x)
        y = Conv2d(c, c, 3, padding=1)(jax.nn.relu(y))
        return jax.nn.relu(x + y if self.residual else y)


class Stack(nn.Module):
    """A 3x3 conv to ``channels``, ``depth`` blocks, flatten, linear to 10:
    (N, 1, S, S) -> (N, 10), S the ``example_input_shape``'s side."""

    depth: int
    residual: bool
    channels: int = 8
    example_input_shape: tuple[int, ...] = (1, 1, 14, 14)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch norm or dropout: the same in training and evaluation
        x = jax.nn.relu(Conv2d(1, self.channels, 3, padding=1)(x))  # (N, C, S, S)
        for _ in range(self.depth):
            x = Block(self.channels, self.residual)(x)
        side = self.example_input_shape[-1]
        flat = x.reshape(x.shape[0], -1)  # (N, C * S * S)
        return Linear(self.channels * side * side, 10)(flat)  # (N, 10)


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    if cfg.quick:
        cfg = dataclasses.replace(cfg, depth=6)
    # --- 1. the book's shape printout ---------------------------------------------------------
    shapes, n_params = _ch7.summary("resnet18", 224)
    # --- 2. training -----------------------------------------------------------------------------
    t = _ch7.Training("resnet18", cfg.image_size, cfg.epochs, cfg.quick, 8, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. a plain and a residual deep stack --------------------------------------------------
    ds = data_lib.load_fashion_mnist(cfg.data_dir or None)
    n = 512 if cfg.quick else 10_000
    # One init for both: the identity path adds no parameter, so the two stacks start from
    # the same weights (and share one compiled init).
    start = TrainState.create(Stack(cfg.depth, residual=False), optax.adam(cfg.lr), cfg.seed)
    losses = {
        name: _stack_losses(start.replace(model=Stack(cfg.depth, residual)), ds, n, cfg)
        for name, residual in (("plain", False), ("residual", True))
    }
    for name, curve in losses.items():
        print(f"{name} stack of {cfg.depth} blocks: loss {curve[0]:.3f} -> {curve[-1]:.3f}")
    figures = [_draw_losses(losses, cfg, out / "plain_vs_residual.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "stack_losses": losses,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def _stack_losses(state: TrainState, ds: Any, n: int, cfg: Config) -> np.ndarray:
    """Each step's training loss of ``state.model``, from ``state`` (its optimizer: Adam
    ``cfg.lr``), over ``cfg.stack_epochs`` epochs of the first ``n`` images (batch 64), with
    jaxconv's own ``train_step``."""
    images, labels = jnp.asarray(ds.train.images[:n]), jnp.asarray(ds.train.labels[:n])

    @jax.jit
    def epoch(state: TrainState, key: jax.Array) -> tuple[TrainState, jax.Array]:
        xb, yb = data_lib.shuffle_batches(key, images, labels, 64)  # (nb, 64, 28, 28), (nb, 64)
        state, per_step = jax.lax.scan(train_step, state, (xb, yb))
        return state, per_step["loss"]  # (nb,)

    curves = []
    for e in range(cfg.stack_epochs):
        state, loss = epoch(state, jax.random.fold_in(jax.random.key(cfg.seed), e))
        curves.append(np.asarray(loss))
    return np.concatenate(curves)


def _draw_losses(losses: dict[str, np.ndarray], cfg: Config, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 3.4), layout="constrained")
    for name, curve in losses.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f"{name} ({2 * cfg.depth + 2} layers)")
    ax.axhline(math.log(10), color="k", lw=0.5, ls="--", label="ln 10 (chance)")
    ax.set_xlabel("step (batch 64)")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    ax.set_title("A deep stack with and without identity paths (Adam, same init and data)")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
