"""Transposed convolutions, as ``torch.nn.functional.conv_transpose1d/2d/3d``.

A transposed convolution is the gradient of the forward convolution with respect to its input:
each input element adds its value times the kernel into a window of the output, windows
``stride`` apart. It maps a conv's output shape back to its input shape (a UNet's upsampling).

The weight is the forward conv's, in every layout: channels-first ``(C_in, C_out // groups,
*k)`` (PyTorch's; OIHW with this op's input channels on the O axis), channels-last ``(*k,
C_out // groups, C_in)`` (HWIO likewise). So ``conv_transpose2d(y, w, ...)`` equals the
``jax.vjp`` of ``conv2d(., w, ...)`` at ``y``, for the same ``w`` and layout.

Output size per axis (PyTorch's):
``(n - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1``. ``padding``
crops ``d*(k-1)``-wide borders' worth from both sides (it may exceed ``d*(k-1)``);
``output_padding`` adds elements after, and must be smaller than ``max(stride, dilation)``
per axis (the sizes a strided forward conv maps to the same output differ by less than the
stride). PyTorch takes no ``"same"``/``"valid"`` here, and neither does jaxconv.

Arguments are validated on static shapes before tracing (ValueError/TypeError naming the
argument). Three implementations compute the same function: ``impl="lax"``, one
``lax.conv_general_dilated`` of the input dilated by the stride
(:func:`jaxconv.kernels.xla.conv_transpose_lax`), ``impl="phases"``, stride-1
convolutions per stride phase and a pixel shuffle (:mod:`jaxconv.kernels.phases`), XLA:CPU's
fast form, and for 3-D ``impl="planes"``, the same over depth planes
(:mod:`jaxconv.kernels.transpose_planes`); ``"auto"`` picks per backend
(:func:`jaxconv.kernels.dispatch.select_transpose_impl`). All are differentiable in both
modes and to any order.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv._args import LAYOUTS_BY_NDIM, check_layout, layout_axes
from jaxconv.conv import _as_float_array, _check_bias
from jaxconv.geometry import ConvTransposeGeometry, conv_transpose_geometry
from jaxconv.kernels.dispatch import TRANSPOSE_IMPLEMENTATIONS

Array = jax.Array

__all__ = ["conv_transpose1d", "conv_transpose2d", "conv_transpose3d"]


@functools.partial(jax.jit, static_argnames=("geom", "impl", "precision"))
def _apply(
    x: Array, w: Array, b: Array | None, geom: ConvTransposeGeometry, impl: str, precision: Any
) -> Array:
    unbatched = x.ndim == len(geom.layout) - 1
    if unbatched:
        x = x[None]
    y = TRANSPOSE_IMPLEMENTATIONS[impl](x, w, geom, precision)
    if b is not None:
        channel_axis = layout_axes(geom.layout)[0]
        y = y + jnp.expand_dims(b, [a for a in range(y.ndim) if a != channel_axis])
    return y[0] if unbatched else y


def _conv_transpose_nd(
    n: int,
    input: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    output_padding: Any,
    groups: Any,
    dilation: Any,
    layout: Any,
    impl: Any,
    precision: Any,
) -> Array:
    """The one transposed convolution behind conv_transpose1d/2d/3d (``n`` spatial axes)."""
    if impl not in TRANSPOSE_IMPLEMENTATIONS:
        raise ValueError(
            f"impl must be one of {tuple(TRANSPOSE_IMPLEMENTATIONS)} for "
            f"conv_transpose{n}d, got {impl!r}"
        )
    layout = check_layout(layout, LAYOUTS_BY_NDIM[n])
    x, w = _as_float_array(input, "input"), _as_float_array(weight, "weight")
    geom = conv_transpose_geometry(
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        output_padding=output_padding,
        groups=groups,
        dilation=dilation,
        layout=layout,
    )
    b, dtype = _check_bias(bias, geom.out_channels, jnp.result_type(x, w))
    return _apply(x.astype(dtype), w.astype(dtype), b, geom, impl, precision)


_DOC = """{n}-D transposed convolution, as ``torch.nn.functional.conv_transpose{n}d``: the
    gradient of :func:`jaxconv.conv{n}d` with respect to its input (see
    :mod:`jaxconv.conv_transpose`).

    Args:
      input: {x_shapes}
      weight: {w_shapes} The forward conv's weight: the O axis holds C_in.
      bias: optional (C_out,), added to every position of output channel o.
      stride: int or a sequence of one or {n} ints, >= 1: the input's elements land
        ``stride`` apart in the output.
      padding: int or a sequence of one or {n} ints, >= 0, cropped from both sides of the
        full output (no strings, as in PyTorch).
      output_padding: like padding, added after; per axis < ``max(stride, dilation)``.
      groups: C_in and C_out are split into ``groups`` blocks; block g of the output sees
        only block g of the input. Must divide C_in.
      dilation: int or a sequence of one or {n} ints, >= 1; the kernel's taps are ``d``
        apart.
      layout: {layouts}
      impl: ``"auto"`` (default: on CPU the stride phases, for 3-D over depth planes; lax
        elsewhere; see :func:`jaxconv.kernels.dispatch.select_transpose_impl`), ``"lax"``
        (one convolution of the stride-dilated input), ``"phases"`` (a stride-1 convolution
        per stride phase, then a pixel shuffle; derivatives in XLA:CPU's fast forms) or
        ``"planes"`` (3-D in NCDHW/NDHWC: one 2-D transposed conv over the depth planes,
        then the depth taps added; the phases otherwise). The same values; NaN and inf
        reach the same outputs as in PyTorch on every path.
      precision: ``lax.Precision`` or None (JAX's default), passed to the convolution.

    Returns:
      {out_shapes}, in the promoted dtype of input, weight and bias, where per axis
      ``o = (n - 1) * s - 2 * p + d * (k - 1) + output_padding + 1``, see
      :func:`jaxconv.shapes.conv_transpose_output_size`.

    Raises:
      TypeError: non-floating input, weight or bias; non-int geometry; a padding string.
      ValueError: bad rank, C_in not divisible by groups or not the input's channels,
        non-positive stride/dilation/groups, negative padding or output_padding,
        output_padding >= max(stride, dilation), an output size below 1, unknown layout or
        impl, bias not of shape (C_out,).
"""


def conv_transpose1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCL",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_transpose_nd(
        1, input, weight, bias, stride, padding, output_padding, groups, dilation, layout,
        impl, precision,
    )  # fmt: skip


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCHW",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_transpose_nd(
        2, input, weight, bias, stride, padding, output_padding, groups, dilation, layout,
        impl, precision,
    )  # fmt: skip


def conv_transpose3d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCDHW",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_transpose_nd(
        3, input, weight, bias, stride, padding, output_padding, groups, dilation, layout,
        impl, precision,
    )  # fmt: skip


conv_transpose1d.__doc__ = _DOC.format(
    n=1,
    x_shapes="(N, C_in, L) or unbatched (C_in, L); NLC: (N, L, C_in) or (L, C_in).",
    w_shapes="(C_in, C_out // groups, k) (PyTorch's); NLC: (k, C_out // groups, C_in).",
    layouts='``"NCL"`` (PyTorch\'s) or ``"NLC"`` (channels last).',
    out_shapes="(N, C_out, ol) (unbatched: (C_out, ol); NLC: channels last)",
)
conv_transpose2d.__doc__ = _DOC.format(
    n=2,
    x_shapes="(N, C_in, H, W) or unbatched (C_in, H, W); NHWC: channels last; CHWN:\n"
    "        (C_in, H, W, N), batched only.",
    w_shapes="(C_in, C_out // groups, kh, kw) (PyTorch's); NHWC and CHWN:\n"
    "        (kh, kw, C_out // groups, C_in).",
    layouts='``"NCHW"`` (PyTorch\'s), ``"NHWC"`` or ``"CHWN"`` (batch last).',
    out_shapes="(N, C_out, oh, ow) (unbatched: (C_out, oh, ow); NHWC: channels last; CHWN:\n"
    "      (C_out, oh, ow, N))",
)
conv_transpose3d.__doc__ = _DOC.format(
    n=3,
    x_shapes="(N, C_in, D, H, W) or unbatched (C_in, D, H, W); NDHWC: channels last.",
    w_shapes="(C_in, C_out // groups, kd, kh, kw) (PyTorch's); NDHWC:\n"
    "        (kd, kh, kw, C_out // groups, C_in).",
    layouts='``"NCDHW"`` (PyTorch\'s) or ``"NDHWC"`` (channels last).',
    out_shapes="(N, C_out, od, oh, ow) (unbatched: (C_out, od, oh, ow); NDHWC: channels last)",
)
