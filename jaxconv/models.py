"""Flax (linen) models of the chapter: the learnable ``Conv2D`` layer (6.2.2) and LeNet (6.6).

Models take NHWC images (N, 28, 28, 1), JAX's native layout, and keep conv kernels HWIO
(kh, kw, in, out). Inside, LeNet's activations are NHWC (default) or CHWN (batch last, where
XLA:CPU runs its convolutions as long matrix products: training uses it on CPU, see
:func:`default_layout`); the params, and so checkpoints, are the same in both.
Convolution and pooling go through :func:`jaxconv.conv2d`,
:func:`jaxconv.avg_pool2d` and :func:`jaxconv.max_pool2d`, so a faster op there is a faster
LeNet here.

``LeNet(variant="classic")`` is the chapter's network (sigmoid, 2x2 average pooling, Xavier
init as the book's ``init_weights``); ``"modern"`` swaps in ReLU and max pooling.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconv.conv import conv2d, corr2d
from jaxconv.errors import ConfigError
from jaxconv.pool import avg_pool2d, max_pool2d

Array = jax.Array
Shape = tuple[int, ...]

VARIANTS = ("classic", "modern")
#: The activation layouts LeNet can run in (its input is NHWC and its params HWIO in both).
MODEL_LAYOUTS = ("NHWC", "CHWN")
#: One NHWC Fashion-MNIST image: the input LeNet's params are initialised (and checked) with.
INPUT_SHAPE = (1, 28, 28, 1)

#: XLA options for programs that run once (initialisation): without the backend's
#: optimisations LeNet's init compiles ~8x faster (most of it is unrolled threefry hashing).
NO_BACKEND_OPTIMIZATION = {"xla_backend_optimization_level": 0}

# The book's init_weights: nn.init.xavier_uniform_ on every Linear and Conv2d weight. For an
# HWIO kernel Flax's glorot_uniform takes fan_in = kh*kw*in and fan_out = kh*kw*out, the same
# fans as PyTorch's for OIHW. Biases start at zero (the book keeps PyTorch's default there).
xavier_uniform = nn.initializers.glorot_uniform()


def check_variant(variant: Any) -> str:
    """Return ``variant`` if it is a known LeNet variant, else raise ValueError naming it."""
    if variant not in VARIANTS:
        raise ConfigError("variant", f"must be one of {VARIANTS}, got {variant!r}")
    return variant


class Conv2D(nn.Module):
    """The chapter's learnable 2-D convolution layer (6.2.2): ``corr2d(x, weight) + bias``.

    One input and one output channel, as in the book: ``weight`` of shape ``kernel_size``
    drawn uniform in [0, 1) (the book's ``torch.rand``), scalar ``bias`` starting at 0.

    Input (h, w), output (h - kh + 1, w - kw + 1).
    """

    kernel_size: tuple[int, int]

    @nn.compact
    def __call__(self, x: Array) -> Array:
        weight = self.param("weight", nn.initializers.uniform(scale=1.0), tuple(self.kernel_size))
        bias = self.param("bias", nn.initializers.zeros, ())
        return corr2d(x, weight) + bias


def check_model_layout(layout: Any) -> str:
    """Return ``layout`` if it is one of :data:`MODEL_LAYOUTS`, else raise ValueError.

    LeNet's own rule: its activations run in NHWC or CHWN (its input is NHWC either way),
    narrower than the ops' :data:`jaxconv._args.LAYOUTS`.
    """
    if layout not in MODEL_LAYOUTS:
        raise ConfigError("layout", f"must be one of {MODEL_LAYOUTS}, got {layout!r}")
    return layout


def default_layout(backend: str | None = None) -> str:
    """The activation layout training runs LeNet in (``TrainConfig.layout=None``): "CHWN" on
    CPU, "NHWC" elsewhere.

    Why: on XLA:CPU a LeNet training epoch took 3.3-3.5 s in CHWN against 4.4-5.2 s in NHWC
    (one core, batch 256; PyTorch 3.7-4.4 s; docs/BENCHMARKS.md): with the batch last, the patch
    matrices and their transposes move whole rows of N floats and every conv is a long matrix
    product. On the H100 NHWC is the measured layout (CHWN not measured there yet); TPU: not
    measured.
    CHWN's fast conv path is reverse-mode only (see :func:`jaxconv.conv2d`), which is all
    training needs; the model's own default stays NHWC, where jax.jvp works too.
    """
    backend = jax.default_backend() if backend is None else backend
    return "CHWN" if backend == "cpu" else "NHWC"


class ConvHWIO(nn.Module):
    """A conv layer over :func:`jaxconv.conv2d` with an HWIO kernel, for NHWC input
    (N, H, W, in) -> (N, oh, ow, features) or, with ``layout="CHWN"`` at call time,
    (in, H, W, N) -> (features, oh, ow, N).

    Params: ``kernel`` HWIO (kh, kw, in, features), Xavier-uniform; ``bias`` (features,), zeros
    (the same in both layouts). ``impl`` picks the conv2d implementation (None: its default).
    """

    features: int
    kernel_size: int | tuple[int, int]
    padding: Any = 0
    impl: str | None = None

    @nn.compact
    def __call__(self, x: Array, layout: str = "NHWC") -> Array:
        kh, kw = (
            (self.kernel_size, self.kernel_size)
            if isinstance(self.kernel_size, int)
            else tuple(self.kernel_size)
        )
        channels = x.shape[0] if layout == "CHWN" else x.shape[-1]
        kernel = self.param("kernel", xavier_uniform, (kh, kw, channels, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        impl = {} if self.impl is None else {"impl": self.impl}
        return conv2d(x, kernel, bias, padding=self.padding, layout=layout, **impl)


def _flatten(x: Array) -> Array:
    return x.reshape(x.shape[0], -1)  # (N, H, W, C) -> (N, H*W*C)


def _flatten_chwn(x: Array) -> Array:
    # (C, H, W, N) -> (N, H*W*C): the NHWC flatten's order, so dense1 has the same params
    return x.transpose(3, 1, 2, 0).reshape(x.shape[3], -1)


#: Mean and standard deviation of Fashion-MNIST's 60,000 training images, pixels / 255
#: (measured: ``x = load_fashion_mnist().train.images / 255; x.mean(), x.std()``).
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530


class LeNet(nn.Module):
    """LeNet-5 as in chapter 6.6, NHWC.

    ``variant="classic"``: conv 5x5 -> 6 (padding 2), sigmoid, avg pool 2x2/2, conv 5x5 -> 16,
    sigmoid, avg pool 2x2/2, flatten (400), dense 120, sigmoid, dense 84, sigmoid, dense 10.
    ``variant="modern"``: the same with ReLU and max pooling.

    Input: (N, 28, 28, 1) or (N, 28, 28) floats in [0, 1]; output: (N, num_classes) logits.
    ``conv_impl`` is passed to :func:`jaxconv.conv2d` as ``impl`` (None: its default).
    ``layout`` is the activations' layout inside, "NHWC" (default) or "CHWN" (faster
    training on CPU, reverse-mode differentiation only; see :func:`default_layout`). The
    input stays NHWC and the params are the same in both.
    ``standardize`` maps the input to zero mean and unit variance with Fashion-MNIST's
    training-set statistics before the first layer; None: on for "modern" (it helps Adam reach
    0.90 in 10 epochs), off for "classic" (the book feeds x / 255 as it is).
    """

    variant: str = "classic"
    num_classes: int = 10
    conv_impl: str | None = None
    standardize: bool | None = None
    layout: str = "NHWC"

    def __post_init__(self) -> None:
        check_variant(self.variant)  # at construction, before any tracing
        check_model_layout(self.layout)
        super().__post_init__()

    def setup(self) -> None:
        self.conv1 = ConvHWIO(6, 5, padding=2, impl=self.conv_impl)
        self.conv2 = ConvHWIO(16, 5, impl=self.conv_impl)
        self.dense1 = nn.Dense(120, kernel_init=xavier_uniform)
        self.dense2 = nn.Dense(84, kernel_init=xavier_uniform)
        self.dense3 = nn.Dense(self.num_classes, kernel_init=xavier_uniform)

    def layers(self, layout: str = "NHWC") -> list[tuple[str, Callable[[Array], Array]]]:
        """The network as (PyTorch layer name, function) pairs, in order (bound modules only),
        for activations in ``layout`` (shapes in the comments are NHWC's; CHWN puts the batch
        last until the flatten)."""
        if self.variant == "classic":
            act = ("Sigmoid", nn.sigmoid)
            pool = ("AvgPool2d", functools.partial(avg_pool2d, kernel_size=2, layout=layout))
        else:
            act = ("ReLU", nn.relu)
            pool = ("MaxPool2d", functools.partial(max_pool2d, kernel_size=2, layout=layout))
        conv1 = functools.partial(self.conv1, layout=layout)
        conv2 = functools.partial(self.conv2, layout=layout)
        flatten = _flatten_chwn if layout == "CHWN" else _flatten
        return [
            ("Conv2d", conv1), act, pool,  # (N, 28, 28, 6) -> (N, 14, 14, 6)
            ("Conv2d", conv2), act, pool,  # (N, 10, 10, 16) -> (N, 5, 5, 16)
            ("Flatten", flatten),  # (N, 400)
            ("Linear", self.dense1), act,
            ("Linear", self.dense2), act,
            ("Linear", self.dense3),
        ]  # fmt: skip

    def __call__(self, x: Array) -> Array:
        if x.ndim == 3:
            x = x[..., None]  # (N, 28, 28) -> (N, 28, 28, 1)
        standardize = self.variant == "modern" if self.standardize is None else self.standardize
        if standardize:
            x = (x - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
        if self.layout == "CHWN":
            x = x.transpose(3, 1, 2, 0)  # (N, 28, 28, 1) -> (1, 28, 28, N)
        for _, layer in self.layers(self.layout):
            x = layer(x)
        return x


def _layer_shapes(model: LeNet, x: Array) -> list[tuple[str, Shape]]:
    shapes = []
    for name, layer in model.layers():
        x = layer(x)
        shapes.append((name, tuple(x.shape)))
    return shapes


def lenet_summary(
    variant: str = "classic", *, batch: int = 1, size: int = 28, layout: str = "NCHW"
) -> list[tuple[str, Shape]]:
    """Each layer's output shape for a (batch, 1, size, size) input, as printed in chapter 6.6.

    ``layout="NCHW"`` (default) reports the book's (N, C, H, W) shapes, e.g.
    ``("Conv2d", (1, 6, 28, 28))``; ``"NHWC"`` reports what the Flax model computes. Only
    shapes are traced (``jax.eval_shape``): nothing is computed.
    """
    check_variant(variant)
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be one of ('NCHW', 'NHWC'), got {layout!r}")
    model = LeNet(variant)
    x = jax.ShapeDtypeStruct((batch, size, size, 1), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    shapes: list[tuple[str, Shape]] = []

    def record(p: Any, x: Array) -> Array:
        shapes.extend(model.apply(p, x, method=_layer_shapes))  # static shapes, seen in tracing
        return x

    jax.eval_shape(record, params, x)
    if layout == "NCHW":
        shapes = [(n, (s[0], s[3], s[1], s[2]) if len(s) == 4 else s) for n, s in shapes]
    return shapes


def format_summary(rows: Sequence[tuple[str, Shape]]) -> str:
    """The chapter's table: one ``<Layer> output shape:\\t (1, 6, 28, 28)`` line per layer."""
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name + ' output shape:':<{width + 14}} {shape}" for name, shape in rows)


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter pytree."""
    return sum(int(p.size) for p in jax.tree.leaves(params))


def learn_kernel(
    X: Array,
    Y: Array,
    kernel_size: tuple[int, int],
    *,
    steps: int = 10,
    learning_rate: float = 3e-2,
    seed: int | Array = 0,
    init_weight: Array | None = None,
) -> tuple[Any, Array]:
    """Chapter 6.2.4: learn the kernel that maps ``X`` to ``Y`` with a :class:`Conv2D`.

    Plain gradient descent on the summed squared error, as in the book, whose layer has no
    bias: the bias stays at 0 (at this learning rate a trained bias would diverge, since its
    gradient sums over every output). Pure and traceable: ``jax.vmap`` it over seeds or
    starting kernels.

    Args:
      X: (h, w) input; Y: (h - kh + 1, w - kw + 1) target; kernel_size: (kh, kw).
      steps: gradient steps; learning_rate: their size.
      seed: draws the start as :class:`Conv2D` does (U[0, 1), the book's ``torch.rand``).
      init_weight: a (kh, kw) start instead (e.g. PyTorch's ``nn.Conv2d`` init).

    Returns:
      ``(params, losses)``: the final ``{"weight", "bias"}`` and the (steps,) loss before each
      step.
    """
    layer = Conv2D(tuple(kernel_size))
    X, Y = jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32)
    params = layer.init(jax.random.PRNGKey(seed), X)["params"]
    if init_weight is not None:
        params = {**params, "weight": jnp.asarray(init_weight, jnp.float32).reshape(kernel_size)}

    def loss_fn(weight: Array) -> Array:
        return jnp.sum((layer.apply({"params": {**params, "weight": weight}}, X) - Y) ** 2)

    def step(weight: Array, _: None) -> tuple[Array, Array]:
        loss, grad = jax.value_and_grad(loss_fn)(weight)
        return weight - learning_rate * grad, loss

    weight, losses = jax.lax.scan(step, params["weight"], None, length=steps)  # losses (steps,)
    return {**params, "weight": weight}, losses
