"""Flax linen layers with torch.nn's names, arguments, defaults, NCHW layout and parameters.

Each layer takes what its torch.nn namesake takes (``Conv2d(1, 96, kernel_size=11, stride=4,
padding=1)``, ``BatchNorm2d(64)``, ``Linear(6400, 4096)``), holds its parameters in torch's
layouts under torch's names (a conv's ``weight`` OIHW and ``bias``; a linear's ``weight``
(out_features, in_features); batch norm's ``weight``, ``bias`` in ``params`` and
``running_mean``, ``running_var``, ``num_batches_tracked`` in ``batch_stats``) and draws them
as torch does by default, so that a network's variables and its torch ``state_dict`` are the
same tree under the same keys (see :mod:`jaxconv.convert`).

Layers compute through jaxconv's functional ops (``conv2d``, ``max_pool2d``, ``avg_pool2d``,
the adaptive pools). A layer's dimension is a class attribute and its op another, so the 1-D
and 3-D layers are a subclass each once their ops exist::

    class Conv1d(_ConvNd):
        _nd = 1
        _op = staticmethod(conv1d)

``train`` replaces torch's ``module.train()`` / ``module.eval()``: layers that behave
differently in training (batch norm, dropout, and the containers that hold them) take
``train: bool = False`` in their call; :class:`Sequential` passes it on to the layers that do.
In training, call ``apply(..., train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv import adaptive
from jaxconv._args import as_int
from jaxconv.conv import conv2d
from jaxconv.pool import avg_pool2d, max_pool2d

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv2d",
    "Dropout",
    "Flatten",
    "Identity",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "count_params",
    "takes_train",
    "torch_bias_init",
    "torch_weight_init",
]

Array = jax.Array

# --- torch's default initialisation ----------------------------------------------------------

#: torch's ``kaiming_uniform_(w, a=sqrt(5))`` for a weight whose axis 0 is the output and axis
#: 1 the input (OI... for convs, (out, in) for linear): gain sqrt(2 / (1 + 5)) = sqrt(1/3),
#: bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in), fan_in = shape[1] * prod(shape[2:]).
torch_weight_init = nn.initializers.variance_scaling(
    1 / 3, "fan_in", "uniform", in_axis=1, out_axis=0
)


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
    """torch's default bias init: uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (0 if
    ``fan_in`` is 0)."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# --- argument normalisers (construction time, before any tracing) ----------------------------


def _ntuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """An int or a sequence of ``n`` ints -> an n-tuple of ints (TypeError naming ``name``)."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != n:
            raise TypeError(f"{name} must be an int or {n} ints, got {value!r}")
        return tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    return (as_int(value, name),) * n


def _positive(value: Any, n: int, name: str) -> tuple[int, ...]:
    t = _ntuple(value, n, name)
    if min(t) < 1:
        raise ValueError(f"{name} must be positive (>= 1), got {value!r}")
    return t


@functools.cache
def takes_train(module_type: type) -> bool:
    """Whether a module type's ``__call__`` takes a ``train`` argument (so containers pass it)."""
    return "train" in inspect.signature(module_type.__call__).parameters


def _call(layer: nn.Module, x: Any, train: bool) -> Any:
    return layer(x, train=train) if takes_train(type(layer)) else layer(x)


# --- containers ------------------------------------------------------------------------------


class Sequential(nn.Module):
    """torch.nn.Sequential: applies ``layers`` in order; layer ``i`` is named ``"i"``, so a
    parameter's path is torch's key (``"3.weight"`` -> ``params["3"]["weight"]``).

    ``layers`` is a tuple of (unbound) modules, written as torch's argument list:
    ``Sequential((Conv2d(1, 6, 5), ReLU(), MaxPool2d(2)))``. ``train`` is passed to the
    layers whose call takes it. ``example_input_shape`` (optional) is a batched input shape
    the network accepts; :mod:`jaxconv.convert` traces the network on it to learn its
    variables' shapes.
    """

    layers: tuple[nn.Module, ...]
    example_input_shape: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Any:
        for i, layer in enumerate(self.layers):
            x = _call(layer.clone(parent=self, name=str(i)), x, train)
        return x


