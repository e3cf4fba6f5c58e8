"""Max and average pooling (chapter 6.5) with PyTorch's semantics, and the chapter's pool2d.

``max_pool2d`` and ``avg_pool2d`` run on ``lax.reduce_window`` (``lax.max`` from -inf and
``lax.add`` from 0). Everything that depends on the geometry (output size, ceil-mode overhang,
avg-pool divisors, argmax indices) is computed with NumPy from static ints before tracing, so a
bad argument raises a ValueError/TypeError naming it, and the traced program holds only the
reduction and a constant.

Max pooling's derivative is our own (``custom_jvp``): JAX's rule for ``reduce_window`` max
cannot take window dilation (``select_and_gather_add`` raises NotImplementedError) and its
select_and_scatter backward is slow on XLA:CPU. The rule is a running ``where`` over the
``kh * kw`` strided slices of the padded input, which selects PyTorch's element (the first
maximum in scan order, ties included), so gradients match PyTorch's index-based backward, in
forward and reverse mode. ``return_indices`` scans the same way. On XLA:CPU, windows that tile
the input (stride = kernel, no dilation: LeNet's 2x2 pools) pick the same element with one
(value, tap) ``reduce_window`` instead, which is faster inside a training loop (see
``_max_pool_tiled_jvp``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._args import (
    Padding,
    Pair,
    as_array,
    as_int,
    check_floating,
    check_layout,
    check_rank,
    padding_pairs,
    positive_pair,
)
from jaxconv.shapes import effective_kernel, pool_output_shape

__all__ = ["max_pool2d", "avg_pool2d", "pool2d"]


@dataclass(frozen=True)
class _Geometry:
    """Static pooling geometry for one call; all ints, fixed before tracing."""

    axes: Pair  # positions of the (H, W) axes in x
    size: Pair  # input (H, W)
    kernel: Pair
    stride: Pair
    dilation: Pair
    pads: Padding  # the user's ((top, bottom), (left, right))
    out: Pair  # output (OH, OW)

    @property
    def lax_pads(self) -> Padding:
        """Padding that makes exactly ``out`` windows exist: the user's, plus the ceil-mode
        overhang at the bottom/right (never less than the user's bottom/right padding)."""
        pads = []
        for a in range(2):
            lo, hi = self.pads[a]
            need = (self.out[a] - 1) * self.stride[a] + effective_kernel(
                self.kernel[a], self.dilation[a]
            )
            pads.append((lo, max(hi, need - self.size[a] - lo)))
        return (pads[0], pads[1])

    def expand(self, ndim: int, spatial: Pair, fill: int) -> tuple[int, ...]:
        """A per-dimension tuple: ``spatial`` on the H, W axes and ``fill`` elsewhere."""
        out = [fill] * ndim
        out[self.axes[0]], out[self.axes[1]] = spatial
        return tuple(out)


def _as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def _check_input(x: Any, layout: str) -> tuple[Any, Pair]:
    """Validate ``x`` (rank, dtype, non-empty C/H/W); return it and its (H, W) axes."""
    layout = check_layout(layout)
    x = as_array(x, "x")
    if layout == "CHWN" and np.ndim(x) != 4:
        raise ValueError(f"x must have rank 4 (batched CHWN: C, H, W, N), got shape {x.shape}")
    ndim = check_rank(x, "x", (3, 4))
    check_floating(x, "x")
    if layout == "CHWN":  # (C, H, W, N), batched only
        axes, channel = (1, 2), 0
    else:
        axes = (ndim - 2, ndim - 1) if layout == "NCHW" else (ndim - 3, ndim - 2)
        channel = ndim - 3 if layout == "NCHW" else ndim - 1
    if min(x.shape[channel], x.shape[axes[0]], x.shape[axes[1]]) == 0:
        # As PyTorch: only the batch axis may be empty.
        raise ValueError(
            f"x must have non-empty channel and spatial axes ({layout}), got shape {x.shape}"
        )
    return jnp.asarray(x), axes


def _geometry(
    x: Any,
    axes: Pair,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
) -> _Geometry:
    kernel = positive_pair(kernel_size, "kernel_size")
    strides = kernel if stride is None else positive_pair(stride, "stride")
    dil = positive_pair(dilation, "dilation")
    pads = padding_pairs(padding, "padding")
    size = (int(x.shape[axes[0]]), int(x.shape[axes[1]]))
    ceil = _as_bool(ceil_mode, "ceil_mode")
    out = pool_output_shape(size, kernel, strides, pads, dil, ceil)
    return _Geometry(axes, size, kernel, strides, dil, pads, out)


def _spatial_constant(geo: _Geometry, values: np.ndarray, ndim: int, dtype: Any) -> jax.Array:
    """An (OH, OW) NumPy array shaped to broadcast against the output (trailing C for NHWC,
    N for CHWN)."""
    shape = [1] * (ndim - geo.axes[0])
    shape[0], shape[1] = geo.out
    return jnp.asarray(values.reshape(shape), dtype=dtype)


# --- max pooling -----------------------------------------------------------------------------


def _lax_padding(geo: _Geometry, ndim: int) -> list[tuple[int, int]]:
    """(lo, hi) per dimension of x for reduce_window: the user's padding plus the overhang."""
    pads = [(0, 0)] * ndim
    pads[geo.axes[0]], pads[geo.axes[1]] = geo.lax_pads
    return pads


def _window_taps(arr: jax.Array, geo: _Geometry, fill: Any) -> list[jax.Array]:
    """The kh*kw taps of every window, each an output-shaped strided slice of padded ``arr``.

    Tap ``(a, b)`` (row-major order, as PyTorch scans a window) of output ``(i, j)`` is
    element ``(i*sh + a*dh, j*sw + b*dw)`` of ``arr`` padded with ``fill`` (user padding plus
    ceil-mode overhang).
    """
    ndim = arr.ndim
    config = [(lo, hi, 0) for lo, hi in _lax_padding(geo, ndim)]
    padded = lax.pad(arr, np.array(fill, dtype=arr.dtype), config)
    (oh, ow), (sh, sw), (dh, dw) = geo.out, geo.stride, geo.dilation
    strides = geo.expand(ndim, geo.stride, 1)
    taps = []
    for a, b in itertools.product(range(geo.kernel[0]), range(geo.kernel[1])):
        start = geo.expand(ndim, (a * dh, b * dw), 0)
        limit = list(padded.shape)
        limit[geo.axes[0]] = a * dh + (oh - 1) * sh + 1
        limit[geo.axes[1]] = b * dw + (ow - 1) * sw + 1
        taps.append(lax.slice(padded, start, limit, strides))
    return taps


def _window_max(x: jax.Array, window: Any, strides: Any, padding: Any, dilation: Any) -> jax.Array:
    """``reduce_window`` max from -inf, with NaN propagated: a window holding a NaN is NaN.

    Why the second pass: XLA:CPU (jaxlib 0.10.2) runs larger max windows through YNNPACK,
    which drops NaN (a (1, 6, 28, 28) input with one NaN pooled to 0.0); PyTorch returns NaN.
    """
    kw = dict(window_dilation=dilation)
    y = lax.reduce_window(x, np.array(-np.inf, x.dtype), lax.max, window, strides, padding, **kw)
    nan = jnp.isnan(x).astype(x.dtype)  # 1 where NaN: a window's max is 1 iff it holds one
    nan = lax.reduce_window(nan, np.array(0, x.dtype), lax.max, window, strides, padding, **kw)
    return jnp.where(nan > 0, np.array(np.nan, x.dtype), y)


@partial(jax.custom_jvp, nondiff_argnums=(1,))
def _max_pool(x: jax.Array, geo: _Geometry) -> jax.Array:
    """Values from reduce_window (any dilation, NaN propagated); derivatives from
    ``_max_pool_jvp``."""
    return _window_max(
        x,
        geo.expand(x.ndim, geo.kernel, 1),
        geo.expand(x.ndim, geo.stride, 1),
        _lax_padding(geo, x.ndim),
        geo.expand(x.ndim, geo.dilation, 1),
    )


@_max_pool.defjvp
def _max_pool_jvp(
    geo: _Geometry, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """Tangent of the element PyTorch selects: the first strict maximum in scan order.

    A running ``where`` over the taps; a NaN tap always takes over, as in PyTorch, so NaN
    propagates. Its transpose (the backward pass) is a few fused pads, several times faster on
    XLA:CPU than JAX's own select_and_scatter rule, which also cannot take window dilation.
    (Only a window whose every input element is -inf differs from PyTorch: the tangent is
    then the padding's, zero.)
    """
    if _tiles(geo) and jax.default_backend() == "cpu":
        return _max_pool_tiled_jvp(geo, primals, tangents)
    (x,), (t,) = primals, tangents
    x_taps = _window_taps(x, geo, -np.inf)
    t_taps = _window_taps(t, geo, 0)
    best, t_best = x_taps[0], t_taps[0]
    for x_tap, t_tap in zip(x_taps[1:], t_taps[1:], strict=True):
        take = (x_tap > best) | jnp.isnan(x_tap)
        best = jnp.where(take, x_tap, best)
        t_best = jnp.where(take, t_tap, t_best)
    return best, t_best


def _tiles(geo: _Geometry) -> bool:
    """Windows that tile the padded input: every element is in at most one window."""
    return geo.stride == geo.kernel and geo.dilation == (1, 1)


def _max_pool_tiled_jvp(
    geo: _Geometry, primals: tuple[jax.Array], tangents: tuple[jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """The same tangent as ``_max_pool_jvp`` for tiling windows, shaped for XLA:CPU loops.

    Two plain reduce_windows find each window's maximum and the tap PyTorch selects (the
    first equal to the maximum; in a window with NaN, the last NaN, and the value NaN: the
    second reduce_window also repairs XLA:CPU's maximum, which can drop NaN, at no extra
    cost); the tangent is a window sum of ``t`` masked to the selected elements. Its
    transpose is a reduce_window (the upsampled cotangent) and one select. Why: inside a
    scanned training epoch, the running ``where``'s transpose (pads with interior padding) is
    fused with its producers, e.g. the next convolution's input gradient, which are then
    recomputed per tap: LeNet's epoch took 25 ms a step more (docs/BENCHMARKS.md).
    """
    (x,), (t,) = primals, tangents
    ndim, (ah, aw), (kh, kw), (oh, ow) = x.ndim, geo.axes, geo.kernel, geo.out
    config = [(lo, hi, 0) for lo, hi in _lax_padding(geo, ndim)]
    xp = lax.pad(x, np.array(-np.inf, dtype=x.dtype), config)  # padding is a tap, as there
    tp = lax.pad(t, np.array(0, dtype=t.dtype), config)
    hp, wp = xp.shape[ah], xp.shape[aw]
    window = geo.expand(ndim, geo.kernel, 1)

    def upsample(a: jax.Array, fill: Any) -> jax.Array:
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


# Eager callers (and their gradients) get one compiled program, not ~5 small ops per tap.
_max_pool_jit = jax.jit(_max_pool, static_argnums=1)


@partial(jax.jit, static_argnums=1)
def _max_pool_with_indices(x: jax.Array, geo: _Geometry) -> tuple[jax.Array, jax.Array]:
    """Values and PyTorch's indices (flat ``h * W + w`` into the input plane, int32).

    PyTorch's kernel exactly: only in-input taps take part; a tap replaces the current maximum
    if it is strictly larger or NaN; the index starts at the first in-input row and column of
    the window (kept when every value is -inf). Differentiable through the ``where`` chain.
    """
    (top, _), (left, _) = geo.pads
    H, W = geo.size
    (sh, sw), (dh, dw) = geo.stride, geo.dilation
    ndim = x.ndim
    rows0 = np.arange(geo.out[0]) * sh - top  # first input row of each window, (OH,)
    cols0 = np.arange(geo.out[1]) * sw - left  # (OW,)
    r_first = rows0 + dh * np.maximum(0, -(rows0 // dh))  # ceil(-r / d) taps past the top
    q_first = cols0 + dw * np.maximum(0, -(cols0 // dw))

    taps = _window_taps(x, geo, -np.inf)
    best = jnp.full(taps[0].shape, -np.inf, dtype=x.dtype)
    first = _spatial_constant(geo, r_first[:, None] * W + q_first[None, :], ndim, jnp.int32)
    index = jnp.broadcast_to(first, best.shape)
    ab = itertools.product(range(geo.kernel[0]), range(geo.kernel[1]))
    for (a, b), tap in zip(ab, taps, strict=True):
        r, q = rows0 + a * dh, cols0 + b * dw  # this tap's input row / column per window
        inside = ((r >= 0) & (r < H))[:, None] & ((q >= 0) & (q < W))[None, :]  # (OH, OW)
        if not inside.any():
            continue
        take = (tap > best) | jnp.isnan(tap)
        if not inside.all():
            take = take & _spatial_constant(geo, inside, ndim, bool)
        best = jnp.where(take, tap, best)
        flat = _spatial_constant(geo, r[:, None] * W + q[None, :], ndim, jnp.int32)
        index = jnp.where(take, flat, index)
    return best, index


def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); (N, H, W, C) / (H, W, C) with ``layout="NHWC"``;
        (C, H, W, N) with ``layout="CHWN"``. Real floating dtype.
      kernel_size: window ``k`` or ``(kh, kw)``.
      stride: int or pair; None (default) means stride = kernel_size, as in the chapter.
      padding: ``p``, ``(ph, pw)`` or per side ``((top, bottom), (left, right))``; each side at
        most half the window (``p <= k // 2``). Padding is -inf, so it never wins.
      dilation: spacing between window taps (int or pair).
      ceil_mode: round the output size up; the extra last window, which must start inside the
        input or the top/left padding, overhangs into -inf.
      layout: "NCHW" (default), "NHWC" or "CHWN" (batch last, batched only).
      return_indices: also return, per output element, the flat index ``h * W + w`` of the
        maximum in the unpadded input plane (int32), as PyTorch's ``return_indices``.

    Returns:
      The pooled array, ``(N, C, OH, OW)`` (or the matching layout / unbatched shape) with
      ``OH = floor((H + pt + pb - (dh*(kh-1)+1)) / sh) + 1`` (ceil with ``ceil_mode``); and the
      indices of the same shape if ``return_indices``.
    """
    x, axes = _check_input(x, layout)
    geo = _geometry(x, axes, kernel_size, stride, padding, dilation, ceil_mode)
    if _as_bool(return_indices, "return_indices"):
        return _max_pool_with_indices(x, geo)
    return _max_pool_jit(x, geo)


# --- average pooling -------------------------------------------------------------------------


def _avg_divisor(geo: _Geometry, count_include_pad: bool) -> np.ndarray:
    """(OH, OW) float64 divisors, PyTorch's rule, computed per axis and multiplied.

    A window ``[start, start + k)`` in input coordinates counts, with ``count_include_pad``,
    its part inside the padded input (the end is clipped to ``n + pad_end``, so a ceil-mode
    overhang past the padding is not counted); without it, only its part inside the input.
    """
    counts = []
    for a in range(2):
        (lo, hi), n, k, s = geo.pads[a], geo.size[a], geo.kernel[a], geo.stride[a]
        start = np.arange(geo.out[a]) * s - lo
        end = np.minimum(start + k, n + hi)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(np.float64)


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
) -> jax.Array:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); (N, H, W, C) / (H, W, C) with ``layout="NHWC"``;
        (C, H, W, N) with ``layout="CHWN"``. Real floating dtype (float16/bfloat16 are summed
        in float32).
      kernel_size, stride, padding, ceil_mode, layout: as in :func:`max_pool2d` (no dilation).
        Padding is zeros.
      count_include_pad: divide by the window's size within the padded input (True, default:
        the user's padding counts, a ceil-mode overhang beyond it does not) or by the number
        of input elements in the window (False).
      divisor_override: a non-zero int that replaces the divisor everywhere (PyTorch refuses
        only 0; a negative divisor is accepted, as there).

    Returns:
      ``(N, C, OH, OW)`` (or the matching layout / unbatched shape), sizes as in max_pool2d.
    """
    x, axes = _check_input(x, layout)
    geo = _geometry(x, axes, kernel_size, stride, padding, 1, ceil_mode)
    include = _as_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = as_int(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must be a non-zero int (as in PyTorch), got 0")

    return _avg_pool(x, geo, include, divisor_override)


@partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program for eager callers too
def _avg_pool(
    x: jax.Array, geo: _Geometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    ndim = x.ndim
    acc = jnp.promote_types(x.dtype, jnp.float32)  # low-precision inputs sum in float32
    sums = lax.reduce_window(
        x.astype(acc),
        np.array(0, dtype=acc),  # a concrete 0: JAX's differentiable add monoid
        lax.add,
        geo.expand(ndim, geo.kernel, 1),
        geo.expand(ndim, geo.stride, 1),
        _lax_padding(geo, ndim),
    )
    if divisor_override is not None:
        out = sums / np.array(divisor_override, dtype=acc)
    else:
        out = sums / _spatial_constant(geo, _avg_divisor(geo, count_include_pad), ndim, acc)
    return out.astype(x.dtype)


# --- the chapter's pool2d --------------------------------------------------------------------


def pool2d(X: Any, pool_size: Any, mode: str = "max") -> jax.Array:
    """The chapter's ``pool2d``: max or mean of every ``(ph, pw)`` window of a 2-D ``X``.

    Stride 1, no padding: ``(h, w) -> (h - ph + 1, w - pw + 1)``. The manual version: one
    ``dynamic_slice`` per output position, vmapped over rows and columns (no Python loop over
    pixels). Same values as ``max_pool2d`` / ``avg_pool2d`` with ``stride=1`` on ``X[None]``.
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    X = as_array(X, "X")
    check_rank(X, "X", (2,))
    check_floating(X, "X")
    ph, pw = positive_pair(pool_size, "pool_size")
    h, w = X.shape
    if ph > h or pw > w:
        raise ValueError(f"pool_size {(ph, pw)} is larger than X, shape {(h, w)}")
    return _pool2d_vmap(jnp.asarray(X), (ph, pw), mode)


@partial(jax.jit, static_argnums=(1, 2))  # eager callers get one program, not a vmap per op
def _pool2d_vmap(X: jax.Array, size: Pair, mode: str) -> jax.Array:
    return _pool2d_windows(X, size, mode)


def _window_map(f: Any, X: jax.Array, size: Pair) -> jax.Array:
    """``f(window, i, j)`` of every (ph, pw) window of ``X``, vmapped over rows and columns."""
    (h, w), (ph, pw) = X.shape, size

    def at(i: jax.Array, j: jax.Array) -> jax.Array:
        return f(lax.dynamic_slice(X, (i, j), (ph, pw)), i, j)  # one window -> a value

    rows, cols = jnp.arange(h - ph + 1), jnp.arange(w - pw + 1)
    # inner vmap over columns, outer over rows: (OH, OW)
    return jax.vmap(jax.vmap(at, in_axes=(None, 0)), in_axes=(0, None))(rows, cols)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool2d_windows(X: jax.Array, size: Pair, mode: str) -> jax.Array:
    """The chapter's pool2d: max or mean of each window. Its gradient is JAX's own (ties of
    a max share the gradient equally, as ``jnp.max``'s rule) but computed the manual way,
    one window per input position (``_pool2d_windows_bwd``): JAX's reverse mode of the
    vmapped dynamic slices is a scatter per window, 7.6x slower than lax's pooling."""
    reduce = jnp.max if mode == "max" else jnp.mean
    return _window_map(lambda win, i, j: reduce(win), X, size)


def _pool2d_windows_fwd(
    X: jax.Array, size: Pair, mode: str
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    Y = _pool2d_windows(X, size, mode)
    if mode == "avg":
        return Y, (X,)
    # how many elements of each window equal its max (0 for a NaN max: NaN gradients)
    counts = _window_map(lambda win, i, j: jnp.sum(win == Y[i, j]).astype(X.dtype), X, size)
    return Y, (X, Y, counts)


def _pool2d_windows_bwd(
    size: Pair, mode: str, res: tuple[jax.Array, ...], dY: jax.Array
) -> tuple[jax.Array]:
    """dX[p] = sum over the windows containing p of dY / n (avg), or of dY / count where p
    equals the window's max (max): a window sum over dY padded by the window size - 1, the
    window flipped so that entry (u, v) is the window whose tap (ph-1-u, pw-1-v) is p."""
    ph, pw = size
    pads = ((ph - 1, ph - 1), (pw - 1, pw - 1))
    if mode == "avg":
        (X,) = res
        share = jnp.pad(dY / np.array(ph * pw, dY.dtype), pads)
        return (_window_map(lambda win, i, j: jnp.sum(win), share, size),)
    X, Y, counts = res
    share = jnp.pad(dY / counts, pads)  # (h + ph - 1, w + pw - 1)
    maxes = jnp.pad(Y, pads, constant_values=np.nan)  # padding equals nothing
    nan_max = jnp.pad(counts == 0, pads)  # as jnp.max's rule: NaN for all of such a window

    def grad_at(share_win: jax.Array, i: jax.Array, j: jax.Array) -> jax.Array:
        max_win = lax.dynamic_slice(maxes, (i, j), (ph, pw))
        nan_win = lax.dynamic_slice(nan_max, (i, j), (ph, pw))
        mine = jnp.where(max_win == X[i, j], share_win, 0)
        return jnp.sum(jnp.where(nan_win, np.array(np.nan, X.dtype), mine))

    return (_window_map(grad_at, share, size),)


_pool2d_windows.defvjp(_pool2d_windows_fwd, _pool2d_windows_bwd)
