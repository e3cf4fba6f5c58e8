"""A strided 2-D convolution as a sum of stride-1 convolutions over the input's stride phases:
``conv2d(impl="phases")``.

Why: inside ``lax.scan`` / while loops (a training epoch in one jit) XLA:CPU runs the
gradients of a strided convolution (the input gradient a convolution of the output gradient
dilated by the stride, the weight gradient one with a dilated kernel) in slow loop forms:
the book's ResNet-18 layers at stride 2 took 19-59x their plain-jit time there
(docs/BENCHMARKS.md). Stride-1 convolutions have jaxconv's own rules, fast in loops.

How, per spatial axis with stride ``s`` (dilation 1): output ``i`` reads the padded input at
``i * s + t`` for the taps ``t < k``. Write ``t = j * s + r`` with phase ``r = t mod s``: the
input element is ``(i + j) * s + r``, element ``i + j`` of phase ``r`` (every ``s``-th element
of the padded input from ``r``). So the convolution is the sum, over the phases ``r`` with a
tap (``r < k``), of an unpadded stride-1 convolution of phase ``r`` with the taps
``w[r::s]``. In 2-D that is up to ``sh * sw`` stride-1 convolutions with every tap used once:
no product with a zero tap is added (a single convolution over the phases stacked on the
channel axis would pad the kernel to a multiple of the stride, 16/9 of the products for 3x3
at stride 2). The phases come from :func:`~jaxconv.kernels.windows.stride_phases`, whose
transpose is one concatenate; each stride-1 convolution runs through the 2-D dispatch it is
given, so its derivatives are those of jaxconv's stride-1 paths. Forward and reverse mode
work wherever theirs do. The phase convolutions run unpadded: padded by one and cropped (as
:func:`~jaxconv.kernels.planes.pads_and_crops` does for the planes), a 2x2 phase's weight
gradient took XLA:CPU's slow form (9-27x the time of the whole layer's forward+backward).

Layouts: the phase convolutions run in NHWC (the layout of jaxconv's stride-1 rules); NCHW
and CHWN are transposed there and back. NaN and inf inputs reach the outputs they reach
through lax, except where a phase convolution takes Winograd (3x3 taps of a 5x5 or 6x6
kernel at stride 2 in a wide float32 layer, see :mod:`~jaxconv.kernels.dispatch`), with its
tile footprint, and in the stacked form (:func:`stacked_phases`). The padding is explicit
zeros, multiplied by the weights: NaN/inf weights reach the outputs whose window holds
padding too (as with ``impl="patches"``), where XLA's convolution may skip it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.geometry import ConvGeometry, conv_geometry
from jaxconv.kernels.nhwc import from_nhwc, to_nhwc
from jaxconv.kernels.windows import stride_phases
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

Conv2d = Callable[[Array, Array, ConvGeometry, Any], Array]


def phases_apply(geom: ConvGeometry) -> bool:
    """Whether ``impl="phases"`` has its own path: 2-D, strided (some stride > 1),
    dilation 1, groups 1."""
    return (
        len(geom.kernel) == 2
        and max(geom.stride) > 1
        and geom.dilation == (1, 1)
        and geom.groups == 1
    )


#: Inputs with at most this many channels times stride phases (a one- to four-channel image
#: at stride 2) run their phases as ONE conv, stacked on the channel axis.
STACK_CHANNELS = 16


def stacks_phases(geom: ConvGeometry) -> bool:
    """Whether the phases run as one conv over the phases stacked on the channel axis (few
    input channels, see :func:`stacked_phases`) instead of one conv per phase."""
    return geom.in_channels * geom.stride[0] * geom.stride[1] <= STACK_CHANNELS


def stacked_phases(x: Array, w: Array, geom: ConvGeometry, precision: Any, conv2d: Conv2d) -> Array:
    """NHWC ``x``, HWIO ``w``: the phases' convs as ONE stride-1 conv of the phases stacked on
    the channel axis, (N, oh + ah - 1, ow + aw - 1, sh*sw*C), with the kernel padded with zero
    taps to (ah*sh, aw*sw) (``a = ceil(k / s)``) and rearranged to (ah, aw, sh*sw*C, O).

    Why: with one or a few input channels each phase's conv is a tap sum whose weight
    gradient is a matrix product over every output position; per phase, XLA:CPU fused the
    output gradient's producers (batch norm's and max pooling's derivatives) into each of
    those products and computed them once per phase. The zero taps cost (ah*sh*aw*sw) /
    (kh*kw) of the products (64/49 for the 7x7 stride-2 stem), and they multiply inputs: a
    NaN or inf input reaches the outputs whose window, rounded up to a multiple of the
    stride, holds it."""
    (sh, sw), (kh, kw), (oh, ow) = geom.stride, geom.kernel, geom.out_size
    ah, aw = -(-kh // sh), -(-kw // sw)
    phases = stride_phases(x, (1, 2), geom.padding, geom.stride)
    stacked = jnp.concatenate([p[:, : oh + ah - 1, : ow + aw - 1] for p in phases], axis=3)
    c, o = w.shape[2:]
    taps = jnp.pad(w, ((0, ah * sh - kh), (0, aw * sw - kw), (0, 0), (0, 0)))
    taps = taps.reshape(ah, sh, aw, sw, c, o).transpose(0, 2, 1, 3, 4, 5)
    taps = taps.reshape(ah, aw, sh * sw * c, o)
    return conv2d(stacked, taps, conv_geometry(stacked.shape, taps.shape, layout="NHWC"), precision)


def conv_phases(x: Array, w: Array, geom: ConvGeometry, precision: Any, conv2d: Conv2d) -> Array:
    """Batched strided 2-D conv (NCHW, NHWC or CHWN) as the sum over the input's stride
    phases of stride-1 convs run by ``conv2d`` (an entry of the 2-D registry); lax for
    geometries :func:`phases_apply` refuses. Returns the output in ``geom.layout``."""
    if not phases_apply(geom):
        return conv_lax(x, w, geom, precision)
    x, w = to_nhwc(x, w, geom.layout)
    if stacks_phases(geom):
        return from_nhwc(stacked_phases(x, w, geom, precision, conv2d), geom.layout)
    (sh, sw), (kh, kw), (oh, ow) = geom.stride, geom.kernel, geom.out_size
    phases = stride_phases(x, (1, 2), geom.padding, geom.stride)
    y = None
    for rh, rw in itertools.product(range(min(sh, kh)), range(min(sw, kw))):
        taps = w[rh::sh, rw::sw]  # (ceil((kh - rh) / sh), ceil((kw - rw) / sw), C, O)
        ph, pw = oh + taps.shape[0] - 1, ow + taps.shape[1] - 1
        phase = phases[rh * sw + rw][:, :ph, :pw]
        term = conv2d(phase, taps, conv_geometry(phase.shape, taps.shape, layout="NHWC"), precision)
        y = term if y is None else y + term
    return from_nhwc(y, geom.layout)
