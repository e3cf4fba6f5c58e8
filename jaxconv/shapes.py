"""Output-shape formulas of chapter 6.3 and 6.5, and receptive fields (6.2.6).

All functions are pure Python on static ints: ops call them before tracing, so a bad geometry
raises a ValueError naming the argument instead of an XLA error.

Per axis the chapter's formula is ``floor((n - k + p + s) / s)`` with ``p`` the total padding;
with dilation ``d`` the kernel's effective size is ``d * (k - 1) + 1``. The public functions
take the chapter's 2-D arguments; the ``*_size`` functions below them do the arithmetic for any
number of spatial axes on already normalised tuples (what :mod:`jaxconv.geometry` calls).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxconv._args import (
    Ints,
    Padding,
    Pads,
    Pair,
    as_pair,
    check_bool,
    padding_pairs,
    padding_sides,
    positive_pair,
)

#: Names of the spatial axes, by how many there are, for error messages.
AXIS_NAMES = {1: ("length",), 2: ("height", "width"), 3: ("depth", "height", "width")}


def _input_size(value: Any) -> Pair:
    size = as_pair(value, "input_size")
    if min(size) < 0:
        raise ValueError(f"input_size must be non-negative, got {value!r}")
    return size


def effective_kernel(kernel: int, dilation: int) -> int:
    """Extent of a kernel of ``kernel`` taps spaced ``dilation`` apart: ``d * (k - 1) + 1``."""
    return dilation * (kernel - 1) + 1


def same_padding(kernel: Ints, dilation: Ints) -> Pads:
    """PyTorch's ``padding="same"`` (stride 1): ``d * (k - 1)`` in total per axis, the odd
    extra element after."""
    totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    return tuple((t // 2, t - t // 2) for t in totals)


def conv_padding_nd(padding: Any, kernel: Ints, stride: Ints, dilation: Ints) -> Pads:
    """A conv ``padding`` argument (int, per axis, per side, ``"valid"`` or ``"same"``) for
    ``len(kernel)`` spatial axes, resolved to one ``(before, after)`` pair per axis."""
    n = len(kernel)
    if not isinstance(padding, str):
        return padding_sides(padding, n, "padding")
    if padding == "valid":
        return ((0, 0),) * n
    if padding == "same":
        if stride != (1,) * n:
            raise ValueError(
                f"padding='same' needs stride 1 (as in PyTorch), got stride={stride!r}"
            )
        return same_padding(kernel, dilation)
    raise ValueError(f"padding string must be 'same' or 'valid', got {padding!r}")


def conv_padding(padding: Any, kernel_size: Any, stride: Any = 1, dilation: Any = 1) -> Padding:
    """Resolve a conv ``padding`` argument to ``((top, bottom), (left, right))``.

    ``"valid"`` is no padding. ``"same"`` (stride 1 only, as in PyTorch) pads
    ``d * (k - 1)`` in total per axis, the odd extra row/column at the bottom/right.
    """
    if not isinstance(padding, str):
        return padding_pairs(padding, "padding")
    k = positive_pair(kernel_size, "kernel_size")
    d = positive_pair(dilation, "dilation")
    if padding == "same" and positive_pair(stride, "stride") != (1, 1):
        raise ValueError(f"padding='same' needs stride 1 (as in PyTorch), got stride={stride!r}")
    return conv_padding_nd(padding, k, (1, 1), d)  # type: ignore[return-value]


def conv_output_size(size: Ints, kernel: Ints, stride: Ints, pads: Pads, dilation: Ints) -> Ints:
    """Per-axis conv output on normalised tuples; ValueError where the effective kernel is
    larger than the padded input."""
    out = []
    for axis, name in enumerate(AXIS_NAMES[len(size)]):
        padded = size[axis] + sum(pads[axis])
        keff = effective_kernel(kernel[axis], dilation[axis])
        if keff > padded:
            raise ValueError(
                f"kernel_size {kernel} (effective {keff} with dilation {dilation[axis]}) is "
                f"larger than the padded input along {name} ({size[axis]} + padding "
                f"{sum(pads[axis])} = {padded})"
            )
        out.append((padded - keff + stride[axis]) // stride[axis])
    return tuple(out)


def conv_transpose_output_size(
    size: Ints, kernel: Ints, stride: Ints, pads: Pads, dilation: Ints, output_padding: Ints
) -> Ints:
    """Per-axis transposed-conv output on normalised tuples, PyTorch's formula
    ``(n - 1) * s - (lo + hi) + d * (k - 1) + output_padding + 1``; ValueError where it is
    below 1 (padding crops more than the transposed conv produces)."""
    out = []
    for axis, name in enumerate(AXIS_NAMES[len(size)]):
        span = (size[axis] - 1) * stride[axis] + effective_kernel(kernel[axis], dilation[axis])
        o = span - sum(pads[axis]) + output_padding[axis]
        if o < 1:
            raise ValueError(
                f"padding {pads[axis][0]} crops the whole output along {name}: "
                f"({size[axis]} - 1) * stride {stride[axis]} + dilation {dilation[axis]} * "
                f"(kernel {kernel[axis]} - 1) + output_padding {output_padding[axis]} + 1 - "
                f"2 * padding = {o} (must be >= 1)"
            )
        out.append(o)
    return tuple(out)


def conv_output_shape(
    input_size: Any, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1
) -> Pair:
    """Spatial output ``(oh, ow)`` of a convolution on an ``(h, w)`` input.

    ``oh = floor((h + pt + pb - (dh*(kh-1)+1) + sh) / sh)``, likewise for width.
    Raises ValueError if the effective kernel is larger than the padded input.
    """
    n = _input_size(input_size)
    k = positive_pair(kernel_size, "kernel_size")
    s = positive_pair(stride, "stride")
    d = positive_pair(dilation, "dilation")
    pads = conv_padding(padding, k, s, d)
    return conv_output_size(n, k, s, pads, d)  # type: ignore[return-value]


def pool_output_size(
    size: Ints, kernel: Ints, stride: Ints, pads: Pads, dilation: Ints, ceil_mode: bool,
    padding: Any = None,
) -> Ints:  # fmt: skip
    """Per-axis pooling output on normalised tuples, PyTorch's rules (see
    :func:`pool_output_shape`); ``padding`` is the user's spelling, for the messages."""
    padding = pads if padding is None else padding
    out = []
    for axis, name in enumerate(AXIS_NAMES[len(size)]):
        (lo, hi), n, k, s = pads[axis], size[axis], kernel[axis], stride[axis]
        if max(lo, hi) > k // 2:
            raise ValueError(
                f"padding must be at most half the kernel_size along {name} "
                f"(kernel {k} allows {k // 2}), got padding={padding!r}"
            )
        span = n + lo + hi - effective_kernel(k, dilation[axis])
        o = (span + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (o - 1) * s >= n + lo:
            o -= 1  # the last window would start in the right padding only
        if o < 1:
            raise ValueError(
                f"pooling output would be empty along {name}: input {n}, "
                f"kernel_size {k}, dilation {dilation[axis]}, padding {(lo, hi)}"
            )
        out.append(o)
    return tuple(out)


def pool_output_shape(
    input_size: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
) -> Pair:
    """Spatial output ``(oh, ow)`` of a pooling layer, with PyTorch's rules.

    ``stride=None`` means stride = window (the chapter's default). Each side's padding must be
    at most half the window (``p <= k // 2``). With ``ceil_mode`` the division rounds up, but
    the last window must start inside the input or the left/top padding. Raises ValueError
    when an output would be empty.
    """
    n = _input_size(input_size)
    k = positive_pair(kernel_size, "kernel_size")
    s = k if stride is None else positive_pair(stride, "stride")
    ceil_mode = check_bool(ceil_mode, "ceil_mode")
    d = positive_pair(dilation, "dilation")
    pads = padding_pairs(padding, "padding")
    return pool_output_size(n, k, s, pads, d, ceil_mode, padding)  # type: ignore[return-value]


def receptive_field(layers: Sequence[Any]) -> Pair:
    """Receptive field ``(rh, rw)`` on the input of one output element after ``layers``.

    Each layer is an int kernel size, ``(kernel_size, stride)`` or ``(kernel_size, stride,
    dilation)``; each entry an int or an ``(h, w)`` pair, so a 5x3 kernel with stride 1 is
    ``((5, 3), 1)``. Pooling layers count the same way as conv layers. The field grows by
    ``(k_eff - 1) * jump`` per layer, where ``jump`` is the product of the earlier strides.
    """
    if not isinstance(layers, Sequence) or isinstance(layers, str):
        raise TypeError(f"layers must be a list or tuple of layer specs, got {layers!r}")
    size = [1, 1]
    jump = [1, 1]
    for i, layer in enumerate(layers):
        spec = tuple(layer) if isinstance(layer, list | tuple) else (layer,)
        if not 1 <= len(spec) <= 3:
            raise ValueError(
                f"layers[{i}] must be kernel_size or (kernel_size, stride[, dilation]), "
                f"got {layer!r}"
            )
        k = positive_pair(spec[0], f"layers[{i}].kernel_size")
        s = positive_pair(spec[1], f"layers[{i}].stride") if len(spec) > 1 else (1, 1)
        d = positive_pair(spec[2], f"layers[{i}].dilation") if len(spec) > 2 else (1, 1)
        for axis in range(2):
            size[axis] += (effective_kernel(k[axis], d[axis]) - 1) * jump[axis]
            jump[axis] *= s[axis]
    return (size[0], size[1])
