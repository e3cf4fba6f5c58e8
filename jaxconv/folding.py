"""Rearranging ops: ``unfold`` (im2col), ``fold`` (col2im), ``pixel_shuffle`` and
``pixel_unshuffle``, with ``torch.nn.functional``'s names, arguments and rules. (The module
is not called ``fold``: a submodule of that name would shadow the function ``jaxconv.fold``
once imported.)

``unfold`` is the engine's one taps mechanism (:func:`jaxconv.kernels.windows.strided_taps`:
one strided slice of the padded input per kernel tap) stacked into torch's column matrix.
``fold`` is its linear transpose (:func:`jax.linear_transpose` of ``unfold``), so the two are
exact adjoints, overlapping windows sum, and JAX differentiates both in forward and reverse
mode to any order (the transpose of a pad-and-slice is a pad-and-slice). The pixel shuffles
are a reshape and a transpose.

Geometry is validated on static shapes before tracing (the shared normalisers of
:mod:`jaxconv._args`, the output-size arithmetic of :mod:`jaxconv.shapes`); what torch refuses
raises ValueError/TypeError naming the argument.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._args import (
    LAYOUT_KERNELS,
    as_array,
    as_int,
    check_floating,
    check_layout,
    check_rank,
    padding_sides,
    positive_tuple,
)
from jaxconv.geometry import WindowGeometry
from jaxconv.kernels.windows import strided_taps
from jaxconv.shapes import conv_output_size

Array = jax.Array

__all__ = ["fold", "pixel_shuffle", "pixel_unshuffle", "unfold"]

#: The layouts the pixel shuffles take, from the shared table: channels before (default) or
#: after the two spatial axes.
SHUFFLE_LAYOUTS = tuple(name for name in LAYOUT_KERNELS if len(name) == 4 and name[0] == "N")


# --- unfold / fold ----------------------------------------------------------------------------


def _pair_arg(value: Any, name: str) -> Any:
    """torch's unfold/fold take an int or a pair, never a 1-sequence (which its other ops
    repeat per axis): refuse it as torch does, then normalise as every op."""
    if isinstance(value, tuple | list) and len(value) == 1:
        raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
    return value


def _blocks_geometry(
    size: tuple[int, ...], kernel_size: Any, dilation: Any, padding: Any, stride: Any
) -> WindowGeometry:
    """The sliding blocks of a (N, C, H, W) array of spatial ``size``: the geometry of a
    stride/padding/dilation conv window, blocks ``L = OH * OW`` with
    ``OH = floor((H + pt + pb - (dh*(kh-1)+1)) / sh) + 1``."""
    kernel = positive_tuple(_pair_arg(kernel_size, "kernel_size"), 2, "kernel_size")
    dil = positive_tuple(_pair_arg(dilation, "dilation"), 2, "dilation")
    pads = padding_sides(_pair_arg(padding, "padding"), 2, "padding")
    strides = positive_tuple(_pair_arg(stride, "stride"), 2, "stride")
    out = conv_output_size(size, kernel, strides, pads, dil)
    return WindowGeometry("NCHW", (2, 3), size, kernel, strides, pads, dil, out)


def _check_nonempty(x: Any, first: int, name: str) -> None:
    """As torch: only the batch axis may be empty (axes ``first`` onwards must not)."""
    if min(x.shape[first:]) == 0:
        raise ValueError(
            f"{name} must have non-empty dimensions except the batch, got shape {x.shape}"
        )


def unfold(
    input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> Array:
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``.

    Args:
      input: (N, C, H, W) or unbatched (C, H, W), real floating dtype; only N may be 0.
      kernel_size, dilation, stride: int or pair ``(h, w)``, each >= 1.
      padding: zeros, ``p``, ``(ph, pw)`` or per side ``((top, bottom), (left, right))``.

    Returns:
      (N, C * kh * kw, L) (or (C * kh * kw, L)); row ``c * kh * kw + a * kw + b`` holds tap
      ``(a, b)`` of channel ``c``, column ``i * OW + j`` the block at output position (i, j);
      ``L = OH * OW``, ``OH = floor((H + pt + pb - (dh*(kh-1)+1)) / sh) + 1`` (likewise OW).
      A kernel larger than the padded input is a ValueError, as in torch. Torch's layout
      of the columns has no channels-last form, so there is no ``layout`` argument.
    """
    x = as_array(input, "input")
    unbatched = check_rank(x, "input", (3, 4)) == 3
    check_floating(x, "input")
    _check_nonempty(x, 0 if unbatched else 1, "input")
    geom = _blocks_geometry(tuple(x.shape[-2:]), kernel_size, dilation, padding, stride)
    x = jnp.asarray(x)
    y = _unfold(x[None] if unbatched else x, geom)
    return y[0] if unbatched else y


@partial(jax.jit, static_argnums=1)
def _unfold(x: Array, geom: WindowGeometry) -> Array:
    n, c = x.shape[:2]
    taps = strided_taps(
        x, geom.axes, geom.kernel, geom.padding, geom.out_size, geom.stride, geom.dilation
    )
    cols = jnp.stack(taps, axis=2)  # (N, C, kh*kw, OH, OW)
    return cols.reshape(n, c * len(taps), int(np.prod(geom.out_size)))  # (N, C*kh*kw, L)


