"""The NHWC rule of ``conv2d(impl="vjp")``: stride 1, dilation 1, groups 1, any padding.

Why: inside ``lax.scan`` / while loops (a whole training epoch in one jit) XLA:CPU keeps the
convolutions that JAX's autodiff emits for the input and weight gradients in non-canonical
dimension orders, and those miss its fast convolution kernels; outside loops XLA rewrites them
into canonical form itself (numbers in docs/BENCHMARKS.md).

How: a ``custom_jvp`` whose tangent is written so that its *transpose* (what reverse mode runs)
is canonical: dimension numbers arranged so that JAX's transpose rule for the convolution lands
on NHWC/HWIO/NHWC, or a matrix product over explicit patches. Forward mode works too (jax.jvp,
jacfwd: the tangent itself is an ordinary, if slower, convolution), and the rule is itself
differentiable, so higher derivatives work as for lax.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import Padding
from jaxconv.kernels.windows import patch_bytes, unit_out_size, unit_taps
from jaxconv.kernels.xla import dimension_numbers

Array = jax.Array

_NHWC = dimension_numbers("NHWC")

#: Bytes an explicit patch matrix may take before the convolution form is used instead.
NHWC_PATCH_BYTES = 64 * 2**20

#: Layers with at most this many Cin * Cout channel pairs (LeNet's) take explicit patches and
#: a matrix product: for few channels the patch copies are cheap and XLA:CPU's convolution
#: kernels are poor; wider layers are faster as convolutions.
FEW_CHANNEL_PAIRS = 256


def to_nhwc(x: Array, w: Array, layout: str) -> tuple[Array, Array]:
    """A batched 2-D input in ``layout`` (NCHW, NHWC or CHWN) and its kernel (OIHW, or HWIO)
    as NHWC and HWIO: the layout the 2-D rules compute in."""
    if layout == "NCHW":
        return x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    if layout == "CHWN":
        return x.transpose(3, 1, 2, 0), w
    return x, w


def from_nhwc(y: Array, layout: str) -> Array:
    """An NHWC output in ``layout`` (NCHW, NHWC or CHWN): the inverse of :func:`to_nhwc`."""
    if layout == "NCHW":
        return y.transpose(0, 3, 1, 2)
    if layout == "CHWN":
        return y.transpose(3, 1, 2, 0)
    return y


def tap_sum(taps: list[Array], w: Array, channel_axis: int) -> Array:
    """One input channel: the sum over taps of each (single-channel) tap times the tap's
    (Cout,) weights, laid along ``channel_axis`` (3 for NHWC, 0 for CHWN)."""
    kw, shape = w.shape[1], [1, 1, 1, 1]
    shape[channel_axis] = w.shape[3]
    return sum(t * w[i // kw, i % kw, 0].reshape(shape) for i, t in enumerate(taps))


def _forward_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """The values. One input channel: the sum over taps of a shifted slice times the tap's
    (Cout,) weights, one fused elementwise loop (XLA:CPU's convolution kernels are poor for
    C == 1). Otherwise lax."""
    kh, kw, ci, _ = w.shape
    if ci == 1:
        return tap_sum(unit_taps(x, (kh, kw), pads), w, 3)  # taps (N, oh, ow, 1)
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


def _tangent_from_input(tx: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """conv(tx, w), written so that its transpose (the input gradient) is canonical.

    Few channels (:data:`FEW_CHANNEL_PAIRS`): explicit patches times the kernel matrix; the
    transpose is ``dy @ W^T`` and a sum of shifted pads (col2im), one fusion. Otherwise a
    convolution whose kernel is given as HWOI: JAX's transpose swaps I and O, so the input
    gradient is a forward NHWC/HWIO convolution with the flipped kernel.
    """
    kh, kw, ci, co = w.shape
    if ci * co <= FEW_CHANNEL_PAIRS and patch_bytes(tx, (kh, kw), pads) <= NHWC_PATCH_BYTES:
        cols = jnp.stack(unit_taps(tx, (kh, kw), pads), axis=3)  # (N, oh, ow, kh*kw, Cin)
        cols = cols.reshape(*cols.shape[:3], kh * kw * ci)
        return jnp.dot(cols, w.reshape(kh * kw * ci, co), precision=precision)
    return lax.conv_general_dilated(
        tx,
        w.transpose(0, 1, 3, 2),  # (kh, kw, Cout, Cin)
        (1, 1),
        pads,
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
        precision=precision,
    )


def _tangent_from_kernel(x: Array, tw: Array, pads: Padding, precision: Any) -> Array:
    """conv(x, tw), written so that its transpose (the weight gradient) is canonical.

    One input channel: the taps as a (kh*kw, M) matrix times tw as (kh*kw, Cout); the
    transpose is one (kh*kw, M) @ (M, Cout) product. Otherwise a convolution of x as
    (C, H, W, N) ("CHWN") with tw as (Cin, kh, kw, Cout) ("IHWO") into (oh, ow, N, Cout)
    ("HWNC"): JAX's transpose swaps batch and feature of x and of the output, which makes the
    weight gradient a forward NHWC/HWIO convolution (batch = Cin, feature = N).
    """
    n, kh, kw, ci, co = x.shape[0], *tw.shape
    oh, ow = unit_out_size(x.shape, (kh, kw), pads)
    if ci == 1 and patch_bytes(x, (kh, kw), pads) <= NHWC_PATCH_BYTES:
        cols = jnp.stack([t[..., 0] for t in unit_taps(x, (kh, kw), pads)])  # (kh*kw, N, oh, ow)
        y = jnp.dot(cols.reshape(kh * kw, -1).T, tw.reshape(kh * kw, co), precision=precision)
        return y.reshape(n, oh, ow, co)
    y = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),  # (C, H, W, N)
        tw.transpose(2, 0, 1, 3),  # (Cin, kh, kw, Cout)
        (1, 1),
        pads,
        dimension_numbers=("CHWN", "IHWO", "HWNC"),
        precision=precision,
    )  # (oh, ow, N, Cout)
    return y.transpose(2, 0, 1, 3)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """Stride 1, dilation 1, groups 1: x (N, H, W, Cin), w (kh, kw, Cin, Cout) ->
    (N, oh, ow, Cout); values from ``_forward_nhwc``, derivatives from ``_conv_nhwc_jvp``."""
    return _forward_nhwc(x, w, pads, precision)


@functools.partial(conv_nhwc.defjvp, symbolic_zeros=True)
def _conv_nhwc_jvp(
    pads: Padding, precision: Any, primals: tuple[Array, Array], tangents: tuple[Any, Any]
) -> tuple[Array, Array]:
    (x, w), (tx, tw) = primals, tangents
    y = _forward_nhwc(x, w, pads, precision)
    terms = []  # a symbolic-zero tangent (e.g. the input images) costs nothing
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        terms.append(_tangent_from_input(tx, w, pads, precision))
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        terms.append(_tangent_from_kernel(x, tw, pads, precision))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)
