"""The geometry of a sliding window: one static, validated description for every op.

A convolution or a pooling window slides over the spatial axes of an array (one for 1-D ops,
two for 2-D, three for 3-D). :class:`WindowGeometry` holds what both share: the layout, where
the spatial axes are, the input size, kernel, stride, per-side padding, dilation and output
size, one entry per spatial axis. :class:`ConvGeometry` adds the channels and groups. Both are
frozen and hashable, so they can be jit static arguments; the builders below validate the
user's arguments on static shapes and raise ValueError/TypeError naming the argument before
anything is traced. The arithmetic is :mod:`jaxconv.shapes`'; the layout table is
:data:`jaxconv._args.LAYOUT_KERNELS`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxconv._args import (
    LAYOUT_KERNELS,
    Ints,
    Pads,
    as_int,
    check_bool,
    check_layout,
    layout_axes,
    padding_sides,
    positive_tuple,
)
from jaxconv.shapes import (
    conv_output_size,
    conv_padding_nd,
    effective_kernel,
    pool_output_size,
)

__all__ = ["ConvGeometry", "WindowGeometry", "conv_geometry", "pool_geometry"]

#: The most elements conv2d lets an intermediate array have (1 TiB of float32); beyond
#: ~2**62 XLA's shape arithmetic overflows and aborts the process (a crash, not an exception).
MAX_ELEMENTS = 2**38


@dataclasses.dataclass(frozen=True)
class WindowGeometry:
    """A window sliding over the spatial axes of one array; every field is static.

    ``axes`` are the positions of the spatial axes in the array the engine receives (conv
    always receives a batched array; pooling the array as given). Every other field but
    ``layout`` has one entry per spatial axis; ``padding`` is the user's ``(before, after)``
    per axis (in 2-D ``((top, bottom), (left, right))``).
    """

    layout: str
    axes: Ints
    in_size: Ints
    kernel: Ints
    stride: Ints
    padding: Pads
    dilation: Ints
    out_size: Ints

    @property
    def window_padding(self) -> Pads:
        """Padding that makes exactly ``out_size`` windows exist: the user's, plus a
        ceil-mode overhang after (never less than the user's padding after)."""
        pads = []
        for axis, (lo, hi) in enumerate(self.padding):
            extent = effective_kernel(self.kernel[axis], self.dilation[axis])
            need = (self.out_size[axis] - 1) * self.stride[axis] + extent
            pads.append((lo, max(hi, need - self.in_size[axis] - lo)))
        return tuple(pads)

    def full_padding(self, ndim: int) -> tuple[tuple[int, int], ...]:
        """:attr:`window_padding` as ``(lo, hi)`` for every dimension of an ``ndim`` array."""
        return self.expand(ndim, self.window_padding, (0, 0))

    def expand(self, ndim: int, spatial: Ints, fill: Any) -> tuple[Any, ...]:
        """A per-dimension tuple for an ``ndim`` array: ``spatial`` on ``axes``, ``fill``
        elsewhere."""
        out = [fill] * ndim
        for axis, value in zip(self.axes, spatial, strict=True):
            out[axis] = value
        return tuple(out)


@dataclasses.dataclass(frozen=True)
class ConvGeometry(WindowGeometry):
    """A convolution's window geometry, with its channels and groups."""

    groups: int
    in_channels: int
    out_channels: int


def _rank_rule(layout: str) -> tuple[int, ...]:
    """The ranks x may have: batched only when the batch is not the first axis."""
    rank = len(layout)
    return (rank,) if layout[0] != "N" else (rank - 1, rank)


def conv_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    layout: str = "NCHW",
) -> ConvGeometry:
    """Validate a convolution's arguments on static shapes and return the resolved geometry.

    ``x_shape`` is batched or unbatched (N dropped) in ``layout``, e.g. (N, C, H, W) / (C, H, W)
    for NCHW or (C, H, W, N) for CHWN (batched only); ``w_shape`` is in the kernel layout of
    :data:`~jaxconv._args.LAYOUT_KERNELS` (OIHW (O, C // groups, kh, kw) for NCHW, HWIO for
    NHWC and CHWN). Raises ValueError/TypeError naming the offending argument.
    """
    layout = check_layout(layout)
    ranks, spec = _rank_rule(layout), LAYOUT_KERNELS[layout]
    if len(x_shape) not in ranks:
        if len(ranks) == 1:
            want = f"{ranks[0]} (batched {layout}: {', '.join(layout)})"
        else:
            want = f"{ranks[0]} (unbatched) or {ranks[1]} (batched {layout})"
        raise ValueError(f"x must have rank {want}, got shape {x_shape}")
    if len(w_shape) != len(spec):
        raise ValueError(f"w must have rank {len(spec)} ({spec}), got shape {w_shape}")
    batched = len(x_shape) == len(layout)
    channel, axes = layout_axes(layout, batched)
    letters = [c for c in layout if c not in "NC"]
    c, size = x_shape[channel], tuple(x_shape[a] for a in axes)
    o, cg = w_shape[spec.index("O")], w_shape[spec.index("I")]
    kernel = tuple(w_shape[spec.index(letter)] for letter in letters)
    if min(w_shape) < 1:
        raise ValueError(f"w must have no empty dimension, got shape {w_shape}")
    if min(size) < 1:  # PyTorch refuses these too; only an empty batch or channel axis runs
        raise ValueError(
            f"x must have non-empty spatial axes ({', '.join(letters)}), got shape {x_shape}"
        )
    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive (>= 1), got {groups}")
    if c % groups:
        raise ValueError(
            f"x's in_channels ({c}) must be divisible by groups ({groups}); x shape {x_shape}"
        )
    if o % groups:
        raise ValueError(
            f"w's out_channels ({o}) must be divisible by groups ({groups}); w shape {w_shape}"
        )
    if c != cg * groups:
        raise ValueError(
            f"x has {c} channels but w expects {cg} * groups ({groups}) = {cg * groups} "
            f"({layout}: x shape {x_shape}, w shape {w_shape})"
        )
    n = len(kernel)
    stride = positive_tuple(stride, n, "stride")
    dilation = positive_tuple(dilation, n, "dilation")
    pads = conv_padding_nd(padding, kernel, stride, dilation)
    try:
        out_size = conv_output_size(size, kernel, stride, pads, dilation)
    except ValueError as err:
        raise ValueError(
            f"w is too large for x ({layout}: x shape {x_shape}, w shape {w_shape}): {err}"
        ) from None
    batch = x_shape[layout.index("N")] if batched else 1
    padded = batch * c * math.prod(s + sum(p) for s, p in zip(size, pads, strict=True))
    if max(padded, batch * o * math.prod(out_size)) > MAX_ELEMENTS:
        raise ValueError(
            f"padding {padding!r} makes arrays of over 2**{MAX_ELEMENTS.bit_length() - 1} "
            f"elements (x shape {x_shape}): past that XLA aborts the process instead of raising"
        )
    # the engine always receives a batched array
    engine_axes = layout_axes(layout, batched=True)[1]
    return ConvGeometry(
        layout, engine_axes, size, kernel, stride, pads, dilation, out_size, groups, c, o
    )


def pool_geometry(
    x_shape: tuple[int, ...],
    layout: str,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
) -> WindowGeometry:
    """Validate a pooling window's arguments for an input of ``x_shape`` in ``layout``
    (batched or not; its rank is checked by the caller) and return the geometry.

    ``stride=None`` or an empty sequence means stride = kernel_size (as PyTorch); padding is
    per axis or per side, at most half the window on each side; ``ceil_mode`` rounds the output
    size up, as in PyTorch.
    """
    axes = layout_axes(layout, len(x_shape) == len(layout))[1]
    n = len(axes)
    kernel = positive_tuple(kernel_size, n, "kernel_size")
    empty = isinstance(stride, list | tuple) and len(stride) == 0
    strides = kernel if stride is None or empty else positive_tuple(stride, n, "stride")
    dil = positive_tuple(dilation, n, "dilation")
    pads = padding_sides(padding, n, "padding")
    size = tuple(int(x_shape[a]) for a in axes)
    ceil = check_bool(ceil_mode, "ceil_mode")
    out = pool_output_size(size, kernel, strides, pads, dil, ceil)
    return WindowGeometry(layout, axes, size, kernel, strides, pads, dil, out)
