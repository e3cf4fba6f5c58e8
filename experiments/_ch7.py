"""Shared parts of the chapter-7 scripts (09_alexnet ... 15_densenet): the book's layer-by-layer
shape printout, the parameter count, a training run through ``jaxconv.train.fit``, and the
first-layer kernels figure.

The book prints each network's shapes with ``X = torch.randn(1, 1, S, S); for layer in net:
X = layer(X); print(layer.__class__.__name__, 'output shape:\\t', X.shape)``. Here the same
walk is traced abstractly (``jax.eval_shape``, nothing computed): Flax records each top-level
layer's output with ``capture_intermediates``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from _common import save

from jaxconv import data as data_lib
from jaxconv.nn import count_params
from jaxconv.recipes import RECIPES, build_network
from jaxconv.train import FitResult, TrainConfig, fit

Shape = tuple[int, ...]

#: Quick mode: the first QUICK_TRAIN / QUICK_TEST images, one epoch of batches of QUICK_BATCH
#: (two steps: enough to show that the network trains, checkpoints and evaluates; the tests
#: of the scripts check that, not what the network learns).
QUICK_TRAIN, QUICK_TEST, QUICK_BATCH = 8, 4, 4


def layer_shapes(net: nn.Module, size: int, batch: int = 1) -> list[tuple[str, Shape]]:
    """``[(layer class name, output shape)]`` of each top-level layer of ``net`` (a
    :class:`jaxconv.nn.Sequential`) on a ``(batch, 1, size, size)`` input, in eval mode."""
    x = jax.ShapeDtypeStruct((batch, 1, size, size), jnp.float32)

    def walk(x: jax.Array) -> Any:
        variables = net.init(jax.random.key(0), x)
        _, state = net.apply(variables, x, capture_intermediates=True, mutable=["intermediates"])
        return state["intermediates"]

    outputs = jax.eval_shape(walk, x)
    return [
        (type(layer).__name__, tuple(outputs[str(i)]["__call__"][0].shape))
        for i, layer in enumerate(net.layers)
    ]


def n_params(net: nn.Module, size: int) -> int:
    """The trainable parameter count of ``net`` at ``size`` x ``size`` input (abstract)."""
    x = jax.ShapeDtypeStruct((1, 1, size, size), jnp.float32)
    return count_params(jax.eval_shape(net.init, jax.random.key(0), x))


def print_shapes(rows: list[tuple[str, Shape]], params: int) -> None:
    """The book's printout: ``<Layer> output shape:\\t (1, C, H, W)``, then the count."""
    for name, shape in rows:
        print(f"{name} output shape:\t {shape}")
    print(f"{params:,} parameters")


def summary(model: str, size: int) -> tuple[list[tuple[str, Shape]], int]:
    """Shapes and parameter count of recipe ``model`` at ``size``, printed as the book does."""
    net = build_network(model, size)
    rows, params = layer_shapes(net, size), n_params(net, size)
    print(f"{model} on a (1, 1, {size}, {size}) input:")
    print_shapes(rows, params)
    return rows, params


@dataclasses.dataclass
class Training:
    """The training part of a chapter-7 script's Config (see :func:`train`)."""

    model: str
    image_size: int
    epochs: int
    quick: bool
    quick_image_size: int
    data_dir: str = ""
    progress: bool = False


def train(t: Training, out: Path) -> FitResult:
    """Train ``t.model`` as the book does (its recipe: SGD, rate, batch; ``t.epochs`` on the
    whole data set at ``t.image_size``), or in quick mode one epoch on the first 8/4
    images at ``t.quick_image_size``, batch 4. Rerunning continues the run in
    ``<out>/run`` (``run-quick``) from its checkpoint."""
    ds = data_lib.load_fashion_mnist(t.data_dir or None)
    quick = dict(
        epochs=1, image_size=t.quick_image_size, batch_size=QUICK_BATCH,
        train_subset=QUICK_TRAIN, test_subset=QUICK_TEST,
    )  # fmt: skip
    full = dict(epochs=t.epochs, image_size=t.image_size)
    result = fit(
        TrainConfig(
            model=t.model,
            out_dir=out / ("run-quick" if t.quick else "run"),
            resume=True,
            progress=t.progress,
            data_dir=t.data_dir or None,
            **(quick if t.quick else full),
        ),
        dataset=ds,
    )
    for r in result.history:
        print(
            f"epoch {r['epoch']}: loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {r['test_acc']:.3f}, {r['epoch_seconds']:.2f} s"
        )
    recipe = RECIPES[t.model]
    print(
        f"{t.model}: SGD lr {recipe.learning_rate:g}, batch "
        f"{QUICK_BATCH if t.quick else recipe.batch_size}, {len(result.history)} epoch(s)"
    )
    return result


def final(result: FitResult) -> dict[str, float]:
    last = result.history[-1]
    return {k: last[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}


def draw_kernels(weight: Any, title: str, path: Path, limit: int = 32) -> Path:
    """The first ``limit`` first-layer kernels, OIHW ``(out, 1, kh, kw)``, each on its own
    symmetric colour range (blue negative, red positive)."""
    w = np.asarray(weight)[:limit, 0]  # (n, kh, kw)
    cols = 8
    rows = -(-len(w) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2), layout="constrained")
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, k in zip(np.ravel(axes), w, strict=False):
        top = float(np.max(np.abs(k))) or 1.0
        ax.imshow(k, cmap="coolwarm", vmin=-top, vmax=top)
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
