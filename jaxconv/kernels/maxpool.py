"""Max pooling's values, derivative and indices, with PyTorch's semantics.

Values come from ``lax.reduce_window``; the derivative is our own (``custom_jvp``): JAX's rule
for ``reduce_window`` max cannot take window dilation (``select_and_gather_add`` raises
NotImplementedError) and its select_and_scatter backward is slow on XLA:CPU. The rule is a
running ``where`` over the strided taps of the padded input
(:func:`~jaxconv.kernels.windows.strided_taps`), which selects PyTorch's element (the first
maximum in scan order, ties included), so gradients match PyTorch's index-based backward, in
forward and reverse mode. ``return_indices`` scans the same way. On XLA:CPU, windows that tile
the input (stride = kernel, no dilation: LeNet's 2x2 pools) pick the same element with
reduce_windows instead, which stays fast inside a training loop (``_max_pool_tiled_jvp``).
"""

from __future__ import annotations

import itertools
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv.geometry import WindowGeometry
from jaxconv.kernels.dispatch import use_tiled_max_pool
from jaxconv.kernels.windows import spatial_constant, strided_taps

Array = jax.Array


def _taps(arr: Array, geom: WindowGeometry, fill: Any) -> list[Array]:
    """The taps of every window of ``arr`` padded with ``fill`` (user padding plus ceil-mode
    overhang)."""
    return strided_taps(arr, geom.axes, geom.kernel, geom.window_padding, geom.out_size,
                        geom.stride, geom.dilation, fill)  # fmt: skip


def _window_max(x: Array, window: Any, strides: Any, padding: Any, dilation: Any) -> Array:
    """``reduce_window`` max from -inf, with NaN propagated: a window holding a NaN is NaN.

    Why the second pass: XLA:CPU runs larger max windows through a kernel that drops NaN;
    PyTorch returns NaN.
    """
    kw = dict(window_dilation=dilation)
    y = lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, padding, **kw)
    nan = jnp.isnan(x).astype(x.dtype)  # 1 where NaN: a window's max is 1 iff it holds one
    nan = lax.reduce_window(nan, np.array(0, x.dtype), lax.max, window, strides, padding, **kw)
    return jnp.where(nan > 0, np.array(np.nan, x.dtype), y)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: Array, geom: WindowGeometry) -> Array:
    """Values from reduce_window (any dilation, NaN propagated); derivatives from
    ``_max_pool_jvp``."""
    return _window_max(
        x,
        geom.expand(x.ndim, geom.kernel, 1),
        geom.expand(x.ndim, geom.stride, 1),
        geom.full_padding(x.ndim),
        geom.expand(x.ndim, geom.dilation, 1),
    )


@_max_pool.defjvp
def _max_pool_jvp(
    geom: WindowGeometry, primals: tuple[Array], tangents: tuple[Array]
) -> tuple[Array, Array]:
    """Tangent of the element PyTorch selects: the first strict maximum in scan order.

    A running ``where`` over the taps; a NaN tap always takes over, as in PyTorch, so NaN
    propagates. Its transpose (the backward pass) is a few fused pads, faster on XLA:CPU than
    JAX's own select_and_scatter rule, which also cannot take window dilation. (Only a window
    whose every input element is -inf differs from PyTorch: the tangent is then the
    padding's, zero.)
    """
    if use_tiled_max_pool(geom):
        return _max_pool_tiled_jvp(geom, primals, tangents)
    (x,), (t,) = primals, tangents
    x_taps = _taps(x, geom, -np.inf)
    t_taps = _taps(t, geom, 0)
    best, t_best = x_taps[0], t_taps[0]
    for x_tap, t_tap in zip(x_taps[1:], t_taps[1:], strict=True):
        take = (x_tap > best) | jnp.isnan(x_tap)
        best = jnp.where(take, x_tap, best)
        t_best = jnp.where(take, t_tap, t_best)
    return best, t_best


