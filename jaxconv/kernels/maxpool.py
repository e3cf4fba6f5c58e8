"""Max pooling's values, derivative and indices, with PyTorch's semantics.

Values come from ``lax.reduce_window`` (on XLA:CPU in 1-D: the maximum of the window's
taps sliced from the unpadded input, :func:`~jaxconv.kernels.windows.strided_taps` with
``pad_input=False``); the derivative is our own
(``custom_jvp``): JAX's rule for ``reduce_window`` max cannot take window dilation
(``select_and_gather_add`` raises NotImplementedError) and its select_and_scatter backward is
slow on XLA:CPU. The rule is a running ``where`` over the strided taps of the padded input
(:func:`~jaxconv.kernels.windows.strided_taps`), which selects PyTorch's element (the first
maximum in scan order among the taps inside the input, ties included), so gradients match
PyTorch's index-based backward, in forward and reverse mode, in any number of spatial axes.
``return_indices`` scans the same way. On XLA:CPU, 2-D windows that tile the input (stride =
kernel, no dilation: LeNet's 2x2 pools) pick the same element with reduce_windows instead,
which stays fast inside a training loop (``_max_pool_tiled_jvp``). Other windows on XLA:CPU
(overlapping ones: ResNet's 3x3 stride 2) store each window's selected tap number once
(:mod:`~jaxconv.kernels.stored`) and let the tangent pick that tap; the same selection. There
2-D and 3-D windows store the pooled values too, and channels-first layouts take the
tangent's taps from the stride phases (:func:`~jaxconv.kernels.dispatch.stores_max_pool_values`,
:func:`~jaxconv.kernels.dispatch.max_pool_tangent_by_phases`).
"""

from __future__ import annotations

import itertools
from functools import partial, reduce
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv.geometry import WindowGeometry
from jaxconv.kernels.dispatch import (
    max_pool_tangent_by_phases,
    max_pool_values_by_taps,
    stores_max_pool_selection,
    stores_max_pool_values,
    use_tiled_max_pool,
)
from jaxconv.kernels.stored import stored
from jaxconv.kernels.windows import spatial_constant, strided_taps, window_taps

Array = jax.Array


def _window_max(x: Array, window: Any, strides: Any, padding: Any, dilation: Any) -> Array:
    """``reduce_window`` max from -inf, with NaN propagated: a window holding a NaN is NaN.

    Why the second pass: XLA:CPU runs larger max windows through a kernel that drops NaN;
    PyTorch returns NaN. It runs only when ``x`` holds a NaN (``lax.cond``; under ``vmap``
    both run and a select picks): without NaN the first pass is exact, and the second cost
    three times the first (ResNet's 3x3 stride-2 pool, docs/BENCHMARKS.md).
    """
    kw = dict(window_dilation=dilation)
    init = np.array(-np.inf, x.dtype)

    def window_max(x: Array) -> Array:
        return lax.reduce_window(x, init, lax.max, window, strides, padding, **kw)

    def with_nan(x: Array) -> Array:
        nan = jnp.isnan(x).astype(x.dtype)  # 1 where NaN: a window's max is 1 iff it holds one
        nan = lax.reduce_window(nan, np.array(0, x.dtype), lax.max, window, strides, padding, **kw)
        return jnp.where(nan > 0, np.array(np.nan, x.dtype), window_max(x))

    return lax.cond(jnp.isnan(x).any(), with_nan, window_max, x)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: Array, geom: WindowGeometry) -> Array:
    """Values from reduce_window (any dilation, NaN propagated), or on XLA:CPU in 1-D the
    maximum of the window's taps (:func:`_taps_max`); derivatives from ``_max_pool_jvp``."""
    if max_pool_values_by_taps(geom):
        return _taps_max(x, geom)
    return _window_max(
        x,
        geom.expand(x.ndim, geom.kernel, 1),
        geom.expand(x.ndim, geom.stride, 1),
        geom.full_padding(x.ndim),
        geom.expand(x.ndim, geom.dilation, 1),
    )


def _taps_max(x: Array, geom: WindowGeometry) -> Array:
    """The maximum of each window's taps, -inf in the padding: ``lax.max`` propagates NaN,
    so a window holding one is NaN, as in PyTorch. A tie of -0.0 and 0.0 may give either
    (PyTorch keeps the first), as ``reduce_window`` may."""
    taps = strided_taps(x, geom.axes, geom.kernel, geom.window_padding, geom.out_size,
                        geom.stride, geom.dilation, -np.inf, pad_input=False)  # fmt: skip
    return reduce(lax.max, taps)


