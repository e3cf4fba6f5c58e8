"""Chapter 7.1: AlexNet on Fashion-MNIST.

    python experiments/09_alexnet.py [--quick] [--out-dir DIR]

  1. The book's layer-by-layer output shapes of AlexNet on a (1, 1, 224, 224) input (Conv2d
     (1, 96, 54, 54) ... Linear (1, 10)) and its parameter count (46,764,746).
  2. Training through ``jaxconv.train.fit`` with the book's recipe (``jaxconv.recipes``: SGD
     lr 0.01, batch 128, 10 epochs, the 28x28 images resized to 224 on device): hours on a
     CPU. ``--quick``: one epoch on the first 8/4 images at 193 px (the smallest AlexNet
     takes), batch 4. Rerunning continues the run in ``<out-dir>/run`` from its checkpoint.
  3. Figures: the learned 11x11 first-layer kernels (``alexnet_kernels.png``) and the run's
     ``curves.png``.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/09_alexnet")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images at 193 px, 1 epoch, batch 4
    epochs: int = 10  # the book trains 10
    image_size: int = 224  # the book's resize
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. the book's shape printout ---------------------------------------------------------
    shapes, n_params = _ch7.summary("alexnet", 224)
    # --- 2. training -----------------------------------------------------------------------------
    t = _ch7.Training("alexnet", cfg.image_size, cfg.epochs, cfg.quick, 193, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. the first layer's kernels ---------------------------------------------------------
    weight = result.state.params["0"]["weight"]  # OIHW (96, 1, 11, 11)
    figures = [
        _ch7.draw_kernels(weight, "AlexNet: learned 11x11 kernels of the first layer (32 of 96)",
                          out / "alexnet_kernels.png"),
    ]  # fmt: skip
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


if __name__ == "__main__":
    cli(Config, main, __doc__)