def fold(
    input: Any,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> Array:
    """Sum sliding blocks back into an array (col2im), as ``torch.nn.functional.fold``.

    The adjoint of :func:`unfold` with the same geometry: every column entry is added to the
    input position its tap came from, so overlapping windows sum (``fold(unfold(x))`` is
    ``x`` times how many blocks cover each position) and padding is dropped.

    Args:
      input: (N, C * kh * kw, L) or unbatched (C * kh * kw, L), real floating dtype; only N
        may be 0. ``C * kh * kw`` must be divisible by ``kh * kw`` and ``L`` must equal the
        number of blocks that ``unfold`` gives on an ``output_size`` input (ValueError).
      output_size: ``(H, W)`` of the result, or an int for both.
      kernel_size, dilation, padding, stride: as in :func:`unfold`.

    Returns:
      (N, C, H, W) (or (C, H, W)).
    """
    cols = as_array(input, "input")
    unbatched = check_rank(cols, "input", (2, 3)) == 2
    check_floating(cols, "input")
    _check_nonempty(cols, 0 if unbatched else 1, "input")
    size = positive_tuple(_pair_arg(output_size, "output_size"), 2, "output_size")
    geom = _blocks_geometry(size, kernel_size, dilation, padding, stride)
    taps = geom.kernel[0] * geom.kernel[1]
    rows, blocks = cols.shape[-2:]
    if rows % taps:
        raise ValueError(
            f"input's dimension {cols.ndim - 2} ({rows}) must be divisible by the product of "
            f"kernel_size {geom.kernel} ({taps}), got input shape {cols.shape}"
        )
    if blocks != int(np.prod(geom.out_size)):
        raise ValueError(
            f"input's last dimension ({blocks}) must equal the number of sliding blocks "
            f"{geom.out_size[0]} * {geom.out_size[1]} = {int(np.prod(geom.out_size))} of "
            f"output_size {size} with kernel_size {geom.kernel}, dilation {geom.dilation}, "
            f"padding {geom.padding}, stride {geom.stride}"
        )
    cols = jnp.asarray(cols)
    y = _fold(cols[None] if unbatched else cols, geom)
    return y[0] if unbatched else y


@partial(jax.jit, static_argnums=1)
def _fold(cols: Array, geom: WindowGeometry) -> Array:
    n, rows = cols.shape[:2]
    c = rows // (geom.kernel[0] * geom.kernel[1])
    like = jax.ShapeDtypeStruct((n, c, *geom.in_size), cols.dtype)
    (x,) = jax.linear_transpose(partial(_unfold, geom=geom), like)(cols)
    return x


# --- pixel shuffle ----------------------------------------------------------------------------


def _factor(value: Any, name: str) -> int:
    factor = as_int(value, name)
    if factor < 1:
        raise ValueError(f"{name} must be positive (>= 1), got {factor}")
    return factor


def _shuffle_input(input: Any, layout: Any) -> tuple[Array, str]:
    x = as_array(input, "input")
    layout = check_layout(layout, SHUFFLE_LAYOUTS)
    if x.ndim < 3:
        raise ValueError(
            f"input must have at least 3 dimensions (*, C, H, W) ({layout}), got shape {x.shape}"
        )
    return jnp.asarray(x), layout


def pixel_shuffle(input: Any, upscale_factor: Any, *, layout: str = "NCHW") -> Array:
    """Move channels into space, as ``torch.nn.functional.pixel_shuffle``.

    ``(*, C * r**2, H, W) -> (*, C, H * r, W * r)`` with ``r = upscale_factor``: channel
    ``c * r**2 + i * r + j`` becomes the ``(i, j)`` pixel of each ``r x r`` block of channel
    ``c``. Any number of leading dimensions (none included), any dtype, empty axes allowed.
    ``layout="NHWC"``: ``(*, H, W, C * r**2) -> (*, H * r, W * r, C)``, same channel order.
    The channel count must be divisible by ``r**2`` (ValueError), ``r >= 1``.
    """
    x, layout = _shuffle_input(input, layout)
    r = _factor(upscale_factor, "upscale_factor")
    if layout == "NHWC":  # (*, H, W, C) -> (*, C, H, W) and back: one order of channels
        return jnp.moveaxis(pixel_shuffle(jnp.moveaxis(x, -1, -3), r), -3, -1)
    *lead, rows, h, w = x.shape
    if rows % (r * r):
        raise ValueError(
            f"input's channel dimension ({rows}) must be divisible by upscale_factor**2 "
            f"({r * r}), got shape {x.shape}"
        )
    c = rows // (r * r)
    y = x.reshape(*lead, c, r, r, h, w)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 3, k + 1, k + 4, k + 2)  # (*, C, H, r, W, r)
    return y.reshape(*lead, c, h * r, w * r)


def pixel_unshuffle(input: Any, downscale_factor: Any, *, layout: str = "NCHW") -> Array:
    """Move space into channels, as ``torch.nn.functional.pixel_unshuffle``; the inverse of
    :func:`pixel_shuffle`.

    ``(*, C, H * r, W * r) -> (*, C * r**2, H, W)`` with ``r = downscale_factor``; ``H * r``
    and ``W * r`` must be divisible by ``r`` (ValueError), ``r >= 1``. ``layout="NHWC"``:
    ``(*, H * r, W * r, C) -> (*, H, W, C * r**2)``.
    """
    x, layout = _shuffle_input(input, layout)
    r = _factor(downscale_factor, "downscale_factor")
    if layout == "NHWC":
        return jnp.moveaxis(pixel_unshuffle(jnp.moveaxis(x, -1, -3), r), -3, -1)
    *lead, c, hr, wr = x.shape
    for axis, size in (("height", hr), ("width", wr)):
        if size % r:
            raise ValueError(
                f"input's {axis} ({size}) must be divisible by downscale_factor ({r}), "
                f"got shape {x.shape}"
            )
    h, w = hr // r, wr // r
    y = x.reshape(*lead, c, h, r, w, r)
    k = len(lead)
    y = y.transpose(*range(k), k, k + 2, k + 4, k + 1, k + 3)  # (*, C, r, r, H, W)
    return y.reshape(*lead, c * r * r, h, w)
