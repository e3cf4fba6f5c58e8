"""The geometry of a sliding window: one static, validated description for every op.

A convolution or a pooling window slides over the spatial axes of an array (one for 1-D ops,
two for 2-D, three for 3-D). :class:`WindowGeometry` holds what both share: the layout, where
the spatial axes are, the input size, kernel, stride, per-side padding, dilation and output
size, one entry per spatial axis. :class:`ConvGeometry` adds the channels and groups,
:class:`ConvTransposeGeometry` a transposed conv's output_padding (its ``padding`` is what it
crops from the full output). All are frozen and hashable, so they can be jit static
arguments; the builders below validate the user's arguments on static shapes and raise
ValueError/TypeError naming the argument before anything is traced. The arithmetic is
:mod:`jaxconv.shapes`'; the layout table is :data:`jaxconv._args.LAYOUT_KERNELS`.
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
    as_tuple,
    check_bool,
    check_layout,
    layout_axes,
    padding_sides,
    positive_tuple,
    spatial_letters,
)
from jaxconv.shapes import (
    AXIS_NAMES,
    conv_output_size,
    conv_padding_nd,
    conv_transpose_output_size,
    effective_kernel,
    pool_output_size,
)

__all__ = [
    "ConvGeometry",
    "ConvTransposeGeometry",
    "WindowGeometry",
    "conv_geometry",
    "conv_transpose_geometry",
    "pool_geometry",
]

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


@dataclasses.dataclass(frozen=True)
class _Operands:
    """What a conv's input and weight shapes say, read off the layout table."""

    batched: bool
    channels: int  # the input's channel count
    size: Ints  # the input's spatial size
    w_out: int  # the weight's O axis
    w_in: int  # the weight's I axis
    kernel: Ints


def _operands(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], layout: str, x: str, w: str
) -> _Operands:
    """Check ranks and emptiness of ``x_shape``/``w_shape`` in ``layout`` (and its kernel
    layout) and read their channels and sizes; errors name ``x`` and ``w``."""
    ranks, spec = _rank_rule(layout), LAYOUT_KERNELS[layout]
    if len(x_shape) not in ranks:
        if len(ranks) == 1:
            want = f"{ranks[0]} (batched {layout}: {', '.join(layout)})"
        else:
            want = f"{ranks[0]} (unbatched) or {ranks[1]} (batched {layout})"
        raise ValueError(f"{x} must have rank {want}, got shape {x_shape}")
    if len(w_shape) != len(spec):
        raise ValueError(f"{w} must have rank {len(spec)} ({spec}), got shape {w_shape}")
    batched = len(x_shape) == len(layout)
    channel, axes = layout_axes(layout, batched)
    letters = spatial_letters(layout)
    if min(w_shape) < 1:
        raise ValueError(f"{w} must have no empty dimension, got shape {w_shape}")
    size = tuple(x_shape[a] for a in axes)
    if min(size) < 1:  # PyTorch refuses these too; only an empty batch or channel axis runs
        raise ValueError(
            f"{x} must have non-empty spatial axes ({', '.join(letters)}), got shape {x_shape}"
        )
    return _Operands(
        batched,
        x_shape[channel],
        size,
        w_shape[spec.index("O")],
        w_shape[spec.index("I")],
        tuple(w_shape[spec.index(letter)] for letter in letters),
    )


def _check_groups(groups: Any) -> int:
    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive (>= 1), got {groups}")
    return groups


