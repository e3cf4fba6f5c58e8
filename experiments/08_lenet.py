"""Chapter 6.6: LeNet on Fashion-MNIST.

    python experiments/08_lenet.py [--quick] [--out-dir DIR] [--variant classic]

  1. The chapter's shape summary of LeNet on a (1, 1, 28, 28) input (Conv2d (1, 6, 28, 28) ...
     Linear (1, 10)) and the parameter count (61,706).
  2. Training with optax through ``jaxconv.train.fit`` (one jitted call per epoch, data on
     device). Defaults are the book's: classic LeNet (sigmoid, average pooling, Xavier init),
     SGD lr 0.9, batch 256, 10 epochs on the real 60,000/10,000 images; the book reports
     loss 0.469, train acc 0.823, test acc 0.779. ``--variant modern --optimizer adam --lr 1e-3``
     trains the ReLU/max-pool version. ``--quick``: the first 512/256 images, 1 epoch, batch 64.
     Rerunning continues the run in ``<out-dir>/run`` (or ``run-quick``) from its checkpoint;
     a finished run is reloaded (its metrics and parameters), not retrained.
  3. Figures: ``lenet_features.png`` (the six learned 5x5 first-layer kernels, and what a test
     image looks like after each layer of the encoder) and the run's ``curves.png``.
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

from jaxconv import data as data_lib
from jaxconv.models import INPUT_SHAPE, LeNet, count_params, format_summary, lenet_summary
from jaxconv.train import TrainConfig, fit, to_input

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, out_dir, save  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/08_lenet")  # figures and tables go here
    quick: bool = False  # 512 training / 256 test images, 1 epoch, batch 64
    variant: str = "classic"  # the chapter's LeNet; "modern": ReLU + max pooling
    optimizer: str = "sgd"  # a jaxconv.train optimizer name: sgd, momentum, adam, ...
    lr: float = 0.9  # the book's SGD learning rate
    epochs: int = 10  # the book trains 10
    batch_size: int = 256  # the book's 256
    seed: int = 0  # random seed
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist
    progress: bool = False  # a tqdm bar per run


# The book's result for the classic LeNet after 10 epochs (PyTorch, SGD lr 0.9, batch 256).
BOOK = {"train_loss": 0.469, "train_acc": 0.823, "test_acc": 0.779}


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    if cfg.quick:
        cfg = dataclasses.replace(cfg, epochs=1, batch_size=64)
    n_train, n_test = (512, 256) if cfg.quick else (None, None)

    # --- 1. the shape summary --------------------------------------------------------------------
    summary = lenet_summary(cfg.variant)  # [(layer name, NCHW output shape)] for (1, 1, 28, 28)
    print(format_summary(summary))
    model = LeNet(cfg.variant)
    n_params = count_params(
        jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(INPUT_SHAPE))["params"]
    )
    print(f"{n_params:,} parameters")

    # --- 2. training ------------------------------------------------------------------------------
    ds = data_lib.load_fashion_mnist(cfg.data_dir or None)
    result = fit(
        TrainConfig(
            variant=cfg.variant,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            optimizer=cfg.optimizer,
            learning_rate=cfg.lr,
            seed=cfg.seed,
            out_dir=out / ("run-quick" if cfg.quick else "run"),
            train_subset=n_train,
            test_subset=n_test,
            resume=True,
            progress=cfg.progress,
        ),
        dataset=ds,
    )
    history = result.history
    last = history[-1]
    for r in history:
        print(
            f"epoch {r['epoch']}: loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {r['test_acc']:.3f}, {r['epoch_seconds']:.2f} s"
        )
    # The book's closing line, then its numbers for comparison.
    device = jax.devices()[0]
    print(
        f"loss {last['train_loss']:.3f}, train acc {last['train_acc']:.3f}, "
        f"test acc {last['test_acc']:.3f}"
    )
    print(f"{last['examples_per_second']:.1f} examples/sec on {device.platform}:{device.id}")
    if cfg.variant == "classic" and not cfg.quick:
        print("the book (PyTorch): " + ", ".join(f"{k} {v:.3f}" for k, v in BOOK.items()))

    # --- 3. what the first layers learned -------------------------------------------------------
    params = result.state.params
    image = ds.test.images[0]  # (28, 28) uint8
    label = ds.class_names[int(ds.test.labels[0])]
    maps = model.apply(
        {"params": params}, to_input(jnp.asarray(image[None])), method=_encoder_outputs
    )  # [(name, (1, h, w, c))]
    kernels = np.asarray(params["conv1"]["kernel"])[:, :, 0, :]  # HWIO (5, 5, 1, 6) -> (5, 5, 6)
    figure = _draw_features(image, label, kernels, maps, out / "lenet_features.png")
    figures = [figure]
    curves = result.out_dir / "curves.png"
    if curves.exists():
        figures.append(curves)

    return {
        "summary": summary,
        "n_params": n_params,
        "history": history,
        "final": {k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")},
        "kernels": kernels,
        "feature_shapes": [(name, tuple(m.shape)) for name, m in maps],
        "figures": figures,
    }


def _encoder_outputs(model: LeNet, x: jax.Array) -> list[tuple[str, jax.Array]]:
    """Apply the layers up to the flatten; keep each activation's and pool's output, named
    e.g. "Conv2d+Sigmoid" and "AvgPool2d": [(name, (1, h, w, c))]."""
    outputs, prev = [], ""
    for name, layer in model.layers():
        if name == "Flatten":
            break
        x = layer(x)
        if name == "Conv2d":
            prev = name
        else:
            outputs.append((f"{prev}+{name}" if prev else name, x))
            prev = ""
    return outputs


def _draw_features(image, label: str, kernels, maps, path: Path) -> Path:
    """Row 0: the image and the 6 first-layer kernels; then one row per encoder stage
    (conv + activation, pool; first 8 channels, each with its own colour range)."""
    n_cols = 9
    fig, axes = plt.subplots(
        1 + len(maps), n_cols, figsize=(n_cols * 1.5, 1.6 * (1 + len(maps))), layout="constrained"
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    axes[0, 0].imshow(image, cmap="gray")
    axes[0, 0].set_title(f"test image\n({label})", fontsize=8)
    for c in range(kernels.shape[-1]):
        k = kernels[:, :, c]
        top = float(np.max(np.abs(k)))
        axes[0, c + 1].imshow(k, cmap="coolwarm", vmin=-top, vmax=top)
        axes[0, c + 1].set_title(f"conv1 kernel {c}", fontsize=8)
    for row, (name, m) in enumerate(maps, start=1):
        m = np.asarray(m)[0]  # (h, w, c)
        title = name.replace("+", " +\n")
        axes[row, 0].text(
            0.5,
            0.5,
            f"{title}\n{m.shape[0]}x{m.shape[1]}x{m.shape[2]}",
            ha="center",
            va="center",
            fontsize=9,
        )
        for c in range(min(m.shape[-1], n_cols - 1)):
            axes[row, c + 1].imshow(m[:, :, c], cmap="viridis")
    for ax in axes.flat:
        if ax.images:
            ax.axis("on")
    fig.suptitle(
        "LeNet: learned first-layer kernels and the encoder's feature maps (first 8 channels)"
    )
    return save(fig, path)


if __name__ == "__main__":
    cli(Config, main, __doc__)
