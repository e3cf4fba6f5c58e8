"""Chapter 7.7: densely connected networks (DenseNet) on Fashion-MNIST.

    python experiments/15_densenet.py [--quick] [--out-dir DIR]

  1. The book's small checks: a dense block of 2 conv blocks with 10 output channels on a
     (4, 3, 8, 8) input gives (4, 23, 8, 8) (3 + 2 * 10 channels), and a transition block to
     10 channels then gives (4, 10, 4, 4); then DenseNet's block-by-block output shapes on a
     (1, 1, 96, 96) input and its parameter count (758,226).
  2. Training through ``jaxconv.train.fit`` with the book's recipe (SGD lr 0.1, batch 256,
     10 epochs, images resized to 96 on device): hours on a CPU. ``--quick``: one epoch on the
     first 8/4 images at 32 px (DenseNet takes 29 and up), batch 4.
  3. Figure: the channel growth through the network (``densenet_channels.png``): each conv
     block adds the growth rate (32) to the channels, each transition halves them (and the
     side).
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402

from jaxconv.networks import DenseBlock, _transition  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/15_densenet")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images at 32 px, 1 epoch, batch 4
    epochs: int = 10  # the book trains 10
    image_size: int = 96  # the book's resize
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. the book's checks and shape printout -----------------------------------------------
    block = DenseBlock(2, 3, 10)
    y = _shape(block, (4, 3, 8, 8))
    print(f"DenseBlock(2 convs, 3 -> growth 10) on (4, 3, 8, 8): {y}")
    z = _shape(_transition(y[1], 10, "NCHW"), y)
    print(f"transition to 10 channels on {y}: {z}")
    shapes, n_params = _ch7.summary("densenet", 96)
    # --- 2. training -----------------------------------------------------------------------------
    t = _ch7.Training("densenet", cfg.image_size, cfg.epochs, cfg.quick, 32, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. the channel growth -----------------------------------------------------------------
    growth = channel_growth()
    print("channels after each conv block and transition: " + " ".join(str(c) for _, c in growth))
    figures = [_draw_growth(growth, out / "densenet_channels.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "block_shape": y,
        "transition_shape": z,
        "shapes": shapes,
        "n_params": n_params,
        "channel_growth": growth,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def _shape(module, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The output shape of ``module`` on a ``shape`` input (traced, nothing computed)."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    return tuple(
        jax.eval_shape(lambda x: module.apply(module.init(jax.random.key(0), x), x), x).shape
    )


def channel_growth(
    growth_rate: int = 32, convs_per_block: tuple[int, ...] = (4, 4, 4, 4)
) -> list[tuple[str, int]]:
    """``[(what, channels after it)]`` through DenseNet from its 64-channel stem: each conv
    block adds ``growth_rate``, each transition halves, as ``networks.densenet`` builds it."""
    rows, c = [("stem", 64)], 64
    for i, n in enumerate(convs_per_block):
        for j in range(n):
            c += growth_rate
            rows.append((f"block {i + 1} conv {j + 1}", c))
        if i != len(convs_per_block) - 1:
            c //= 2
            rows.append((f"transition {i + 1}", c))
    return rows


def _draw_growth(growth: list[tuple[str, int]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 3.4), layout="constrained")
    ax.step(range(len(growth)), [c for _, c in growth], where="post", marker=".")
    for i, (what, c) in enumerate(growth):
        if what.startswith("transition"):
            ax.annotate("/2", (i, c), textcoords="offset points", xytext=(0, -12), fontsize=8)
    ax.set_xticks(range(len(growth)), [w.replace("block ", "b").replace(" conv ", ".")
                                       .replace("transition ", "t") for w, _ in growth],
                  rotation=90, fontsize=7)  # fmt: skip
    ax.set_ylabel("channels")
    ax.set_title("DenseNet: every conv block adds 32 channels, every transition halves them")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