def _check_elements(
    x_shape: tuple[int, ...], ops: _Operands, padded: Ints, out_channels: int, out_size: Ints,
    layout: str, padding: Any,
) -> None:  # fmt: skip
    """Refuse arrays XLA cannot build (it aborts the process rather than raising);
    ``padded`` is the spatial size of the padded (and dilated) input XLA builds."""
    batch = x_shape[layout.index("N")] if ops.batched else 1
    biggest = max(
        batch * ops.channels * math.prod(padded), batch * out_channels * math.prod(out_size)
    )
    if biggest > MAX_ELEMENTS:
        raise ValueError(
            f"padding {padding!r} makes arrays of over 2**{MAX_ELEMENTS.bit_length() - 1} "
            f"elements (input shape {x_shape}): past that XLA aborts the process instead of "
            "raising"
        )


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

    ``x_shape`` is batched or unbatched (N dropped) in ``layout`` (any layout of
    :data:`~jaxconv._args.LAYOUT_KERNELS`, so 1, 2 or 3 spatial axes), e.g. (N, C, H, W) /
    (C, H, W) for NCHW or (C, H, W, N) for CHWN (batched only); ``w_shape`` is in the kernel
    layout of that table (OIHW (O, C // groups, kh, kw) for NCHW, HWIO for NHWC and CHWN, OIL
    and LIO in 1-D, OIDHW and DHWIO in 3-D). Raises ValueError/TypeError naming the offending
    argument (``input``, ``weight``, ``stride``, ...).
    """
    layout = check_layout(layout, tuple(LAYOUT_KERNELS))
    ops = _operands(x_shape, w_shape, layout, "input", "weight")
    c, o, cg = ops.channels, ops.w_out, ops.w_in
    groups = _check_groups(groups)
    if c % groups:
        raise ValueError(
            f"input's in_channels ({c}) must be divisible by groups ({groups}); "
            f"input shape {x_shape}"
        )
    if o % groups:
        raise ValueError(
            f"weight's out_channels ({o}) must be divisible by groups ({groups}); "
            f"weight shape {w_shape}"
        )
    if c != cg * groups:
        raise ValueError(
            f"input has {c} channels but weight expects {cg} * groups ({groups}) = "
            f"{cg * groups} ({layout}: input shape {x_shape}, weight shape {w_shape})"
        )
    n = len(ops.kernel)
    stride = positive_tuple(stride, n, "stride")
    dilation = positive_tuple(dilation, n, "dilation")
    pads = conv_padding_nd(padding, ops.kernel, stride, dilation)
    try:
        out_size = conv_output_size(ops.size, ops.kernel, stride, pads, dilation)
    except ValueError as err:
        raise ValueError(
            f"weight is too large for input ({layout}: input shape {x_shape}, weight shape "
            f"{w_shape}): {err}"
        ) from None
    padded = tuple(s + sum(p) for s, p in zip(ops.size, pads, strict=True))
    _check_elements(x_shape, ops, padded, o, out_size, layout, padding)
    # the engine always receives a batched array
    engine_axes = layout_axes(layout, batched=True)[1]
    return ConvGeometry(
        layout, engine_axes, ops.size, ops.kernel, stride, pads, dilation, out_size, groups, c, o
    )


@dataclasses.dataclass(frozen=True)
class ConvTransposeGeometry(ConvGeometry):
    """A transposed convolution's geometry: ``padding`` is what it crops from the full
    output (torch's, the same on both sides), ``output_padding`` what it adds after."""

    output_padding: Ints


def _symmetric_padding(padding: Any, n: int) -> Pads:
    """A transposed conv's padding: an int or ``n`` ints (PyTorch takes no strings there)."""
    if isinstance(padding, str):
        raise TypeError(
            f"padding must be an int or a sequence of {n} ints for a transposed convolution "
            f"('same'/'valid' are not accepted, as in PyTorch), got {padding!r}"
        )
    values = as_tuple(padding, n, "padding")
    if min(values) < 0:
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return tuple((p, p) for p in values)


def conv_transpose_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: Any = 1,
    dilation: Any = 1,
    layout: str = "NCHW",
) -> ConvTransposeGeometry:
    """Validate a transposed convolution's arguments on static shapes, PyTorch's rules.

    ``w_shape`` is the weight of the forward conv whose input gradient this op is, in that
    layout's kernel layout: channels-first ``(C_in, C_out // groups, *k)`` (PyTorch's; the O
    axis of OIHW holds this op's input channels), channels-last ``(*k, C_out // groups,
    C_in)`` (HWIO likewise). Per axis ``output_padding < max(stride, dilation)`` and the
    output ``(n - 1) * s - 2 * p + d * (k - 1) + output_padding + 1`` must be >= 1.
    """
    layout = check_layout(layout, tuple(LAYOUT_KERNELS))
    ops = _operands(x_shape, w_shape, layout, "input", "weight")
    c, og = ops.channels, ops.w_in
    groups = _check_groups(groups)
    if ops.w_out % groups:
        raise ValueError(
            f"weight's in_channels ({ops.w_out}, the O axis of "
            f"{LAYOUT_KERNELS[layout]}) must be divisible by groups ({groups}); weight shape "
            f"{w_shape}"
        )
    if c != ops.w_out:
        raise ValueError(
            f"input has {c} channels but weight expects {ops.w_out} ({layout}: input shape "
            f"{x_shape}, weight shape {w_shape})"
        )
    n = len(ops.kernel)
    stride = positive_tuple(stride, n, "stride")
    dilation = positive_tuple(dilation, n, "dilation")
    pads = _symmetric_padding(padding, n)
    out_pad = as_tuple(output_padding, n, "output_padding")
    if min(out_pad) < 0:
        raise ValueError(f"output_padding must be non-negative, got {output_padding!r}")
    for axis, name in enumerate(AXIS_NAMES[n]):
        if out_pad[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"output_padding must be smaller than either stride or dilation (as in "
                f"PyTorch), got output_padding {out_pad[axis]} with stride {stride[axis]} "
                f"and dilation {dilation[axis]} along {name}"
            )
    try:
        out_size = conv_transpose_output_size(ops.size, ops.kernel, stride, pads, dilation, out_pad)
    except ValueError as err:
        raise ValueError(
            f"padding is too large for input ({layout}: input shape {x_shape}, weight shape "
            f"{w_shape}): {err}"
        ) from None
    o = og * groups
    # XLA builds the stride-dilated input, padded by d * (k - 1) - p on each side
    dilated = tuple(
        size + effective_kernel(k, d) - 1
        for size, k, d in zip(out_size, ops.kernel, dilation, strict=True)
    )
    _check_elements(x_shape, ops, dilated, o, out_size, layout, padding)
    engine_axes = layout_axes(layout, batched=True)[1]
    return ConvTransposeGeometry(
        layout, engine_axes, ops.size, ops.kernel, stride, pads, dilation, out_size, groups,
        c, o, out_pad,
    )  # fmt: skip


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