# --- convolution -----------------------------------------------------------------------------

_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


class _ConvNd(nn.Module):
    """torch.nn.ConvNd on jaxconv's functional conv. Input (N, C_in, *spatial) or unbatched
    (C_in, *spatial); output (N, C_out, *out). Parameters ``weight`` (C_out, C_in // groups,
    *kernel_size) and ``bias`` (C_out,), drawn as torch's defaults. ``dtype`` is the
    parameters' dtype (torch's ``dtype=``)."""

    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    dtype: Any = jnp.float32

    _nd: ClassVar[int]
    _op: ClassVar[Callable[..., Array]]  # (x, w, b, *, stride, padding, dilation, groups)

    def __post_init__(self) -> None:
        name = type(self).__name__
        for arg in ("in_channels", "out_channels", "groups"):
            if as_int(getattr(self, arg), arg) < 1:
                raise ValueError(f"{name}: {arg} must be >= 1, got {getattr(self, arg)}")
        for arg in ("in_channels", "out_channels"):
            if getattr(self, arg) % self.groups:
                raise ValueError(
                    f"{name}: {arg} ({getattr(self, arg)}) must be divisible by groups "
                    f"({self.groups})"
                )
        _positive(self.kernel_size, self._nd, "kernel_size")
        _positive(self.stride, self._nd, "stride")
        _positive(self.dilation, self._nd, "dilation")
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name}: padding_mode must be one of {tuple(_PADDING_MODES)}, "
                f"got {self.padding_mode!r}"
            )
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be 'same' or 'valid', got {self.padding!r}")
            if self.padding == "same" and max(_ntuple(self.stride, self._nd, "stride")) > 1:
                raise ValueError(f"{name}: padding='same' needs stride 1, got {self.stride!r}")
        elif min(_ntuple(self.padding, self._nd, "padding")) < 0:
            raise ValueError(f"{name}: padding must be non-negative, got {self.padding!r}")
        super().__post_init__()

    def _explicit_padding(self) -> list[tuple[int, int]]:
        """Per spatial axis (lo, hi): torch's split for "same" (the odd one at the end)."""
        k = _ntuple(self.kernel_size, self._nd, "kernel_size")
        d = _ntuple(self.dilation, self._nd, "dilation")
        if self.padding == "valid":
            return [(0, 0)] * self._nd
        if self.padding == "same":
            totals = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in _ntuple(self.padding, self._nd, "padding")]

    @nn.compact
    def __call__(self, x: Any) -> Array:
        k = _ntuple(self.kernel_size, self._nd, "kernel_size")
        fan_in = self.in_channels // self.groups * math.prod(k)
        w_shape = (self.out_channels, self.in_channels // self.groups) + k
        weight = self.param("weight", torch_weight_init, w_shape, self.dtype)
        bias = (
            self.param("bias", torch_bias_init(fan_in), (self.out_channels,), self.dtype)
            if self.bias
            else None
        )
        padding = self.padding
        mode = _PADDING_MODES[self.padding_mode]
        if mode is not None:  # pad the input as torch does, then convolve without padding
            x = jnp.asarray(x)
            pads = [(0, 0)] * (x.ndim - self._nd) + self._explicit_padding()
            x, padding = jnp.pad(x, pads, mode=mode), 0
        return type(self)._op(
            x,
            weight,
            bias,
            stride=self.stride,
            padding=padding,
            dilation=self.dilation,
            groups=self.groups,
        )


class Conv2d(_ConvNd):
    """torch.nn.Conv2d: input (N, C_in, H, W) or (C_in, H, W); weight OIHW."""

    _nd = 2
    _op = staticmethod(conv2d)


# --- pooling ---------------------------------------------------------------------------------


class _MaxPoolNd(nn.Module):
    """torch.nn.MaxPoolNd; ``stride=None`` means the kernel size. Returns (values, indices)
    with ``return_indices``."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    return_indices: bool = False
    ceil_mode: bool = False

    _op: ClassVar[Callable[..., Any]]

    def __call__(self, x: Any) -> Any:
        return type(self)._op(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )


class MaxPool2d(_MaxPoolNd):
    """torch.nn.MaxPool2d on :func:`jaxconv.max_pool2d`."""

    _op = staticmethod(max_pool2d)


class _AvgPoolNd(nn.Module):
    """torch.nn.AvgPoolNd; ``stride=None`` means the kernel size."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    divisor_override: int | None = None

    _op: ClassVar[Callable[..., Array]]

    def __call__(self, x: Any) -> Array:
        return type(self)._op(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            divisor_override=self.divisor_override,
        )


class AvgPool2d(_AvgPoolNd):
    """torch.nn.AvgPool2d on :func:`jaxconv.avg_pool2d`."""

    _op = staticmethod(avg_pool2d)


class _AdaptiveAvgPoolNd(nn.Module):
    """torch.nn.AdaptiveAvgPoolNd: output (N, C, *output_size); None keeps an axis."""

    output_size: Any

    _op: ClassVar[Callable[..., Array]]

    def __call__(self, x: Any) -> Array:
        return type(self)._op(x, self.output_size)


class _AdaptiveMaxPoolNd(nn.Module):
    """torch.nn.AdaptiveMaxPoolNd; (values, indices) with ``return_indices``."""

    output_size: Any
    return_indices: bool = False

    _op: ClassVar[Callable[..., Any]]

    def __call__(self, x: Any) -> Any:
        return type(self)._op(x, self.output_size, return_indices=self.return_indices)


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    _op = staticmethod(adaptive.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    _op = staticmethod(adaptive.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    _op = staticmethod(adaptive.adaptive_avg_pool3d)


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    _op = staticmethod(adaptive.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    _op = staticmethod(adaptive.adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    _op = staticmethod(adaptive.adaptive_max_pool3d)


# --- batch normalisation ---------------------------------------------------------------------


class _BatchNorm(nn.Module):
    """torch.nn.BatchNormNd over axis 1 (channels), statistics over every other axis.

    Training (``train=True``) normalises with the batch's mean and biased variance and, with
    ``track_running_stats``, updates ``running = (1 - m) * running + m * batch`` (``m`` the
    ``momentum`` in torch's sense; ``momentum=None``: the cumulative average, ``m = 1 /
    num_batches_tracked``), the variance with the *unbiased* batch variance, and counts
    ``num_batches_tracked``. Evaluation normalises with the running statistics (or, without
    ``track_running_stats``, with the batch's). Nothing is updated during ``init``.

    Statistics are plain means over the batch axis: under ``jax.jit`` with the batch sharded
    over devices they are the global batch's (XLA inserts the cross-device reduction), so
    data-parallel training needs no ``pmean``. Low-precision inputs are normalised in float32.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    dtype: Any = jnp.float32

    _ranks: ClassVar[tuple[int, ...]]

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        name = type(self).__name__
        x = jnp.asarray(x)
        if x.ndim not in self._ranks:
            want = " or ".join(f"{r}-D" for r in self._ranks)
            raise ValueError(f"{name}: expected {want} input, got shape {x.shape}")
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{name}: input has {x.shape[1]} channels (axis 1), num_features is "
                f"{self.num_features}; shape {x.shape}"
            )
        c, dtype = self.num_features, self.dtype
        axes = (0,) + tuple(range(2, x.ndim))
        count = math.prod(x.shape[a] for a in axes)  # values per channel
        if self.track_running_stats:
            running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (c,), dtype)
            running_var = self.variable("batch_stats", "running_var", jnp.ones, (c,), dtype)
            tracked = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        acc = jnp.promote_types(x.dtype, jnp.float32)
        xf = x.astype(acc)
        if train or not self.track_running_stats:
            if train and count <= 1:
                raise ValueError(
                    f"{name}: training needs more than 1 value per channel, got input shape "
                    f"{x.shape}"
                )
            mean = jnp.mean(xf, axis=axes)
            var = jnp.mean(jnp.square(xf - jnp.expand_dims(mean, axes)), axis=axes)  # biased
            if train and self.track_running_stats and not self.is_initializing():
                tracked.value = tracked.value + 1
                m = (
                    1.0 / tracked.value.astype(acc)
                    if self.momentum is None
                    else jnp.asarray(self.momentum, acc)
                )
                unbiased = var * (count / max(count - 1, 1))
                running_mean.value = ((1 - m) * running_mean.value + m * mean).astype(dtype)
                running_var.value = ((1 - m) * running_var.value + m * unbiased).astype(dtype)
        else:
            mean, var = running_mean.value.astype(acc), running_var.value.astype(acc)
        y = (xf - jnp.expand_dims(mean, axes)) * jnp.expand_dims(lax.rsqrt(var + self.eps), axes)
        if self.affine:
            weight = self.param("weight", nn.initializers.ones, (c,), dtype)
            bias = self.param("bias", nn.initializers.zeros, (c,), dtype)
            y = y * jnp.expand_dims(weight, axes) + jnp.expand_dims(bias, axes)
        return y.astype(jnp.result_type(x.dtype, dtype) if self.affine else x.dtype)


class BatchNorm1d(_BatchNorm):
    """torch.nn.BatchNorm1d: input (N, C) or (N, C, L)."""

    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """torch.nn.BatchNorm2d: input (N, C, H, W)."""

    _ranks = (4,)


class BatchNorm3d(_BatchNorm):
    """torch.nn.BatchNorm3d: input (N, C, D, H, W)."""

    _ranks = (5,)


# --- dense, reshaping, dropout, activations --------------------------------------------------


class Linear(nn.Module):
    """torch.nn.Linear: ``x @ weight.T + bias`` over the last axis, (*, in) -> (*, out).
    ``weight`` is torch's (out_features, in_features); both drawn as torch's defaults."""

    in_features: int
    out_features: int
    bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: input's last axis must have in_features={self.in_features} entries, "
                f"got shape {x.shape}"
            )
        shape = (self.out_features, self.in_features)
        weight = self.param("weight", torch_weight_init, shape, self.dtype)
        y = jnp.matmul(x, weight.T)
        if self.bias:
            init = torch_bias_init(self.in_features)
            y = y + self.param("bias", init, (self.out_features,), self.dtype)
        return y


class Flatten(nn.Module):
    """torch.nn.Flatten: merges axes ``start_dim`` .. ``end_dim`` (inclusive) into one."""

    start_dim: int = 1
    end_dim: int = -1

    def __call__(self, x: Any) -> Array:
        x = jnp.asarray(x)
        start, end = self.start_dim % max(x.ndim, 1), self.end_dim % max(x.ndim, 1)
        if start > end:
            raise ValueError(
                f"Flatten: start_dim ({self.start_dim}) comes after end_dim ({self.end_dim}) "
                f"for input of shape {x.shape}"
            )
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


class Dropout(nn.Module):
    """torch.nn.Dropout: in training zeroes each element with probability ``p`` and scales the
    rest by ``1 / (1 - p)`` (flax's ``nn.Dropout``, rng stream ``"dropout"``); identity in
    evaluation."""

    p: float = 0.5
    inplace: bool = False  # torch's argument; arrays are immutable here, so it changes nothing

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {self.p}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        return nn.Dropout(rate=self.p, deterministic=not train)(x)


class ReLU(nn.Module):
    """torch.nn.ReLU."""

    inplace: bool = False  # torch's argument; no effect on immutable arrays

    def __call__(self, x: Any) -> Array:
        return jax.nn.relu(x)


class Sigmoid(nn.Module):
    """torch.nn.Sigmoid."""

    def __call__(self, x: Any) -> Array:
        return jax.nn.sigmoid(x)


class Tanh(nn.Module):
    """torch.nn.Tanh."""

    def __call__(self, x: Any) -> Array:
        return jnp.tanh(x)


class Identity(nn.Module):
    """torch.nn.Identity."""

    def __call__(self, x: Any) -> Any:
        return x


def count_params(variables: Any) -> int:
    """Number of trainable parameters (the ``params`` collection), as torch's
    ``sum(p.numel() for p in net.parameters())``."""
    params = variables.get("params", {}) if hasattr(variables, "get") else variables
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
