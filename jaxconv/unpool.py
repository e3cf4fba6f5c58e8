"""Max unpooling in 1-D, 2-D and 3-D, as ``torch.nn.functional.max_unpool{1,2,3}d``.

The partial inverse of max pooling: every input value is written at the flat position its
index names in its (zero-filled) output channel plane; everything else is 0. The indices are
those ``max_pool*d(..., return_indices=True)`` gives: flat per channel plane of the *output*
(``h * W + w`` in 2-D), whatever the layout.

Jittable, no loop over elements. Duplicate indices: torch's CPU kernel writes the plane's
inputs in order, so the last one (in flat order over the input plane) wins; jaxconv keeps
exactly that value, deterministically (a scatter-max of input positions picks the winner; the
losers are dropped and the values go out in one scatter with unique indices). Derivatives are
those of that function: forward mode equals torch's forward mode (the tangent unpooled the same
way, the last duplicate winning); reverse mode is one gather of the output gradient at the
indices, where a duplicate that lost gets 0 and torch's backward (a gather at every index, not
the adjoint of its own forward mode) gives each duplicate the gradient of the position they
share. Without duplicates (e.g. max pooling with stride >= kernel) all agree.

Out-of-range indices: torch raises at run time. jaxconv checks concrete indices and raises a
ValueError; under ``jax.jit`` the indices are not known before tracing, so an out-of-range
index is dropped (its value is written nowhere).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._args import (
    LAYOUT_KERNELS,
    Ints,
    as_array,
    as_int,
    check_floating,
    check_layout,
    check_rank,
    layout_axes,
    padding_sides,
    positive_tuple,
)

Array = jax.Array

__all__ = ["max_unpool1d", "max_unpool2d", "max_unpool3d"]

#: The layouts of each dimension, from the shared table: channels-first (the default, first)
#: and channels-last, batch first.
UNPOOL_LAYOUTS = {
    n: tuple(name for name in LAYOUT_KERNELS if len(name) == n + 2 and name[0] == "N")
    for n in (1, 2, 3)
}


def default_output_size(in_size: Ints, kernel: Ints, stride: Ints, padding: Ints) -> Ints:
    """The output size that inverts max pooling's floor rule: ``(L - 1) * s - 2 * p + k``."""
    return tuple(
        (n - 1) * s - 2 * p + k for n, k, s, p in zip(in_size, kernel, stride, padding, strict=True)
    )


def unpool_output_size(
    in_size: Ints, kernel: Ints, stride: Ints, padding: Ints, output_size: Any
) -> Ints:
    """torch's ``_unpool_output_size``: the default, or ``output_size`` (n or n + 2 entries,
    the leading two dropped) with each entry strictly between ``default - s`` and
    ``default + s``; a size of 0 gives an empty axis, as in PyTorch."""
    n = len(kernel)
    default = default_output_size(in_size, kernel, stride, padding)
    if output_size is None:
        size = default
    else:
        if not isinstance(output_size, Sequence) or isinstance(output_size, str):
            raise TypeError(
                f"output_size must be None or a sequence of {n} or {n + 2} ints, "
                f"got {output_size!r}"
            )
        values = tuple(output_size)
        if len(values) == n + 2:
            values = values[2:]
        if len(values) != n:
            raise ValueError(
                f"output_size must have {n} or {n + 2} elements, got {len(values)}: {output_size!r}"
            )
        size = tuple(as_int(v, f"output_size[{i}]") for i, v in enumerate(values))
        for d in range(n):
            lo, hi = default[d] - stride[d], default[d] + stride[d]
            if not lo < size[d] < hi:
                raise ValueError(
                    f"output_size {size} is invalid: entry {d} must be strictly between "
                    f"{lo} and {hi} (the default {default[d]} -/+ stride {stride[d]})"
                )
    if min(size) < 0:
        raise ValueError(
            f"max unpooling output size would be negative: {size} (input {in_size}, "
            f"kernel_size {kernel}, stride {stride}, padding {padding})"
        )
    return size


def _max_unpool(
    n: int,
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    output_size: Any,
    layout: Any,
) -> Array:
    """Validate an ``n``-D max unpooling and run it (channels-first, batched, inside)."""
    layout = check_layout(layout, UNPOOL_LAYOUTS[n])
    x = as_array(input, "input")
    check_rank(x, "input", (n + 1, n + 2))
    check_floating(x, "input")
    idx = as_array(indices, "indices")
    if not jnp.issubdtype(idx.dtype, jnp.integer):
        raise TypeError(f"indices must have an integer dtype, got {idx.dtype}")
    if tuple(idx.shape) != tuple(x.shape):
        raise ValueError(
            f"indices must have the shape of input {tuple(x.shape)}, got {tuple(idx.shape)}"
        )
    batched = x.ndim == n + 2
    channel, axes = layout_axes(layout, batched)
    non_batch = x.shape[1:] if batched else x.shape
    if min(non_batch) == 0:
        raise ValueError(
            f"input must have non-empty dimensions except the batch, got shape {x.shape}"
        )
    kernel = positive_tuple(kernel_size, n, "kernel_size")
    strides = kernel if stride is None else positive_tuple(stride, n, "stride")
    pads = padding_sides(padding, n, "padding")
    if any(lo != hi for lo, hi in pads):
        raise TypeError(f"padding must be an int or {n} ints (symmetric), got {padding!r}")
    in_size = tuple(int(x.shape[a]) for a in axes)
    size = unpool_output_size(in_size, kernel, strides, tuple(lo for lo, _ in pads), output_size)
    plane = int(np.prod(size))
    if plane == 0:  # an empty output plane, as torch gives it (no index can land)
        x = jnp.asarray(x)
        shape = list(x.shape)
        for a, s in zip(axes, size, strict=True):
            shape[a] = s
        return jnp.zeros(shape, x.dtype)
    if not isinstance(idx, jax.core.Tracer):  # concrete indices: refuse what torch refuses
        values = np.asarray(idx)
        if values.size and (values.min() < 0 or values.max() >= plane):
            bad = values.min() if values.min() < 0 else values.max()
            raise ValueError(
                f"indices must lie in [0, {plane}) (output planes of size {size}), found {bad}"
            )
    x, idx = jnp.asarray(x), jnp.asarray(idx)
    if not batched:
        x, idx, channel = x[None], idx[None], channel + 1
    # channels-first: (N, C, *in_size)
    x, idx = jnp.moveaxis(x, channel, 1), jnp.moveaxis(idx, channel, 1)
    y = _unpool_planes(x, idx, size)
    y = jnp.moveaxis(y, 1, channel)
    return y if batched else y[0]


