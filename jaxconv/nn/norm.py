"""Batch normalisation with torch's semantics: ``BatchNorm1d/2d/3d``."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxconv.kernels.batchnorm import batch_norm_train, normalise
from jaxconv.nn._common import Array, check_layer_layout


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
    With the batch's statistics the derivative is the closed form of
    :mod:`jaxconv.kernels.batchnorm` (two per-channel sums and one elementwise pass), not
    autodiff's chain through the variance and the mean; the values are the plain formula's.

    ``layout`` channels last (``"NLC"``, ``"NHWC"``, ``"NDHWC"``): the channels are the last
    axis, statistics over every other; a 2-D (N, C) input is the same in both layouts.
    """

    num_features: int
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    track_running_stats: bool = True
    dtype: Any = jnp.float32
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _ranks: ClassVar[tuple[int, ...]]
    _nd: ClassVar[int]

    def __post_init__(self) -> None:
        check_layer_layout(type(self).__name__, self.layout, self._nd)
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        name = type(self).__name__
        x = jnp.asarray(x)
        if x.ndim not in self._ranks:
            want = " or ".join(f"{r}-D" for r in self._ranks)
            raise ValueError(f"{name}: expected {want} input, got shape {x.shape}")
        channel = x.ndim - 1 if check_layer_layout(name, self.layout, self._nd) else 1
        if x.shape[channel] != self.num_features:
            raise ValueError(
                f"{name}: input has {x.shape[channel]} channels (axis {channel}), num_features "
                f"is {self.num_features}; shape {x.shape}"
            )
        c, dtype = self.num_features, self.dtype
        axes = tuple(a for a in range(x.ndim) if a != channel)
        count = math.prod(x.shape[a] for a in axes)  # values per channel
        if self.track_running_stats:
            running_mean = self.variable("batch_stats", "running_mean", jnp.zeros, (c,), dtype)
            running_var = self.variable("batch_stats", "running_var", jnp.ones, (c,), dtype)
            tracked = self.variable("batch_stats", "num_batches_tracked", jnp.zeros, (), jnp.int32)
        acc = jnp.promote_types(x.dtype, jnp.float32)
        if self.affine:
            weight = self.param("weight", nn.initializers.ones, (c,), dtype)
            bias = self.param("bias", nn.initializers.zeros, (c,), dtype)
            acc = jnp.promote_types(acc, dtype)
        else:
            weight, bias = jnp.ones((c,), acc), jnp.zeros((c,), acc)
        xf, weight, bias = x.astype(acc), weight.astype(acc), bias.astype(acc)
        if train or not self.track_running_stats:
            if train and count <= 1:
                raise ValueError(
                    f"{name}: training needs more than 1 value per channel, got input shape "
                    f"{x.shape}"
                )
            y, mean, var = batch_norm_train(xf, weight, bias, axes, self.eps)
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
            y = normalise(xf, mean, var, weight, bias, axes, self.eps)[0]
        return y.astype(jnp.result_type(x.dtype, dtype) if self.affine else x.dtype)


class BatchNorm1d(_BatchNorm):
    """torch.nn.BatchNorm1d: input (N, C) or (N, C, L); (N, C) or (N, L, C) with
    ``layout="NLC"``."""

    layout: str = "NCL"
    _ranks = (2, 3)
    _nd = 1


class BatchNorm2d(_BatchNorm):
    """torch.nn.BatchNorm2d: input (N, C, H, W); (N, H, W, C) with ``layout="NHWC"``."""

    layout: str = "NCHW"
    _ranks = (4,)
    _nd = 2


class BatchNorm3d(_BatchNorm):
    """torch.nn.BatchNorm3d: input (N, C, D, H, W); (N, D, H, W, C) with ``layout="NDHWC"``."""

    layout: str = "NCDHW"
    _ranks = (5,)
    _nd = 3
