"""Batch normalisation with the batch's statistics, with a closed-form derivative.

Why: autodiff of the plain formula (mean, then the variance of ``x - mean``, then
``(x - mean) * rsqrt(var + eps) * w + b``) runs its reverse pass as a chain of dependent
reductions (the variance's cotangent first, then the mean's through it) before the input
gradient, each a pass over the activation. The closed form needs two per-channel sums of
the output cotangent ``g``, ``sum(g)`` and ``sum(g * xhat)`` (independent of each other),
and one elementwise pass:

    dx = w * rstd * (g - (sum(g) + xhat * sum(g * xhat)) / M),   dw = sum(g * xhat), db = sum(g)

How: a ``custom_jvp`` whose tangent is written with the per-channel sums explicit, so that
its transpose (what reverse mode runs) is exactly that form. Forward mode works too (the
tangent is the true derivative), and the values are those of the plain formula.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array


def _per_channel(v: Array, axes: tuple[int, ...]) -> Array:
    """A (C,) vector broadcastable against the activation (size 1 on every axis in ``axes``)."""
    return jnp.expand_dims(v, axes)


def normalise(
    x: Array,
    mean: Array,
    var: Array,
    weight: Array,
    bias: Array,
    axes: tuple[int, ...],
    eps: float,
) -> tuple[Array, Array, Array]:
    """Batch norm with given (C,) statistics (the batch's, or running ones in evaluation):
    ``(y, xhat, rstd)`` with ``rstd = rsqrt(var + eps)``, ``xhat = (x - mean) * rstd`` and
    ``y = xhat * weight + bias``, the (C,) vectors broadcast over ``axes``."""
    rstd = lax.rsqrt(var + eps)
    xhat = (x - _per_channel(mean, axes)) * _per_channel(rstd, axes)
    return xhat * _per_channel(weight, axes) + _per_channel(bias, axes), xhat, rstd


def _statistics(x: Array, axes: tuple[int, ...]) -> tuple[Array, Array]:
    """The batch's mean and biased variance over ``axes``, each (C,): two passes (the
    variance of ``x - mean``), exact for inputs with large means."""
    mean = jnp.mean(x, axis=axes)
    return mean, jnp.mean(jnp.square(x - _per_channel(mean, axes)), axis=axes)


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4))
def batch_norm_train(
    x: Array, weight: Array, bias: Array, axes: tuple[int, ...], eps: float
) -> tuple[Array, Array, Array]:
    """Normalise ``x`` with its own statistics over ``axes`` (every axis but the channels').

    ``x`` any shape, ``weight`` and ``bias`` (C,) with C the size of the one axis not in
    ``axes``; all three of one floating dtype. Returns ``(y, mean, var)``: ``y`` shaped as
    ``x``, ``(x - mean) * rsqrt(var + eps) * weight + bias``, and the (C,) batch mean and
    biased variance (for running statistics). Differentiable in every argument, in both
    modes; the reverse pass takes the closed form of the module docstring.
    """
    mean, var = _statistics(x, axes)
    return normalise(x, mean, var, weight, bias, axes, eps)[0], mean, var


@batch_norm_train.defjvp
def _batch_norm_train_jvp(
    axes: tuple[int, ...], eps: float, primals: tuple[Array, ...], tangents: tuple[Array, ...]
) -> tuple[tuple[Array, Array, Array], tuple[Array, Array, Array]]:
    (x, weight, bias), (tx, tw, tb) = primals, tangents
    count = x.size // weight.size  # values per channel
    mean, var = _statistics(x, axes)
    y, xhat, rstd = normalise(x, mean, var, weight, bias, axes, eps)
    # Per-channel sums of the tangent, then per-channel coefficients: the transpose of this
    # is sum(g) and sum(g * xhat) (independent of each other) and one elementwise pass for dx.
    sum_t = jnp.sum(tx, axis=axes)
    sum_txhat = jnp.sum(tx * xhat, axis=axes)
    scale = weight * rstd
    shift = tb - scale * sum_t / count  # the tangent's part constant over the channel
    slope = tw - scale * sum_txhat / count  # the part along xhat
    ty = (
        tx * _per_channel(scale, axes)
        + _per_channel(shift, axes)
        + xhat * _per_channel(slope, axes)
    )
    t_mean = sum_t / count
    t_var = 2 * sum_txhat / (count * rstd)  # d mean((x - mean)^2) = 2 mean((x - mean) tx)
    return (y, mean, var), (ty, t_mean, t_var)