def _max_pool_tiled_jvp(
    geom: WindowGeometry, primals: tuple[Array], tangents: tuple[Array]
) -> tuple[Array, Array]:
    """The same tangent as ``_max_pool_jvp`` for tiling windows, shaped for XLA:CPU loops.

    Two plain reduce_windows find each window's maximum and the tap PyTorch selects (the
    first equal to the maximum; in a window with NaN, the last NaN, and the value NaN: the
    second reduce_window also repairs XLA:CPU's maximum, which can drop NaN, at no extra
    cost); the tangent is a window sum of ``t`` masked to the selected elements. Its
    transpose is a reduce_window (the upsampled cotangent) and one select. Why: inside a
    scanned training epoch, the running ``where``'s transpose (pads with interior padding) is
    fused with its producers, e.g. the next convolution's input gradient, which are then
    recomputed per tap.
    """
    (x,), (t,) = primals, tangents
    ndim, (ah, aw), (kh, kw), (oh, ow) = x.ndim, geom.axes, geom.kernel, geom.out_size
    config = [(lo, hi, 0) for lo, hi in geom.full_padding(ndim)]
    xp = lax.pad(x, np.array(-np.inf, dtype=x.dtype), config)  # padding is a tap, as there
    tp = lax.pad(t, np.array(0, dtype=t.dtype), config)
    hp, wp = xp.shape[ah], xp.shape[aw]
    window = geom.expand(ndim, geom.kernel, 1)

    def upsample(a: Array, fill: Any) -> Array:
        """(.., oh, ow, ..) -> (.., hp, wp, ..): each window's value on its elements; rows
        and columns past the last window (floor mode) get ``fill``."""
        up = jnp.repeat(jnp.repeat(a, kh, axis=ah), kw, axis=aw)
        pad_end = [(0, 0, 0)] * ndim
        pad_end[ah], pad_end[aw] = (0, hp - oh * kh, 0), (0, wp - ow * kw, 0)
        return lax.pad(up, np.array(fill, dtype=a.dtype), pad_end)

    best = lax.reduce_window(xp, np.array(-np.inf, dtype=x.dtype), lax.max, window, window, "VALID")
    shape = [1] * ndim
    shape[ah], shape[aw] = hp, wp
    taps = (np.arange(hp)[:, None] % kh) * kw + np.arange(wp)[None, :] % kw  # (hp, wp)
    tap = jnp.asarray(taps.reshape(shape), jnp.int32)
    # key: the tap of an element equal to the maximum, kh*kw (never chosen) otherwise; a
    # NaN's key is -1 - tap, below every other key, counting backwards so that the minimum
    # is the window's last NaN. A window holds a NaN iff its minimum key is negative.
    key = jnp.where(jnp.isnan(xp), -1 - tap, jnp.where(xp == upsample(best, 0), tap, kh * kw))
    first = lax.reduce_window(key, np.array(kh * kw, np.int32), lax.min, window, window, "VALID")
    chosen = jnp.where(first < 0, -1 - first, first)
    mask = upsample(chosen, -1) == tap
    t_best = lax.reduce_window(
        jnp.where(mask, tp, 0), np.array(0, dtype=t.dtype), lax.add, window, window, "VALID"
    )
    return jnp.where(first < 0, np.array(np.nan, x.dtype), best), t_best


#: Max pooling of a validated geometry, values and derivatives; jitted so that eager callers
#: (and their gradients) get one compiled program, not ~5 small ops per tap.
max_pool = jax.jit(_max_pool, static_argnums=1)


@partial(jax.jit, static_argnums=1)
def max_pool_with_indices(x: Array, geom: WindowGeometry) -> tuple[Array, Array]:
    """Values and PyTorch's indices (flat ``h * W + w`` into the input plane, int32).

    PyTorch's kernel exactly: only in-input taps take part; a tap replaces the current maximum
    if it is strictly larger or NaN; the index starts at the first in-input row and column of
    the window (kept when every value is -inf). Differentiable through the ``where`` chain.
    """
    (top, _), (left, _) = geom.padding
    H, W = geom.in_size
    (sh, sw), (dh, dw) = geom.stride, geom.dilation
    ndim = x.ndim
    rows0 = np.arange(geom.out_size[0]) * sh - top  # first input row of each window, (OH,)
    cols0 = np.arange(geom.out_size[1]) * sw - left  # (OW,)
    r_first = rows0 + dh * np.maximum(0, -(rows0 // dh))  # ceil(-r / d) taps past the top
    q_first = cols0 + dw * np.maximum(0, -(cols0 // dw))

    taps = _taps(x, geom, -np.inf)
    best = jnp.full(taps[0].shape, -np.inf, dtype=x.dtype)
    first = spatial_constant(geom, r_first[:, None] * W + q_first[None, :], ndim, jnp.int32)
    index = jnp.broadcast_to(first, best.shape)
    ab = itertools.product(range(geom.kernel[0]), range(geom.kernel[1]))
    for (a, b), tap in zip(ab, taps, strict=True):
        r, q = rows0 + a * dh, cols0 + b * dw  # this tap's input row / column per window
        inside = ((r >= 0) & (r < H))[:, None] & ((q >= 0) & (q < W))[None, :]  # (OH, OW)
        if not inside.any():
            continue
        take = (tap > best) | jnp.isnan(tap)
        if not inside.all():
            take = take & spatial_constant(geom, inside, ndim, bool)
        best = jnp.where(take, tap, best)
        flat = spatial_constant(geom, r[:, None] * W + q[None, :], ndim, jnp.int32)
        index = jnp.where(take, flat, index)
    return best, index
