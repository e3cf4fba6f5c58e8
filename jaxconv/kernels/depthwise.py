"""Depthwise convolution (``groups == in_channels``) as a sum over kernel taps:
``impl="depthwise"``.

Why: XLA:CPU runs ``lax.conv_general_dilated`` with ``feature_group_count == C`` through a
slow generic loop, and its gradients (grouped convolutions again) slower still. A depthwise
conv has no channel contraction at all: output channel ``c*m + j`` (m = out/in, the channel
multiplier) is the sum over the kernel's taps of one strided slice of the padded input channel
``c`` times one weight. Each tap is one strided slice
(:func:`~jaxconv.kernels.windows.strided_taps`: N-D, any stride and dilation), so the forward
pass is one fused elementwise loop.

Derivatives: a ``custom_jvp``. The tangent with respect to the input is the tap sum itself;
its transpose (the input gradient) is a sum of strided pads, one fused loop. The tangent with
respect to the weight is the tap sum computed one chunk of the batch at a time (``lax.map``),
so that its transpose (the weight gradient, what reverse mode runs) reduces each chunk's taps
times the output gradient while they are in cache, instead of one reduction per tap over the
whole batch, for which XLA:CPU materialises every strided tap in memory. Forward mode
(jax.jvp) works, and the rule is written in differentiable jnp/lax ops, so higher derivatives
work too.

The taps are computed in the caller's layout (channels first or last, or CHWN): every step is
elementwise or a reduction over the non-channel axes, so no transpose is needed.

float16/bfloat16: the taps are summed (and the weight gradient reduced) in float32 and the
result rounded once to the input's dtype, so ``impl="auto"`` takes this path for them too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import LAYOUT_KERNELS
from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.windows import strided_taps
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

#: Bytes of padded input per chunk of the weight gradient: each chunk's taps and output
#: gradient are reduced while they stay in cache. For one reduction per tap over the whole
#: batch XLA:CPU writes every strided tap to memory first, and the gradient is bandwidth-bound.
CHUNK_BYTES = 4 * 2**20


def is_depthwise(geom: ConvGeometry) -> bool:
    """``groups == in_channels``: every input channel is its own group (m = out/in >= 1)."""
    return geom.groups == geom.in_channels


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the taps are summed in: float32 for float16/bfloat16, else ``dtype``."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def tap_weights(w: Array, geom: ConvGeometry) -> Array:
    """The kernel (in ``LAYOUT_KERNELS[geom.layout]``, its I axis 1) as (K, C, m): one (C, m)
    weight matrix per tap, taps row-major over the kernel (the order of ``strided_taps``)."""
    spec = LAYOUT_KERNELS[geom.layout]
    spatial = [c for c in spec if c not in "OI"]
    w = w.transpose([spec.index(c) for c in [*spatial, "I", "O"]])  # (*k, 1, C*m)
    return w.reshape(math.prod(geom.kernel), geom.in_channels, -1)  # (K, C, m)


def _broadcast_weights(wk: Array, ndim: int, channel_axis: int) -> Array:
    """(K, C, m) -> (K, ...) broadcastable against taps of rank ``ndim + 1`` whose axes
    ``channel_axis`` and ``channel_axis + 1`` are (C, m)."""
    shape = [1] * (ndim + 1)
    shape[channel_axis], shape[channel_axis + 1] = wk.shape[1], wk.shape[2]
    return wk.reshape(wk.shape[0], *shape)


def _merge_multiplier(y: Array, channel_axis: int) -> Array:
    """(..., C, m, ...) -> (..., C*m, ...): output channel c*m + j, as PyTorch orders them."""
    shape = list(y.shape)
    shape[channel_axis : channel_axis + 2] = [shape[channel_axis] * shape[channel_axis + 1]]
    return y.reshape(shape)


def _tap_sum(x: Array, wk: Array, geom: ConvGeometry) -> Array:
    """sum over taps t of tap_t(x) * wk[t]: x batched in ``geom.layout``, wk (K, C, m) ->
    the batched output in ``geom.layout``. Written as a sum of K products (one fused loop)."""
    channel_axis = geom.layout.index("C")
    taps = strided_taps(
        x, geom.axes, geom.kernel, geom.padding, geom.out_size, geom.stride, geom.dilation
    )
    wb = _broadcast_weights(wk, x.ndim, channel_axis)
    y = sum(jnp.expand_dims(t, channel_axis + 1) * wb[i] for i, t in enumerate(taps))
    return _merge_multiplier(y, channel_axis)


def batch_chunk(x: Array, geom: ConvGeometry) -> int:
    """Images per chunk of the weight gradient: the largest divisor of the batch whose padded
    input fits :data:`CHUNK_BYTES`; the whole batch where the batch is not the leading axis."""
    n = x.shape[geom.layout.index("N")]
    if geom.layout[0] != "N":
        return n
    padded = math.prod(s + sum(p) for s, p in zip(geom.in_size, geom.padding, strict=True))
    per_image = padded * geom.in_channels * x.dtype.itemsize
    fits = max(1, CHUNK_BYTES // per_image)
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= fits)


def _tangent_from_weights(x: Array, twk: Array, geom: ConvGeometry) -> Array:
    """The tap sum with a weight tangent (K, C, m), one chunk of the batch at a time
    (:func:`batch_chunk`): its transpose, the weight gradient, is then a loop over chunks that
    reduces each chunk's taps * dy while they are in cache and adds into (K, C, m)."""
    nb = batch_chunk(x, geom)
    if geom.layout[0] != "N" or nb == x.shape[0]:
        return _tap_sum(x, twk, geom)
    n = x.shape[0]
    chunks = x.reshape(n // nb, nb, *x.shape[1:])  # (chunks, nb, ...)
    # checkpointed: the transpose recomputes each chunk's taps from x instead of saving them
    per_chunk = jax.checkpoint(lambda xc: _tap_sum(xc, twk, geom), prevent_cse=False)
    y = lax.map(per_chunk, chunks)  # (chunks, nb, ...)
    return y.reshape(n, *y.shape[2:])


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def depthwise_taps(x: Array, wk: Array, geom: ConvGeometry) -> Array:
    """Depthwise conv: x batched in ``geom.layout``, wk (K, C, m) from :func:`tap_weights`
    -> the batched output (C*m channels) in ``geom.layout``; derivatives from
    ``_depthwise_jvp``."""
    return _tap_sum(x, wk, geom)


@functools.partial(depthwise_taps.defjvp, symbolic_zeros=True)
def _depthwise_jvp(
    geom: ConvGeometry, primals: tuple[Array, Array], tangents: tuple[Any, Any]
) -> tuple[Array, Array]:
    (x, wk), (tx, twk) = primals, tangents
    y = _tap_sum(x, wk, geom)
    terms = []  # a symbolic-zero tangent (e.g. the input images) costs nothing
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        terms.append(_tap_sum(tx, wk, geom))
    if not isinstance(twk, jax.custom_derivatives.SymbolicZero):
        terms.append(_tangent_from_weights(x, twk, geom))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


def conv_depthwise(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched conv in any layout (1-D, 2-D, 3-D, CHWN) as a tap sum where
    ``groups == in_channels``; lax for every other geometry. ``precision`` only reaches lax
    (the tap sum has no matrix product)."""
    if not is_depthwise(geom):
        return conv_lax(x, w, geom, precision)
    dtype = _compute_dtype(x.dtype)
    y = depthwise_taps(x.astype(dtype), tap_weights(w, geom).astype(dtype), geom)
    return y.astype(x.dtype)
