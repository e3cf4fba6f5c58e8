"""Adaptive average and max pooling in 1, 2 and 3 dimensions, as ``torch.nn.functional``'s.

Adaptive pooling fixes the output size and derives the windows from it. PyTorch's bins, per
spatial axis of input length ``L`` and output length ``out``: output ``i`` pools the input range
``[floor(i * L / out), ceil((i + 1) * L / out))``. Bins overlap when ``out`` does not divide
``L`` and repeat elements when ``out > L``; an ``out`` of 0 gives an empty axis.

Everything geometric (the bins, the gather tables, the divisors, the flat indices) is NumPy on
static ints, computed before tracing. The traced program gathers each output's window into a
last axis of ``K`` taps (``K`` the product of the largest bin per axis; taps past a short bin
are masked), then reduces it. Max pooling picks its element as PyTorch's CPU kernel does
(scanning the window in row-major order, it takes a value greater than the best so far or a
NaN: so the first maximum, or the last NaN) and reads the value back with a gather, so the
gradient reaches exactly that element, in reverse and forward mode, as PyTorch's index-based
backward does.

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

from jaxconv._args import as_array, as_int, check_bool, check_floating

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


#: Layout names per number of spatial axes: (channels first, channels last).
LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def _channels_last(layout: Any, nd: int) -> bool:
    """Whether ``layout`` is the channels-last name for ``nd`` spatial axes (ValueError unless
    it is one of the two names of :data:`LAYOUTS`)."""
    if layout not in LAYOUTS[nd]:
        raise ValueError(f"layout must be one of {LAYOUTS[nd]}, got {layout!r}")
    return layout == LAYOUTS[nd][1]


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


@functools.lru_cache(maxsize=256)
def _tables(spatial: tuple[int, ...], out: tuple[int, ...]) -> tuple:
    """Gather tables for one geometry (cached: they depend on static ints only).

    Returns ``(axis_taps, mask, flat, counts)``: per axis an (out_j, k_j) int array of input
    positions (clipped into range); the (prod(out), K) tap mask; the (prod(out), K) flat index
    of each tap in the input plane (row-major, as torch's indices); and the (prod(out),) number
    of real taps per output (the average's divisor).
    """
    axis_taps, axis_masks = [], []
    for n, o in zip(spatial, out, strict=True):
        start, end = adaptive_bins(n, o)
        k = int((end - start).max()) if o else 1
        taps = start[:, None] + np.arange(k)[None, :]
        axis_masks.append(taps < end[:, None])
        axis_taps.append(np.minimum(taps, n - 1))
    nd = len(spatial)
    # (o0, k0, o1, k1, ...) -> (o0, o1, ..., k0, k1, ...) -> (prod(out), K)
    order = [2 * j for j in range(nd)] + [2 * j + 1 for j in range(nd)]
    mask = functools.reduce(np.multiply.outer, axis_masks).transpose(order)
    strides = np.cumprod((1,) + spatial[:0:-1])[::-1]  # row-major strides of the plane
    flat = functools.reduce(
        np.add.outer, [t * s for t, s in zip(axis_taps, strides, strict=True)]
    ).transpose(order)
    n_out, n_taps = int(np.prod(out)), int(np.prod([t.shape[1] for t in axis_taps]))
    mask = mask.reshape(n_out, n_taps)
    return tuple(axis_taps), mask, flat.reshape(n_out, n_taps), mask.sum(axis=1)


def _windows(x: Array, spatial: tuple[int, ...], out: tuple[int, ...]) -> Array:
    """(N, C, *spatial) -> (N, C, prod(out), K): each output's window as a last axis."""
    axis_taps, mask, _, _ = _tables(spatial, out)
    for j, taps in enumerate(axis_taps):
        axis = 2 + 2 * j  # earlier axes are already split into (out, taps)
        if not np.array_equal(taps.reshape(-1), np.arange(x.shape[axis])):
            # Overlapping or uneven bins: gather. (When out divides the length, the bins tile
            # the axis and a reshape alone splits it, with no gather or scatter-add in the
            # gradient: global pooling and the networks' pools take that path.)
            x = jnp.take(x, taps.reshape(-1), axis=axis, mode="clip")  # tables are in range
        x = x.reshape(x.shape[:axis] + taps.shape + x.shape[axis + 1 :])
    nd = len(spatial)
    order = [0, 1] + [2 + 2 * j for j in range(nd)] + [3 + 2 * j for j in range(nd)]
    return x.transpose(order).reshape(x.shape[:2] + mask.shape)


@functools.partial(jax.jit, static_argnums=(1,))
def _avg(x: Array, out: tuple[int, ...]) -> Array:
    spatial = x.shape[2:]
    _, mask, _, counts = _tables(spatial, out)
    acc = jnp.promote_types(x.dtype, jnp.float32)  # float16/bfloat16 sum in float32
    w = _windows(x.astype(acc), spatial, out)  # (N, C, prod(out), K)
    sums = jnp.where(mask, w, 0).sum(axis=-1)
    y = sums / counts.astype(acc)
    return y.astype(x.dtype).reshape(x.shape[:2] + out)


@functools.partial(jax.jit, static_argnums=(1,))
def _max(x: Array, out: tuple[int, ...]) -> tuple[Array, Array]:
    spatial = x.shape[2:]
    _, mask, flat, _ = _tables(spatial, out)
    w = _windows(x, spatial, out)  # (N, C, prod(out), K)
    w_masked = jnp.where(mask, w, -jnp.inf)
    # torch's scan: take a tap if it is greater than the best so far or NaN. So a window with a
    # NaN picks its last NaN, any other its first maximum (only real taps; an all -inf window
    # its first tap).
    is_nan = jnp.isnan(w_masked)
    last_nan = mask.shape[1] - 1 - jnp.argmax(is_nan[..., ::-1], axis=-1)
    best = jnp.max(jnp.where(is_nan, -jnp.inf, w_masked), axis=-1, keepdims=True)
    first_max = jnp.argmax((w_masked == best) & mask, axis=-1)
    tap = jnp.where(is_nan.any(axis=-1), last_nan, first_max)  # (N, C, prod(out))
    # Read the value back through the tap: its gradient goes to that element only.
    y = jnp.take_along_axis(w, tap[..., None], axis=-1)[..., 0]
    flat_b = jnp.broadcast_to(jnp.asarray(flat, dtype=jnp.int32), w.shape)
    index = jnp.take_along_axis(flat_b, tap[..., None], axis=-1)[..., 0]
    shape = x.shape[:2] + out
    return y.reshape(shape), index.reshape(shape)


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
