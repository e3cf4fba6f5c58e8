"""Adaptive average and max pooling in 1, 2 and 3 dimensions, as ``torch.nn.functional``'s.

Adaptive pooling fixes the output size and derives the windows from it. PyTorch's bins, per
spatial axis of input length ``L`` and output length ``out``: output ``i`` pools the input range
``[floor(i * L / out), ceil((i + 1) * L / out))``. Bins overlap when ``out`` does not divide
``L`` and repeat elements when ``out > L``; an ``out`` of 0 gives an empty axis.

Everything geometric (the bins, their starts and widths) is NumPy on static ints, computed
before tracing. The bins are a Cartesian product of per-axis bins, so both poolings are
separable and run one spatial axis at a time.

The average sums each bin and divides by its width, so NaN and infinities stay inside their
bins. A tiled axis (``out`` dividing ``L``) is split by a reshape, one reduction per bin.
Otherwise narrow bins sum the taps of a window (static slices) in order for every window
start, as torch's loop sums a bin, and a bin reads the running sum at its start after as many
taps as it is wide (widths take at most two values per axis). Wider bins gather their
elements, tap by tap or all at once; their derivative is written as each element added to its
bins, so the backward is a gather of each element's (at most two, unless ``out > L``) bins,
not the scatter-add that is a gather's own transpose (slow on CPU), nor the slices' one pad
per tap (``jaxconv.kernels.dispatch`` has the widths and measurements).

Max pooling scans the taps (static slices) the same way. It picks its element as
PyTorch's CPU kernel does (scanning the window in row-major order, it takes a value greater
than the best so far or a NaN: so the first maximum, or the last NaN); scanning the last axis
first and each earlier axis after gives that element's flat index. The value is read back
through the index with one gather per output, so the gradient reaches exactly that element,
in reverse and forward mode, as PyTorch's index-based backward does.

Inputs are channels-first by default, ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``;
``layout="NLC"``, ``"NHWC"`` or ``"NDHWC"`` takes and returns channels last.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._args import (
    LAYOUTS_BY_NDIM,
    as_array,
    as_int,
    check_bool,
    check_floating,
    check_layout,
)
from jaxconv.kernels.dispatch import adaptive_avg_path, stores_max_pool_selection
from jaxconv.kernels.stored import stored

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "adaptive_bins",
    "LAYOUTS",
]

Array = jax.Array


def adaptive_bins(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """PyTorch's adaptive bins on one axis: int arrays ``start``, ``end`` of length ``out``,
    ``start[i] = floor(i * length / out)``, ``end[i] = ceil((i + 1) * length / out)``."""
    i = np.arange(out, dtype=np.int64)
    start = (i * length) // out
    end = -((-(i + 1) * length) // out)
    return start, end


def _output_size(output_size: Any, spatial: tuple[int, ...], op: str) -> tuple[int, ...]:
    """Normalise ``output_size`` (an int, or a sequence of one int or None per spatial axis;
    None keeps that axis' size; 1-D takes no None, as torch) to a tuple of ints >= 0."""
    nd = len(spatial)
    if isinstance(output_size, Sequence) and not isinstance(output_size, str):
        entries = list(output_size)
        if len(entries) != nd:
            raise ValueError(
                f"{op}: output_size must be an int or a sequence of {nd} entries, "
                f"got {output_size!r}"
            )
    else:
        entries = [output_size] * nd
    sizes = []
    for j, value in enumerate(entries):
        if value is None and nd > 1:
            sizes.append(spatial[j])
            continue
        name = f"output_size[{j}]" if nd > 1 else "output_size"
        size = as_int(value, name) if value is not None else None
        if size is None:
            raise TypeError(f"{op}: output_size must be an int (None only in 2-D and 3-D)")
        if size < 0:
            raise ValueError(f"{op}: {name} must be >= 0, got {size}")
        sizes.append(size)
    return tuple(sizes)


#: The layouts adaptive pooling takes per number of spatial axes, read off the shared table
#: :data:`jaxconv._args.LAYOUTS_BY_NDIM`: (channels first, channels last), batch first. The
#: batch-last "CHWN" is not taken: the pooling assumes the batch leads.
LAYOUTS: dict[int, tuple[str, str]] = {
    nd: tuple(name for name in names if name[0] == "N")  # type: ignore[misc]
    for nd, names in LAYOUTS_BY_NDIM.items()
}


def _channels_last(layout: Any, nd: int) -> bool:
    """Whether ``layout`` is the channels-last name for ``nd`` spatial axes (ValueError, listing
    the two names of :data:`LAYOUTS`, unless it is one of them)."""
    return check_layout(layout, LAYOUTS[nd]) == LAYOUTS[nd][1]


def _check_input(x: Any, nd: int, op: str, empty_channels_ok: bool, last: bool) -> Array:
    """Validate rank (nd + 1 unbatched, nd + 2 batched), dtype and non-empty axes; return
    ``x`` channels-first."""
    x = as_array(x, "input")
    if np.ndim(x) not in (nd + 1, nd + 2):
        raise ValueError(
            f"{op}: input must have rank {nd + 1} (C, *spatial) or {nd + 2} (N, C, *spatial), "
            f"got shape {tuple(np.shape(x))}"
        )
    check_floating(x, "input")
    x = jnp.moveaxis(jnp.asarray(x), -1, -nd - 1) if last else x
    non_batch = x.shape[-nd:] if empty_channels_ok else x.shape[-nd - 1 :]
    if min(non_batch) == 0:
        what = "spatial" if empty_channels_ok else "channel and spatial"
        raise ValueError(f"{op}: input must have non-empty {what} axes, got shape {x.shape}")
    return jnp.asarray(x)


def _divides(length: int, out: int) -> bool:
    """Whether the bins of ``length`` into ``out`` tile the axis (a reshape splits it)."""
    return out > 0 and length % out == 0


def _bin_widths(length: int, out: int) -> np.ndarray:
    """(out,) widths of the bins of an axis of ``length``."""
    start, end = adaptive_bins(length, out)
    return end - start


def _taps(v: Array, axis: int, out: int, k: int, fill: float) -> list[Array]:
    """The ``k`` taps of axis ``axis`` as static slices: tap ``t`` holds, per window start,
    the element ``t`` places further. Tiled bins: windows at the bin starts, split by a
    reshape. Otherwise: a window at every start, the axis padded by ``k - 1`` trailing
    ``fill`` (read only by windows that start too late to be a bin's)."""
    length = v.shape[axis]
    if _divides(length, out):
        v = v.reshape(v.shape[:axis] + (out, k) + v.shape[axis + 1 :])
        return [jax.lax.index_in_dim(v, t, axis + 1, keepdims=False) for t in range(k)]
    pad = [(0, 0, 0)] * v.ndim
    pad[axis] = (0, k - 1, 0)
    v = jax.lax.pad(v, jnp.asarray(fill, v.dtype), pad)
    return [jax.lax.slice_in_dim(v, t, t + length, axis=axis) for t in range(k)]


def _read_bins(states: dict[int, Array], axis: int, length: int, out: int) -> Array:
    """(..., length, ...) -> (..., out, ...): bin ``i`` of ``axis`` read at its start from
    ``states[width_i]`` (a scan, per window start, after ``width_i`` taps). Widths take at
    most two values per axis; each read is a gather of ``out`` rows at static starts."""
    start, end = adaptive_bins(length, out)
    widths = end - start
    result = None
    for w in np.unique(widths):
        read = jnp.take(states[int(w)], start, axis=axis, mode="clip")  # starts in range
        if result is None:
            result = read
            continue
        sel = jnp.asarray(widths == w).reshape((-1,) + (1,) * (read.ndim - axis - 1))
        result = jnp.where(sel, read, result)
    return result


def _bin_index(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """(out, k) int ``index`` of the elements of each bin (``k`` the widest bin; a narrower
    bin's row is completed by in-range repeats) and the (out, k) bool ``mask`` of its real
    elements."""
    start, end = adaptive_bins(length, out)
    widths = end - start
    taps = np.arange(int(widths.max()))
    index = np.minimum(start[:, None] + taps, length - 1)
    return index, taps < widths[:, None]


def _element_bins(length: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """(length, m) int ``bins`` holding each element (``m`` the most bins any element is in:
    2 when ``out <= length``; a row completed by in-range repeats) and the (length, m) bool
    ``mask`` of the real ones. Bin starts and ends never decrease, so an element's bins are a
    run: from the first that ends after it to the last that starts at or before it."""
    start, end = adaptive_bins(length, out)
    element = np.arange(length)
    first = np.searchsorted(end, element, side="right")
    stop = np.searchsorted(start, element, side="right")
    bins = first[:, None] + np.arange(int((stop - first).max()))
    return np.minimum(bins, out - 1), bins < stop[:, None]


def _trailing(a: np.ndarray, ndim: int) -> Array:
    """``a`` (its axes standing for axes 2, 3, ... of an array of rank ``ndim``) with the
    singleton axes appended that make it broadcast against that array."""
    return jnp.asarray(a).reshape(a.shape + (1,) * (ndim - 2 - a.ndim))


def _tap_sums(x: Array, out: int) -> Array:
    """(N, C, L, ...) -> (N, C, out, ...) bin sums, tap by tap: tap ``t`` reads element ``t``
    of every bin (one gather of ``out`` rows), masked where a bin is narrower; the taps are
    added in order, as torch's loop sums a bin."""
    index, mask = _bin_index(x.shape[2], out)
    total = None
    for t in range(index.shape[1]):
        tap = jnp.take(x, jnp.asarray(index[:, t]), axis=2, mode="clip")  # in range
        tap = jnp.where(_trailing(mask[:, t], x.ndim), tap, 0)
        total = tap if total is None else total + tap
    return total


def _window_sums(x: Array, out: int) -> Array:
    """The bin sums of :func:`_tap_sums` as one gather of every bin's elements, masked, and
    one reduction over them."""
    index, mask = _bin_index(x.shape[2], out)
    windows = jnp.take(x, jnp.asarray(index.ravel()), axis=2, mode="clip")  # in range
    windows = windows.reshape(x.shape[:2] + index.shape + x.shape[3:])
    return jnp.sum(jnp.where(_trailing(mask, x.ndim + 1), windows, 0), axis=3)


def _sums_to_bins(t: Array, out: int) -> Array:
    """The bin sums of a tangent written as what they are linear in: each element added to
    the bins that hold it (a scatter-add). Its transpose, the backward, is then a gather:
    each element reads the cotangents of its at most ``m`` bins."""
    bins, mask = _element_bins(t.shape[2], out)
    values = jnp.where(_trailing(mask, t.ndim + 1), jnp.expand_dims(t, 3), 0)
    return jnp.zeros(t.shape[:2] + (out,) + t.shape[3:], t.dtype).at[:, :, bins].add(values)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _gathered_sums(x: Array, out: int, path: str) -> Array:
    """(N, C, L, ...) -> (N, C, out, ...): the sum of each bin of axis 2, by gathers
    (``path`` "tap_gathers": :func:`_tap_sums`; "window_gather": :func:`_window_sums`), in
    reverse and forward mode. The derivative is :func:`_sums_to_bins`, so the backward
    gathers each element's bins; JAX's own transpose of the forward's gathers is a
    scatter-add of strided rows, which XLA:CPU runs slowly."""
    return _tap_sums(x, out) if path == "tap_gathers" else _window_sums(x, out)


@_gathered_sums.defjvp
def _gathered_sums_jvp(out: int, path: str, primals: tuple[Array], tangents: tuple[Array]):
    (x,), (t,) = primals, tangents
    # Under differentiation the sums end in a reduction: XLA:CPU fuses the taps' chain of
    # adds into the backward's gather that reads them (through the loss's elementwise
    # gradient), recomputing every bin once per element that reads it.
    return _window_sums(x, out), _sums_to_bins(t, out)


def _sliced_means(x: Array, out: int) -> Array:
    """(N, C, L, ...) -> (N, C, out, ...): the mean of each bin of axis 2 from static slices.
    The taps of every window are summed in order, as torch's loop sums a bin; a bin reads the
    running sum after as many taps as it is wide, divided by that width. Its backward (JAX's)
    is a pad per tap and the reads' scatter-add of ``out`` rows: cheap for narrow bins."""
    length = x.shape[2]
    widths = _bin_widths(length, out)
    sums, states = None, {}
    for t, tap in enumerate(_taps(x, 2, out, int(widths.max()), 0.0)):
        sums = tap if sums is None else sums + tap
        if t + 1 in widths:
            states[t + 1] = sums / (t + 1)
    return _read_bins(states, 2, length, out)


def _avg_axis(x: Array, out: int) -> Array:
    """Average the bins of axis 2 of ``x`` and move the result last.

    A tiled axis (``out`` dividing its length) is split by a reshape and each bin summed by
    one reduction. Otherwise, by :func:`~jaxconv.kernels.dispatch.adaptive_avg_path`, narrow
    bins by :func:`_sliced_means` and wider ones by :func:`_gathered_sums` divided by the
    widths. Every way keeps NaN and infinities inside their bins."""
    length = x.shape[2]
    if _divides(length, out):
        # Tiled bins are disjoint: a reduction over each bin keeps NaN and infinities inside
        # it, and its derivative is a broadcast. One tap per element of a bin would transpose
        # into one pad per tap (global pooling: one per input element).
        k = length // out
        tiles = x.reshape(x.shape[:2] + (out, k) + x.shape[3:])
        return jnp.moveaxis(jnp.sum(tiles, axis=3) / k, 2, -1)
    widths = _bin_widths(length, out)
    path = adaptive_avg_path(int(widths.max()))
    if path == "slices":
        return jnp.moveaxis(_sliced_means(x, out), 2, -1)
    means = _gathered_sums(x, out, path) / _trailing(widths.astype(x.dtype), x.ndim)
    return jnp.moveaxis(means, 2, -1)


def _separable_avg(x: Array, out: tuple[int, ...]) -> Array:
    """(N, C, *spatial) -> (N, C, *out): one averaging per spatial axis. Each call pools the
    leading spatial axis and appends its result last, so after all axes the order is back."""
    for o in out:
        x = _avg_axis(x, o)
    return x


@functools.partial(jax.jit, static_argnums=(1,))
def _avg(x: Array, out: tuple[int, ...]) -> Array:
    if 0 in out:
        return jnp.zeros(x.shape[:2] + out, x.dtype)
    acc = jnp.promote_types(x.dtype, jnp.float32)  # float16/bfloat16 sum in float32
    return _separable_avg(x.astype(acc), out).astype(x.dtype)


def _argmax_axis(v: Array, idx: Array, axis: int, out: int) -> tuple[Array, Array]:
    """Per bin of ``axis``: the value and flat index torch's scan takes (a greater value or a
    NaN replaces the best so far: the first maximum, or the last NaN).

    Scanning the taps of every window in order reproduces that rule on one axis (the ``-inf``
    padding is never taken); a bin reads the scan after as many taps as it is wide."""
    length = v.shape[axis]
    widths = _bin_widths(length, out)
    k = int(widths.max())
    v_taps, i_taps = _taps(v, axis, out, k, -np.inf), _taps(idx, axis, out, k, 0)
    best, best_i = v_taps[0], i_taps[0]
    states_v, states_i = {}, {}
    for t in range(k):
        if t:
            take = (v_taps[t] > best) | jnp.isnan(v_taps[t])
            best, best_i = jnp.where(take, v_taps[t], best), jnp.where(take, i_taps[t], best_i)
        if t + 1 in widths:
            states_v[t + 1], states_i[t + 1] = best, best_i
    if _divides(length, out):
        return best, best_i
    return _read_bins(states_v, axis, length, out), _read_bins(states_i, axis, length, out)


def _max_index(x: Array, out: tuple[int, ...]) -> Array:
    """(N, C, *spatial) -> (N, C, *out) int32 flat index (row-major in the channel plane) of
    the element torch takes. Separable: reducing the last axis first, then each earlier one,
    picks the row-major first maximum (first row holding the maximum, first in that row) or
    the row-major last NaN, torch's scan over the whole box."""
    spatial = x.shape[2:]
    flat = jnp.arange(int(np.prod(spatial)), dtype=jnp.int32).reshape(spatial)
    v, idx = x, jnp.broadcast_to(flat, x.shape)
    for j in reversed(range(len(spatial))):
        v, idx = _argmax_axis(v, idx, 2 + j, out[j])
    return idx


@functools.partial(jax.jit, static_argnums=(1,))
def _max(x: Array, out: tuple[int, ...]) -> tuple[Array, Array]:
    shape = x.shape[:2] + out
    if 0 in out:
        return jnp.zeros(shape, x.dtype), jnp.zeros(shape, jnp.int32)
    index = _max_index(jax.lax.stop_gradient(x), out)
    if stores_max_pool_selection():
        # XLA:CPU otherwise fuses the index's scan into every gather that reads it (the
        # value's, and the backward's scatter): the 1-D forward+backward under a loss on the
        # output took 11x as long (docs/BENCHMARKS.md)
        index = stored(index)
    # Read the value back through the index: its gradient goes to that element only, as
    # torch's index-based backward, and the scatter-add of the backward is one per output.
    planes = x.reshape(x.shape[:2] + (int(np.prod(x.shape[2:])),))  # (N, C, prod(spatial))
    flat_index = index.reshape(x.shape[:2] + (int(np.prod(out)),))  # (N, C, prod(out))
    y = jnp.take_along_axis(planes, flat_index, axis=-1, mode="clip")  # indices in range
    return y.reshape(shape), index


def _adaptive(
    x: Any, output_size: Any, nd: int, op: str, kind: str, return_indices: Any, layout: Any
):
    """Validate, make the input batched and channels-first, pool, and undo both."""
    last = _channels_last(layout, nd)
    x = _check_input(x, nd, op, empty_channels_ok=kind == "avg", last=last)
    out = _output_size(output_size, tuple(x.shape[-nd:]), op)
    with_indices = kind == "max" and check_bool(return_indices, "return_indices")
    unbatched = x.ndim == nd + 1
    xb = x[None] if unbatched else x

    def strip(a: Array) -> Array:
        a = a[0] if unbatched else a
        return jnp.moveaxis(a, -nd - 1, -1) if last else a

    if kind == "avg":
        return strip(_avg(xb, out))
    y, index = _max(xb, out)
    if with_indices:
        return strip(y), strip(index)
    return strip(y)


_DOC_AVG = """{nd}-D adaptive average pooling, as ``torch.nn.functional.adaptive_avg_pool{nd}d``.

    Args:
      input: (N, C, {sp}) or unbatched (C, {sp}); real floating dtype (float16/bfloat16 are
        summed in float32).
      output_size: {osz}; entries >= 0.
      layout: "{first}" (channels first, default) or "{last}" (channels last: input and
        output with C as the last axis).

    Returns:
      (N, C, *output_size) (unbatched: (C, *output_size)). Output ``i`` of an axis of length
      ``L`` averages input ``[floor(i * L / out), ceil((i + 1) * L / out))``.

    Raises:
      TypeError: non-floating input; non-int output_size.
      ValueError: wrong rank; an unknown layout; an empty spatial axis; a negative output
        size or the wrong number of entries.
    """

_DOC_MAX = """{nd}-D adaptive max pooling, as ``torch.nn.functional.adaptive_max_pool{nd}d``.

    Args:
      input: (N, C, {sp}) or unbatched (C, {sp}); real floating dtype.
      output_size: {osz}; entries >= 0.
      return_indices: also return, per output, the flat index (row-major, within its channel's
        unpadded input plane) of the element taken, int32, as torch's indices.
      layout: "{first}" (channels first, default) or "{last}" (channels last: input, output
        and indices with C as the last axis; indices still count within a channel's plane,
        row-major over the spatial axes).

    Returns:
      (N, C, *output_size) (unbatched: (C, *output_size)), and the indices of that shape if
      ``return_indices``. Bins as in adaptive average pooling; within a bin the first maximum in
      row-major order, or the last NaN if it holds any (torch's rule). The gradient goes to
      that element only.

    Raises:
      TypeError: non-floating input; non-int output_size; non-bool return_indices.
      ValueError: wrong rank; an unknown layout; an empty channel or spatial axis; a
        negative output size or the wrong number of entries.
    """

_SPATIAL = {1: "L", 2: "H, W", 3: "D, H, W"}
_OSZ = {
    1: "an int or a 1-sequence",
    2: "an int or (oh, ow); None keeps that axis' input size",
    3: "an int or (od, oh, ow); None keeps that axis' input size",
}


def _document(f: Any, template: str, nd: int) -> Any:
    first, last = LAYOUTS[nd]
    f.__doc__ = template.format(nd=nd, sp=_SPATIAL[nd], osz=_OSZ[nd], first=first, last=last)
    return f


def adaptive_avg_pool1d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCL",
) -> Array:
    return _adaptive(input, output_size, 1, "adaptive_avg_pool1d", "avg", False, layout)


def adaptive_avg_pool2d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCHW",
) -> Array:
    return _adaptive(input, output_size, 2, "adaptive_avg_pool2d", "avg", False, layout)


def adaptive_avg_pool3d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCDHW",
) -> Array:
    return _adaptive(input, output_size, 3, "adaptive_avg_pool3d", "avg", False, layout)


def adaptive_max_pool1d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCL",
):
    return _adaptive(input, output_size, 1, "adaptive_max_pool1d", "max", return_indices, layout)


def adaptive_max_pool2d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCHW",
):
    return _adaptive(input, output_size, 2, "adaptive_max_pool2d", "max", return_indices, layout)


def adaptive_max_pool3d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCDHW",
):
    return _adaptive(input, output_size, 3, "adaptive_max_pool3d", "max", return_indices, layout)


for _nd, _f in enumerate((adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d), 1):
    _document(_f, _DOC_AVG, _nd)
for _nd, _f in enumerate((adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d), 1):
    _document(_f, _DOC_MAX, _nd)
del _nd, _f
