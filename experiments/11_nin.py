"""Chapter 7.3: Network in Network (NiN) on Fashion-MNIST.

    python experiments/11_nin.py [--quick] [--out-dir DIR]

  1. The book's layer-by-layer output shapes of NiN on a (1, 1, 224, 224) input (NiN blocks
     and max pools down to (1, 10, 5, 5), the global average pool, (1, 10)) and its
     parameter count (1,992,166): no fully connected layer at all.
  2. Training through ``jaxconv.train.fit`` with the book's recipe (SGD lr 0.1, batch 128,
     10 epochs, images resized to 224 on device): hours on a CPU. ``--quick``: one epoch on
     the first 8/4 images at 67 px (the smallest NiN takes), batch 4.
  3. Figures: where the parameters are, NiN against AlexNet (``nin_params.png``: AlexNet's
     are nearly all in its dense layers, NiN has none), and the run's ``curves.png``.
Needs the Fashion-MNIST IDX files (Debian's ``dataset-fashion-mnist``, or ``--data-dir``).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _ch7  # noqa: E402
from _common import cli, out_dir, save  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/11_nin")  # figures and tables go here
    quick: bool = False  # 8 training / 4 test images at 67 px, 1 epoch, batch 4
    epochs: int = 10  # the book trains 10
    image_size: int = 224  # the book's resize
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    # --- 1. the book's shape printout ---------------------------------------------------------
    shapes, n_params = _ch7.summary("nin", 224)
    # --- 2. training -----------------------------------------------------------------------------
    t = _ch7.Training("nin", cfg.image_size, cfg.epochs, cfg.quick, 67, cfg.data_dir,
                      cfg.progress)  # fmt: skip
    result = _ch7.train(t, out)
    # --- 3. where the parameters are -----------------------------------------------------------
    split = {name: _params_by_kind(name) for name in ("alexnet", "nin")}
    for name, kinds in split.items():
        print(f"{name}: " + ", ".join(f"{k} {v:,}" for k, v in kinds.items()))
    figures = [_draw_params(split, out / "nin_params.png")]
    if (result.out_dir / "curves.png").exists():
        figures.append(result.out_dir / "curves.png")
    return {
        "shapes": shapes,
        "n_params": n_params,
        "params_by_kind": split,
        "history": result.history,
        "final": _ch7.final(result),
        "figures": figures,
    }


def _params_by_kind(name: str) -> dict[str, int]:
    """Parameters of network ``name`` (at 224 px) in conv layers (4-D weights and their
    biases) and in linear layers (2-D weights and their biases)."""
    net = _ch7.build_network(name, 224)
    x = jax.ShapeDtypeStruct((1, 1, 224, 224), jnp.float32)
    params = jax.eval_shape(net.init, jax.random.key(0), x)["params"]
    kinds = {"conv": 0, "linear": 0}
    for layer in jax.tree.leaves(params, is_leaf=lambda d: isinstance(d, dict) and "weight" in d):
        kind = "conv" if len(layer["weight"].shape) == 4 else "linear"
        kinds[kind] += sum(int(np.prod(a.shape)) for a in layer.values())
    return kinds


def _draw_params(split: dict[str, dict[str, int]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3), layout="constrained")
    names = list(split)
    conv = [split[n]["conv"] / 1e6 for n in names]
    linear = [split[n]["linear"] / 1e6 for n in names]
    ax.barh(names, conv, label="convolutions")
    ax.barh(names, linear, left=conv, label="fully connected")
    ax.set_xlabel("parameters (millions)")
    ax.legend(fontsize=8)
    ax.set_title("NiN drops the dense layers: 1x1 convs and a global average pool instead")
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
