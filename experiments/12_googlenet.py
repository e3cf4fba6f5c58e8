"""Chapter 7.4: GoogLeNet (multi-branch networks) on Fashion-MNIST.

    python experiments/12_googlenet.py [--quick] [--out-dir DIR]

  1. The book's block-by-block output shapes of GoogLeNet on a (1, 1, 96, 96) input (b1 (1,
     64, 24, 24) ... b5 (1, 1024), Linear (1, 10)) and its parameter count (5,977,530).
  2. Training through ``jaxconv.train.fit`` with the book's recipe (SGD lr 0.1, batch 128,
     10 epochs, images resized to 96 on device): hours on a CPU. ``--quick``: one epoch on the
     first 8/4 images at 8 px, batch 4.
  3. Figures: how each of the nine Inception blocks splits its output channels among its four
     paths (``inception_channels.png``) and the run's ``curves.png``.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402

from jaxconv.networks import Inception  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/12_googlenet")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images at 8 px, 1 epoch, batch 4
    epochs: int = 10  # the book trains 10
    image_size: int = 96  # the book's resize
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar


PATHS = ("1x1", "1x1 -> 3x3", "1x1 -> 5x5", "3x3 pool -> 1x1")


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. the book's shape printout ---------------------------------------------------------
    shapes, n_params = _ch7.summary("googlenet", 96)
    # --- 2. training -----------------------------------------------------------------------------
    t = _ch7.Training("googlenet", cfg.image_size, cfg.epochs, cfg.quick, 8, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. the Inception blocks' channel split ------------------------------------------------
    split = inception_channels()
    for i, (c_in, paths) in enumerate(split):
        print(
            f"Inception {i + 1}: {c_in} -> {sum(paths)} channels = " + " + ".join(map(str, paths))
        )
    figures = [_draw_split(split, out / "inception_channels.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "inception_channels": split,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def inception_channels() -> list[tuple[int, tuple[int, int, int, int]]]:
    """``[(input channels, (the four paths' output channels))]`` of GoogLeNet's Inception
    blocks, in order."""
    net = _ch7.build_network("googlenet", 96)
    blocks = [m for b in net.layers if hasattr(b, "layers") for m in b.layers]
    return [(m.c_in, (m.c1, m.c2[1], m.c3[1], m.c4)) for m in blocks if isinstance(m, Inception)]


def _draw_split(split, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 3.2), layout="constrained")
    names = [f"{i + 1}" for i in range(len(split))]
    bottom = np.zeros(len(split))
    for p, label in enumerate(PATHS):
        values = np.array([paths[p] for _, paths in split], dtype=float)
        ax.bar(names, values, bottom=bottom, label=label)
        bottom += values
    ax.set_xlabel("Inception block (b3: 1-2, b4: 3-7, b5: 8-9)")
    ax.set_ylabel("output channels")
    ax.legend(fontsize=8, title="path", title_fontsize=8)
    ax.set_title("GoogLeNet: each Inception block's channels, by path")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
