"""Windows of an array: the strided taps of a padded array, and the chapter's vmapped window
maps with their own reverse-mode rules.

Taps: tap ``(a, b, ...)`` (row-major over the kernel, the order PyTorch scans a window) of
every output position at once is ONE strided slice of the padded input: element
``i*s + a*d`` along each spatial axis. The patch matrices, the one-channel tap sums, the
max-pool derivative and its indices are all built from these slices (a loop over kernel taps,
never over pixels).

Window maps: the chapter's manual ``corr2d`` and ``pool2d`` compute one output per window, as a
dynamic slice vmapped over output rows and columns. JAX's reverse mode of vmapped dynamic
slices is a scatter per window, many times slower than the library path
(docs/BENCHMARKS.md), so both carry a ``custom_vjp`` whose gradients are again window maps or
tap sums.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._args import Ints, Pads, Pair
from jaxconv.geometry import WindowGeometry

Array = jax.Array

#: Above this many kernel taps the manual correlation's gradients are window maps; up to it,
#: tap by tap (static slices and pads, no gather), which is faster for small kernels.
TAPWISE_MAX_TAPS = 64


# --- strided taps ------------------------------------------------------------------------------


def strided_taps(
    x: Array,
    axes: Ints,
    kernel: Ints,
    pads: Pads,
    out_size: Ints,
    stride: Ints | None = None,
    dilation: Ints | None = None,
    fill: Any = 0,
    pad_input: bool = True,
) -> list[Array]:
    """Pad the spatial ``axes`` of ``x`` with ``fill`` and return one strided slice per kernel
    tap: ``prod(kernel)`` arrays shaped like ``x`` with the spatial sizes -> ``out_size``.

    ``pads`` must give exactly ``out_size`` windows (see
    :attr:`jaxconv.geometry.WindowGeometry.window_padding`); stride and dilation default to 1.
    ``pad_input=False``: the same taps, each sliced from ``x`` itself and padded with ``fill``
    only at the outputs where it lies in the padding (:func:`_inside_taps`).
    """
    ones = (1,) * len(axes)
    stride, dilation = stride or ones, dilation or ones
    if not pad_input:
        return _inside_taps(x, axes, kernel, pads, out_size, stride, dilation, fill)
    config = [(0, 0, 0)] * x.ndim
    for axis, (lo, hi) in zip(axes, pads, strict=True):
        config[axis] = (lo, hi, 0)
    padded = lax.pad(x, np.array(fill, dtype=x.dtype), config)
    strides = [1] * x.ndim
    for axis, s in zip(axes, stride, strict=True):
        strides[axis] = s
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        start, limit = [0] * x.ndim, list(padded.shape)
        for axis, t, o, s, d in zip(axes, tap, out_size, stride, dilation, strict=True):
            start[axis], limit[axis] = t * d, t * d + (o - 1) * s + 1
        taps.append(lax.slice(padded, start, limit, strides))
    return taps


def _inside_outputs(offset: int, s: int, n: int, o: int) -> tuple[int, int]:
    """The outputs ``first <= i < last`` (of ``o``) for which input ``i*s + offset`` lies
    inside an axis of size ``n``; ``last <= first`` when none does."""
    return max(0, -(offset // s)), min(o, (n - 1 - offset) // s + 1)


def _inside_taps(
    x: Array, axes: Ints, kernel: Ints, pads: Pads, out_size: Ints, stride: Ints,
    dilation: Ints, fill: Any,
) -> list[Array]:  # fmt: skip
    """:func:`strided_taps` with ``pad_input=False``: the input is never padded as a whole.

    Why: XLA:CPU writes out a padded copy of the input that the strided slices then read;
    here each tap's pad is of its own output-sized slice and fuses into the consumer, one
    pass over the input (1-D max pooling's values:
    ``jaxconv.kernels.dispatch.max_pool_values_by_taps``).
    """
    out_shape = list(x.shape)
    for axis, o in zip(axes, out_size, strict=True):
        out_shape[axis] = o
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        start, limit, strides = [0] * x.ndim, list(x.shape), [1] * x.ndim
        config = [(0, 0, 0)] * x.ndim
        geometry = zip(axes, tap, pads, out_size, stride, dilation, strict=True)
        for axis, t, (lo, _), o, s, d in geometry:
            offset = t * d - lo
            first, last = _inside_outputs(offset, s, x.shape[axis], o)
            if last <= first:  # the tap lies in the padding for every output
                taps.append(jnp.full(out_shape, fill, x.dtype))
                break
            start[axis], limit[axis] = offset + first * s, offset + (last - 1) * s + 1
            strides[axis] = s
            config[axis] = (first, o - last, 0)
        else:
            inside = lax.slice(x, start, limit, strides)
            taps.append(lax.pad(inside, np.array(fill, dtype=x.dtype), config))
    return taps


def _axis_boxes(n: int, k: int, pad_lo: int, o: int, s: int, d: int) -> list[tuple[int, int]]:
    """One spatial axis's output ranges ``[b0, b1)``: the outputs whose every tap lies inside
    the input (size ``n``), and the ranges before and after it (outputs with a tap in the
    padding); the whole axis where no output has every tap inside."""
    ranges = [_inside_outputs(t * d - pad_lo, s, n, o) for t in range(k)]
    first, last = max(r[0] for r in ranges), min(r[1] for r in ranges)
    if first >= last:
        return [(0, o)]
    return [(b0, b1) for b0, b1 in ((0, first), (first, last), (last, o)) if b1 > b0]


def map_boxes(
    f: Callable[[list[Array]], Array], x: Array, geom: WindowGeometry, fill: Any = 0
) -> Array:
    """``f(taps)`` over the whole output, computed box by box: ``taps`` as from
    :func:`strided_taps` for the windows of ``geom`` over ``x`` (its axes, kernel, stride,
    dilation, output size, and ``geom.padding`` filled with ``fill``; a conv's padding),
    ``f`` elementwise over the output positions (e.g. a weighted sum of the taps). On each
    axis but the array's last the output splits into the range whose windows lie inside the
    input and the ranges before and after it (channels first, the taps stay padded along the
    last axis); each box's taps are slices of a slice of ``x`` (padded only in the boxes
    that reach the padding), and the boxes are put together by concatenation.

    Why: a tap padded inside the fused loop (:func:`strided_taps` with ``pad_input=False``)
    costs a bounds test per element that XLA:CPU did not vectorise across; channels last the
    3x3 depthwise tap sum took twice as long with it as from a padded input. Here the
    interior box, nearly all of the output, has no padding at all; the padded input itself
    is never written out (a large temporary is fresh memory at every call)."""
    axes, kernel, pads, out_size = geom.axes, geom.kernel, geom.padding, geom.out_size
    stride, dilation = geom.stride, geom.dilation
    per_axis = []
    for axis, k, (lo, _), o, s, d in zip(
        axes, kernel, pads, out_size, stride, dilation, strict=True
    ):
        minor = axis == x.ndim - 1  # split there, the concatenation writes short runs
        per_axis.append([(0, o)] if minor else _axis_boxes(x.shape[axis], k, lo, o, s, d))

    def build(j: int, region: list[tuple[int, int]]) -> Array:
        if j == len(axes):
            start, limit = [0] * x.ndim, list(x.shape)
            box_pads, box_out = [], []
            for axis, (b0, b1), k, (lo, _), s, d in zip(
                axes, region, kernel, pads, stride, dilation, strict=True
            ):
                # the box reads inputs p0 ... p1 (of them, those inside x; the rest is
                # padding, on either side or, for a box all in the padding, all of it)
                p0, p1 = b0 * s - lo, (b1 - 1) * s + (k - 1) * d - lo
                n = x.shape[axis]
                start[axis] = min(max(p0, 0), n)
                limit[axis] = max(min(p1 + 1, n), start[axis])
                box_pads.append((start[axis] - p0, p1 + 1 - limit[axis]))
                box_out.append(b1 - b0)
            part = lax.slice(x, start, limit)
            return f(strided_taps(part, axes, kernel, box_pads, box_out, stride, dilation,
                                  fill, pad_input=False))  # fmt: skip
        parts = [build(j + 1, [*region, r]) for r in per_axis[j]]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=axes[j])

    return build(0, [])


def stride_phases(x: Array, axes: Ints, pads: Pads, stride: Ints, fill: Any = 0) -> list[Array]:
    """The ``prod(stride)`` stride phases of ``x`` padded with ``fill`` by ``pads`` along
    ``axes``: phase ``r`` (row-major over the residues) holds the padded elements ``i * s + r``
    along each spatial axis, ``i < q = ceil((size + lo + hi) / s)``; the padding is extended
    with ``fill`` to ``q * s``. Each phase has ``x``'s shape with the spatial sizes ``q``.

    Each spatial axis is viewed as (q, s); the phase axes move in front and ``lax.split``
    cuts the phases apart. Why: this transposes (reverse mode) into ONE concatenate of the
    phases' cotangents (``split``'s transpose) and a pad, where strided slices of the padded
    input transpose into pads with interior padding, which XLA:CPU evaluates, with its bounds
    and parity tests, at every input element.
    """
    config = [(0, 0, 0)] * x.ndim
    rows = []
    for axis, (lo, hi), s in zip(axes, pads, stride, strict=True):
        q = -(-(x.shape[axis] + lo + hi) // s)
        rows.append(q)
        config[axis] = (lo, q * s - x.shape[axis] - lo, 0)
    padded = lax.pad(x, np.array(fill, dtype=x.dtype), config)
    shape, phase_axes, other_axes = [], [], []
    for axis, size in enumerate(x.shape):
        if axis in axes:
            i = axes.index(axis)
            other_axes.append(len(shape))
            phase_axes.append(len(shape) + 1)
            shape += [rows[i], stride[i]]
        else:
            other_axes.append(len(shape))
            shape.append(size)
    rest = tuple(shape[a] for a in other_axes)  # x's axes, spatial sizes q
    count = math.prod(stride)
    phased = padded.reshape(shape).transpose(phase_axes + other_axes).reshape(count, *rest)
    return [p.reshape(rest) for p in lax.split(phased, (1,) * count, 0)]


def phase_taps(
    x: Array,
    axes: Ints,
    kernel: Ints,
    pads: Pads,
    out_size: Ints,
    stride: Ints,
    dilation: Ints | None = None,
    fill: Any = 0,
) -> list[Array]:
    """The same ``prod(kernel)`` taps as :func:`strided_taps`, each a contiguous
    slice of one stride phase of the padded input (:func:`stride_phases`). Tap ``t`` along an
    axis is element ``i * s + t * d = (i + t*d // s) * s + t*d % s``: phase ``t*d % s``, rows
    from ``t*d // s``.

    Why: linear code written this way transposes (reverse mode) into plain pads of each
    phase's cotangent and ONE concatenate of the phases, each phase summing only its own taps
    at a quarter of the size (stride 2 in 2-D).
    """
    dilation = dilation or (1,) * len(axes)
    phases = stride_phases(x, axes, pads, stride, fill)
    taps = []
    for tap in itertools.product(*(range(k) for k in kernel)):
        offsets = [t * d for t, d in zip(tap, dilation, strict=True)]
        residues = [o % s for o, s in zip(offsets, stride, strict=True)]
        phase = int(np.ravel_multi_index(residues, stride))
        start, limit = [0] * x.ndim, list(phases[phase].shape)
        for axis, o, s, n in zip(axes, offsets, stride, out_size, strict=True):
            start[axis], limit[axis] = o // s, o // s + n
        taps.append(lax.slice(phases[phase], start, limit))
    return taps


def window_taps(x: Array, geom: WindowGeometry, fill: Any = 0, phases: bool = False) -> list[Array]:
    """The taps of every pooling window of ``geom`` over ``x`` padded with ``fill`` (the
    user's padding plus the ceil-mode overhang, ``geom.window_padding``): strided slices
    (:func:`strided_taps`), or with ``phases`` contiguous slices of the stride phases
    (:func:`phase_taps`), for linear code whose transpose should be plain pads per phase."""
    taps_of = phase_taps if phases else strided_taps
    return taps_of(x, geom.axes, geom.kernel, geom.window_padding, geom.out_size, geom.stride,
                   geom.dilation, fill)  # fmt: skip


def spatial_constant(geom: WindowGeometry, values: np.ndarray, ndim: int, dtype: Any) -> Array:
    """A NumPy array of the output's spatial shape, as a constant shaped to broadcast against
    an ``ndim`` output in ``geom``'s layout (e.g. trailing C for NHWC, N for CHWN)."""
    shape = [1] * (ndim - geom.axes[0])
    shape[: len(geom.out_size)] = geom.out_size
    return jnp.asarray(values.reshape(shape), dtype=dtype)


def largest_divisor(n: int, at_most: int) -> int:
    """The largest divisor of ``n`` that is at most ``max(at_most, 1)`` (a chunk size that
    splits an axis of ``n`` evenly)."""
    return max(d for d in range(1, min(n, max(at_most, 1)) + 1) if n % d == 0)


def unit_out_size(x_shape: Sequence[int], kernel: Ints, pads: Pads) -> Pair:
    """Stride-1, dilation-1 output (oh, ow) of an NHWC or CHWN input (H, W on axes 1, 2)."""
    return (
        x_shape[1] + sum(pads[0]) - kernel[0] + 1,
        x_shape[2] + sum(pads[1]) - kernel[1] + 1,
    )


def unit_taps(x: Array, kernel: Ints, pads: Pads) -> list[Array]:
    """Stride-1, dilation-1, zero-padded taps of an NHWC or CHWN input: kh*kw arrays,
    (N, oh, ow, C) for NHWC, (C, oh, ow, N) for CHWN."""
    return strided_taps(x, (1, 2), kernel, pads, unit_out_size(x.shape, kernel, pads))


def patch_bytes(x: Array, kernel: Ints, pads: Pads) -> int:
    """Bytes of the patch matrix of an NHWC or CHWN input (N * C * oh * ow * kh * kw)."""
    oh, ow = unit_out_size(x.shape, kernel, pads)
    return x.shape[0] * oh * ow * kernel[0] * kernel[1] * x.shape[3] * x.dtype.itemsize


# --- the chapter's window maps -----------------------------------------------------------------


def window_map(f: Callable[[Array, Array, Array], Array], X: Array, size: Pair) -> Array:
    """``f(window, i, j)`` of every (ph, pw) window of a 2-D ``X``, vmapped over rows and
    columns: (h, w) -> (h - ph + 1, w - pw + 1)."""
    (h, w), (ph, pw) = X.shape, size

    def at(i: Array, j: Array) -> Array:
        return f(lax.dynamic_slice(X, (i, j), (ph, pw)), i, j)  # one window -> a value

    rows, cols = jnp.arange(h - ph + 1), jnp.arange(w - pw + 1)
    # inner vmap over columns, outer over rows: (OH, OW)
    return jax.vmap(jax.vmap(at, in_axes=(None, 0)), in_axes=(0, None))(rows, cols)


@jax.custom_vjp
def corr_windows(X: Array, K: Array) -> Array:
    """(h, w) * (kh, kw) -> (oh, ow): one window sum per output position, vmapped; gradients
    from ``_corr_windows_bwd``."""
    return window_map(lambda win, i, j: jnp.sum(win * K), X, K.shape)


def _corr_windows_fwd(X: Array, K: Array) -> tuple[Array, tuple[Array, Array]]:
    return corr_windows(X, K), (X, K)


def _corr_windows_bwd(res: tuple[Array, Array], dY: Array) -> tuple[Array, Array]:
    """Both gradients are cross-correlations: ``dK = corr2d(X, dY)`` (kh, kw) and
    ``dX = corr2d(pad(dY, k - 1), flip(K))`` (h, w). Small kernels: tap by tap; otherwise
    the same window sums as the forward pass."""
    X, K = res
    (h, w), (kh, kw), (oh, ow) = X.shape, K.shape, dY.shape
    if kh * kw > TAPWISE_MAX_TAPS:
        dK = corr_windows(X, dY)
        dX = corr_windows(jnp.pad(dY, ((kh - 1, kh - 1), (kw - 1, kw - 1))), jnp.flip(K))
        return dX, dK
    taps = strided_taps(X, (0, 1), (kh, kw), ((0, 0), (0, 0)), (oh, ow))
    dK = jnp.stack([jnp.sum(tap * dY) for tap in taps]).reshape(kh, kw)
    dX = sum(
        jnp.pad(dY * K[a, b], ((a, h - oh - a), (b, w - ow - b)))
        for a, b in itertools.product(range(kh), range(kw))
    )
    return dX, dK


corr_windows.defvjp(_corr_windows_fwd, _corr_windows_bwd)


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def pool_windows(X: Array, size: Pair, mode: str) -> Array:
    """The chapter's pool2d: max or mean of each (ph, pw) window. Its gradient is JAX's own
    (ties of a max share the gradient equally, as ``jnp.max``'s rule) but computed as window
    maps (``_pool_windows_bwd``)."""
    reduce = jnp.max if mode == "max" else jnp.mean
    return window_map(lambda win, i, j: reduce(win), X, size)


def _pool_windows_fwd(X: Array, size: Pair, mode: str) -> tuple[Array, tuple[Array, ...]]:
    Y = pool_windows(X, size, mode)
    if mode == "avg":
        return Y, (X,)
    # how many elements of each window equal its max (0 for a NaN max: NaN gradients)
    counts = window_map(lambda win, i, j: jnp.sum(win == Y[i, j]).astype(X.dtype), X, size)
    return Y, (X, Y, counts)


def _pool_windows_bwd(size: Pair, mode: str, res: tuple[Array, ...], dY: Array) -> tuple[Array]:
    """dX[p] = sum over the windows containing p of dY / n (avg), or of dY / count where p
    equals the window's max (max): a window sum over dY padded by the window size - 1, the
    window flipped so that entry (u, v) is the window whose tap (ph-1-u, pw-1-v) is p."""
    ph, pw = size
    pads = ((ph - 1, ph - 1), (pw - 1, pw - 1))
    if mode == "avg":
        share = jnp.pad(dY / np.array(ph * pw, dY.dtype), pads)
        return (window_map(lambda win, i, j: jnp.sum(win), share, size),)
    X, Y, counts = res
    share = jnp.pad(dY / counts, pads)  # (h + ph - 1, w + pw - 1)
    maxes = jnp.pad(Y, pads, constant_values=np.nan)  # padding equals nothing
    nan_max = jnp.pad(counts == 0, pads)  # as jnp.max's rule: NaN for all of such a window

    def grad_at(share_win: Array, i: Array, j: Array) -> Array:
        max_win = lax.dynamic_slice(maxes, (i, j), (ph, pw))
        nan_win = lax.dynamic_slice(nan_max, (i, j), (ph, pw))
        mine = jnp.where(max_win == X[i, j], share_win, 0)
        return jnp.sum(jnp.where(nan_win, np.array(np.nan, X.dtype), mine))

    return (window_map(grad_at, share, size),)


pool_windows.defvjp(_pool_windows_fwd, _pool_windows_bwd)