#: The most elements an int32 position may count: above it, positions stay per plane.
_INT32_POSITIONS = 2**31 - 1


@partial(jax.jit, static_argnums=2)
def _unpool_planes(x: Array, idx: Array, size: Ints) -> Array:
    """(N, C, *in) values and flat indices -> (N, C, *size): each plane's values at their
    indices, the last of equal indices winning, 0 elsewhere."""
    n, c = x.shape[:2]
    rows, p_in, plane = n * c, int(np.prod(x.shape[2:])), int(np.prod(size))
    flat = max(rows * plane, rows * p_in) < _INT32_POSITIONS
    out = _last_wins(x.reshape(rows, p_in), idx.reshape(rows, p_in), plane, flat)
    return out.reshape(n, c, *size)


def _last_wins(vals: Array, idx: Array, plane: int, flat: bool) -> Array:
    """(R, P_in) values and indices -> (R, plane): ``vals[r, i]`` at ``idx[r, i]``, the last
    ``i`` of equal indices winning, 0 elsewhere; out-of-range indices write nowhere.

    Two integer passes find the winners (a scatter-max of input positions, then a gather of
    it back at every index); the losers' indices are then sent past the end and dropped, so
    the values go out in one scatter with unique indices. That scatter is linear in the
    values: its forward-mode derivative is the same scatter of the tangent (torch's forward
    mode) and its transpose one gather of the cotangent at the indices, the losers getting 0.
    ``flat``: index all planes as one vector (needs ``R * max(plane, P_in)`` to fit int32),
    which XLA scatters faster than the (row, position) pairs used otherwise.
    """
    r, p_in = vals.shape
    # out of range (checked before the cast, which could wrap a wide index): dropped
    where = jnp.where((idx >= 0) & (idx < plane), idx, plane).astype(jnp.int32)
    row = jnp.arange(r, dtype=jnp.int32)[:, None]
    if flat:  # (R * P_in,) positions in the (R * plane,) output
        shape = (r * plane,)
        index: tuple[Array, ...] = (
            jnp.where(where < plane, row * plane + where, r * plane).ravel(),
        )
        order, vals = jnp.arange(r * p_in, dtype=jnp.int32), vals.ravel()
    else:  # (row, position) pairs in the (R, plane) output
        shape = (r, plane)
        index = (row, where)
        order = jnp.broadcast_to(jnp.arange(p_in, dtype=jnp.int32), (r, p_in))
    winner = jnp.full(shape, -1, jnp.int32).at[index].max(order, mode="drop")
    won = winner.at[index].get(mode="fill", fill_value=-1) == order
    index = (*index[:-1], jnp.where(won, index[-1], shape[-1]))  # losers: past the end
    out = jnp.zeros(shape, vals.dtype).at[index].set(vals, mode="drop", unique_indices=True)
    return out.reshape(r, plane)


_DOC = """{n}-D max unpooling, as ``torch.nn.functional.max_unpool{n}d``.

    Args:
      input: {batched} or unbatched {unbatched}; ``layout="{last}"`` puts C last. Real
        floating dtype; only N may be 0.
      indices: integer array of ``input``'s shape: for each value, its flat index in its
        output channel plane (row-major over the spatial axes), as
        ``max_pool{n}d(..., return_indices=True)`` returns it. Concrete indices outside
        ``[0, prod(output size))`` are a ValueError; traced ones are dropped.
      kernel_size, stride, padding: the pooling's (int or {n} ints; ``stride=None`` means
        kernel_size; padding symmetric per axis).
      output_size: None, or {n} (or {n2}, the leading two ignored) ints, each strictly
        between ``default - stride`` and ``default + stride`` (torch's rule).
      layout: "{first}" (default) or "{last}" (keyword only).

    Returns:
      Zeros of spatial size ``output_size`` (default ``(L_in - 1) * s - 2 * p + k`` per
      axis) with each input value at its index; of equal indices the last in the input
      plane wins, as in torch (see the module docstring for the gradient there).
    """


def max_unpool1d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCL",
) -> Array:
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size, layout)


def max_unpool2d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCHW",
) -> Array:
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size, layout)


def max_unpool3d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCDHW",
) -> Array:
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size, layout)


for _n, _f, _shapes in (
    (1, max_unpool1d, ("(N, C, L)", "(C, L)")),
    (2, max_unpool2d, ("(N, C, H, W)", "(C, H, W)")),
    (3, max_unpool3d, ("(N, C, D, H, W)", "(C, D, H, W)")),
):
    _first, _last = UNPOOL_LAYOUTS[_n]
    _f.__doc__ = _DOC.format(
        n=_n, n2=_n + 2, batched=_shapes[0], unbatched=_shapes[1], first=_first, last=_last
    )
