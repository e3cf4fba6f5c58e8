"""Chapter 7.2: VGG on Fashion-MNIST.

    python experiments/10_vgg.py [--quick] [--out-dir DIR]

  1. The book's block-by-block output shapes of VGG-11 on a (1, 1, 224, 224) input (five VGG
     blocks, each halving the size: (1, 64, 112, 112) ... (1, 512, 7, 7), then the dense
     part) and its parameter count (128,806,154); then the parameter count of the
     quarter-width VGG-11 the book trains (``VGG11_SMALL``, ``--model vgg11_small``).
  2. Training the small VGG-11 through ``jaxconv.train.fit`` with the book's recipe (SGD lr
     0.05, batch 128, 10 epochs, images resized to 224 on device): hours on a CPU.
     ``--quick``: one epoch on the first 8/4 images at 224 px (the smallest VGG takes:
     five halvings to 7x7), batch 4.
  3. Figures: the channels and side of each block's output (``vgg_blocks.png``) and the run's
     ``curves.png``.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/10_vgg")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images at 224 px, 1 epoch, batch 4
    epochs: int = 10  # the book trains 10
    image_size: int = 224  # the book's resize
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. the book's shape printout (full VGG-11), and the small one's size -------------------
    shapes, n_params = _ch7.summary("vgg11", 224)
    small_shapes = _ch7.layer_shapes(_ch7.build_network("vgg11_small", 224), 224)
    n_small = _ch7.n_params(_ch7.build_network("vgg11_small", 224), 224)
    print(f"the book trains VGG-11 at a quarter of the channels: {n_small:,} parameters")
    # --- 2. training the small VGG-11 -----------------------------------------------------------
    t = _ch7.Training("vgg11_small", cfg.image_size, cfg.epochs, cfg.quick, 224, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. the blocks' channels and sizes -----------------------------------------------------
    figures = [_draw_blocks(shapes[:5], small_shapes[:5], out / "vgg_blocks.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "small_shapes": small_shapes,
        "n_params_small": n_small,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def _draw_blocks(full, small, path: Path) -> Path:
    """Channels (bars) and side (line) of each VGG block's output, full and small."""
    fig, ax = plt.subplots(figsize=(6.5, 3.2), layout="constrained")
    blocks = range(1, len(full) + 1)
    ax.bar([b - 0.2 for b in blocks], [s[1] for _, s in full], 0.4, label="VGG-11 channels")
    ax.bar([b + 0.2 for b in blocks], [s[1] for _, s in small], 0.4, label="small (1/4) channels")
    ax.set_xlabel("VGG block")
    ax.set_ylabel("output channels")
    side = ax.twinx()
    side.plot(blocks, [s[-1] for _, s in full], "k.-", label="side (both)")
    side.set_ylabel("output side (pixels)")
    ax.legend(loc="upper left", fontsize=8)
    side.legend(loc="upper center", fontsize=8)
    ax.set_title("VGG-11 on 224x224: each block doubles the channels (to 512), halves the side")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