def _tap_positions(geom: WindowGeometry) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per kernel tap (row-major, PyTorch's scan order): ``(inside, flat)``, NumPy arrays of
    the output's spatial shape: whether each window's tap lies in the input (not in padding
    or a ceil-mode overhang), and its flat index ``(d * H + h) * W + w`` into the input plane.
    """
    starts = [np.arange(o) * s - lo for o, s, (lo, _) in
              zip(geom.out_size, geom.stride, geom.padding, strict=True)]  # fmt: skip
    plane = [int(np.prod(geom.in_size[a + 1 :])) for a in range(len(geom.in_size))]
    out = []
    for tap in itertools.product(*(range(k) for k in geom.kernel)):
        coords = np.ix_(*(st + t * d for st, t, d in zip(starts, tap, geom.dilation, strict=True)))
        inside = np.ones(geom.out_size, bool)
        flat = np.zeros(geom.out_size, np.int64)
        for c, n, p in zip(coords, geom.in_size, plane, strict=True):
            inside = inside & (c >= 0) & (c < n)
            flat = flat + c * p
        out.append((inside, flat))
    return out


def _first_index(geom: WindowGeometry) -> np.ndarray:
    """PyTorch's starting index of each window: per axis the first tap at or past 0 (the
    window's start moved forward by whole dilations), flattened. Kept when no tap beats -inf,
    and for a window with no tap inside the input (then it lies past the input, as there)."""
    flat = np.zeros(geom.out_size, np.int64)
    for a, (o, s, (lo, _), d) in enumerate(
        zip(geom.out_size, geom.stride, geom.padding, geom.dilation, strict=True)
    ):
        start = np.arange(o) * s - lo
        first = start + d * np.maximum(0, -(start // d))  # ceil(-start / d) taps forward
        shape = [1] * len(geom.out_size)
        shape[a] = o
        flat = flat + first.reshape(shape) * int(np.prod(geom.in_size[a + 1 :]))
    return flat


def _select(
    geom: WindowGeometry, x_taps: list[Array], riders: list[list[Array]], ndim: int
) -> tuple[Array, list[Array]]:
    """PyTorch's choice of element in every window, as a running ``where`` over the taps.

    PyTorch's kernel: only taps inside the input take part; the first of them starts the
    window; a later tap replaces the current one if it is strictly larger or NaN (so ties keep
    the first maximum in scan order, and a window with NaN selects its last NaN). Returns the
    selected values and, for each rider (one array per tap: the tangent, or the flat index),
    its selected entries. Where every tap lies inside the input (no padding reached) this is
    the plain chain ``take = (tap > best) | isnan(tap)``; the static masks cost nothing there.
    """
    positions = _tap_positions(geom)
    best, chosen = x_taps[0], [r[0] for r in riders]
    seen = positions[0][0].copy()
    for i in range(1, len(x_taps)):
        inside = positions[i][0]
        if not inside.any():
            continue
        first = inside & ~seen  # windows whose first in-input tap is this one
        seen |= inside
        take = (x_taps[i] > best) | jnp.isnan(x_taps[i])
        if first.any():
            take = take | spatial_constant(geom, first, ndim, bool)
        if not inside.all():
            take = take & spatial_constant(geom, inside, ndim, bool)
        best = jnp.where(take, x_taps[i], best)
        chosen = [jnp.where(take, r[i], c) for r, c in zip(riders, chosen, strict=True)]
    return best, chosen


@_max_pool.defjvp
def _max_pool_jvp(
    geom: WindowGeometry, primals: tuple[Array], tangents: tuple[Array]
) -> tuple[Array, Array]:
    """Tangent of the element PyTorch selects (:func:`_select`): the first maximum in scan
    order among the taps inside the input; a NaN tap always takes over, so NaN propagates.

    Linear in the tangent (a chain of ``where`` on fixed masks), so JAX transposes it for the
    backward pass: a few fused pads, faster on XLA:CPU than JAX's own select_and_scatter
    rule, which also cannot take window dilation. Differentiable again (second order).
    """
    if use_tiled_max_pool(geom):
        return _max_pool_tiled_jvp(geom, primals, tangents)
    (x,), (t,) = primals, tangents
    if not stores_max_pool_selection():
        x_taps, t_taps = window_taps(x, geom, -np.inf), window_taps(t, geom, 0)
        best, (t_best,) = _select(geom, x_taps, [t_taps], x.ndim)
        return best, t_best
    # The same selection, as each window's tap number (stored once: see kernels.stored); the
    # tangent picks that tap, a where chain on fixed masks whose transpose is cheap.
    count = int(np.prod(geom.kernel))
    tap_numbers = [spatial_constant(geom, np.full(geom.out_size, i), x.ndim, jnp.int32)
                   for i in range(count)]  # fmt: skip
    best, (chosen,) = _select(geom, window_taps(x, geom, -np.inf), [tap_numbers], x.ndim)
    chosen = stored(jnp.broadcast_to(chosen, best.shape))
    if stores_max_pool_values(geom):
        best = stored(best)
    t_taps = window_taps(t, geom, 0, phases=max_pool_tangent_by_phases(geom, x.ndim))
    t_best = t_taps[0]
    for i in range(1, count):
        t_best = jnp.where(chosen == i, t_taps[i], t_best)
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
    # Padding (and ceil-mode overhang) is never PyTorch's choice, not even in a window whose
    # input elements are all -inf: its tap is kh*kw, as an element below the maximum. A
    # constant, so this costs nothing (and without padding changes nothing).
    ((top, _), (left, _)), (H, W) = geom.padding, geom.in_size
    rows, cols = np.arange(hp) - top, np.arange(wp) - left
    inside = ((rows >= 0) & (rows < H))[:, None] & ((cols >= 0) & (cols < W))[None, :]
    taps = np.where(inside, taps, kh * kw)
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
    """Values and PyTorch's indices (flat ``(d * H + h) * W + w`` into the input plane, int32).

    The selection of :func:`_select`, with the index riding along; windows whose first tap
    lies in padding start from PyTorch's first in-input index. Differentiable through the
    ``where`` chain (same element as the derivative of :data:`max_pool`).
    """
    ndim, positions = x.ndim, _tap_positions(geom)
    inside0, flat0 = positions[0]
    start = np.where(inside0, flat0, _first_index(geom))
    index_taps = [spatial_constant(geom, start, ndim, jnp.int32)]
    index_taps += [spatial_constant(geom, flat, ndim, jnp.int32) for _, flat in positions[1:]]
    best, (index,) = _select(geom, window_taps(x, geom, -np.inf), [index_taps], ndim)
    return best, jnp.broadcast_to(index, best.shape)
