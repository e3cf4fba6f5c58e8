"""A 3-D transposed convolution as ONE 2-D transposed convolution over depth planes and a
depth overlap-add: ``conv_transpose3d(impl="planes")``.

Why: XLA:CPU's 3-D convolutions (and so every form of a 3-D transposed conv and its
gradients) are many times slower than PyTorch's, while jaxconv's 2-D transposed conv
(:mod:`jaxconv.kernels.phases`) runs near PyTorch's speed in both directions.

How: input depth plane ``i`` with depth tap ``a`` lands on output depth plane
``i * sd + a * dd - pd``. Fold the depth into the batch and the kd depth taps into the output
channels (order (groups, C_out // groups, kd), so groups stay contiguous): one 2-D transposed
conv gives, for every input plane and depth tap, its (H, W) contribution. Each tap's planes
then go ``sd`` apart, shifted by ``a * dd - pd`` (one interior-padded ``lax.pad``, negative
edges crop), and the kd taps add up. Only zeros are added, nothing is multiplied by padding, so
NaN and inf reach exactly PyTorch's outputs; the derivatives are the 2-D path's and pads'.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.geometry import ConvTransposeGeometry, conv_transpose_geometry
from jaxconv.kernels.phases import conv_transpose_phases

Array = jax.Array

#: The 3-D layouts and the 2-D layout their planes are computed in.
PLANE_LAYOUTS = {"NCDHW": "NCHW", "NDHWC": "NHWC"}


def plane_geometry(geom: ConvTransposeGeometry, n_planes: int) -> ConvTransposeGeometry:
    """The 2-D transposed conv over all ``n_planes`` (batch * depth) input planes, the kd
    depth taps as extra output channels."""
    layout2 = PLANE_LAYOUTS[geom.layout]
    cin, og, kd = geom.in_channels, geom.out_channels // geom.groups, geom.kernel[0]
    h, w = geom.in_size[1:]
    x_shape = (n_planes, cin, h, w) if layout2 == "NCHW" else (n_planes, h, w, cin)
    kh, kw = geom.kernel[1:]
    w_shape = (cin, og * kd, kh, kw) if layout2 == "NCHW" else (kh, kw, og * kd, cin)
    return conv_transpose_geometry(
        x_shape,
        w_shape,
        stride=geom.stride[1:],
        padding=[lo for lo, _ in geom.padding[1:]],
        output_padding=geom.output_padding[1:],
        groups=geom.groups,
        dilation=geom.dilation[1:],
        layout=layout2,
    )


def _planes_kernel(w: Array, geom: ConvTransposeGeometry) -> Array:
    """The 2-D kernel: the depth taps moved next to the output channels, (C_out // G, kd)."""
    if geom.layout == "NCDHW":  # (C_in, O_g, kd, kh, kw) -> (C_in, O_g * kd, kh, kw)
        return w.reshape(w.shape[0], -1, *w.shape[3:])
    # (kd, kh, kw, O_g, C_in) -> (kh, kw, O_g, kd, C_in) -> (kh, kw, O_g * kd, C_in)
    kh, kw, og, cin = w.shape[1:]
    return w.transpose(1, 2, 3, 0, 4).reshape(kh, kw, og * w.shape[0], cin)


def depth_overlap_add(u: Array, geom: ConvTransposeGeometry, depth_axis: int) -> Array:
    """``u``: the kd taps' planes, tap ``a`` at ``u[a]``, input depth on ``depth_axis`` (of
    ``u[a]``) -> the sum of each tap's planes placed ``sd`` apart from ``a * dd - pd``."""
    d_in, d_out = geom.in_size[0], geom.out_size[0]
    s, d, (p, _) = geom.stride[0], geom.dilation[0], geom.padding[0]
    zero = jnp.zeros((), u.dtype)
    y = None
    for a in range(geom.kernel[0]):
        lo = a * d - p
        config = [(0, 0, 0)] * (u.ndim - 1)
        config[depth_axis] = (lo, d_out - lo - ((d_in - 1) * s + 1), s - 1)
        part = lax.pad(u[a], zero, config)
        y = part if y is None else y + part
    return y


def conv_transpose_planes(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """Batched 3-D transposed conv (PyTorch's) in NCDHW or NDHWC, ``x`` and ``w`` as for
    :func:`jaxconv.kernels.xla.conv_transpose_lax`; other layouts and ranks: the stride
    phases directly."""
    if geom.layout not in PLANE_LAYOUTS:
        return conv_transpose_phases(x, w, geom, precision)
    n, depth, kd = x.shape[0], geom.in_size[0], geom.kernel[0]
    if geom.layout == "NCDHW":
        planes = x.swapaxes(1, 2).reshape(n * depth, *x.shape[1:2], *x.shape[3:])
    else:
        planes = x.reshape(n * depth, *x.shape[2:])
    geom2 = plane_geometry(geom, n * depth)
    u = conv_transpose_phases(planes, _planes_kernel(w, geom), geom2, precision)
    if geom.layout == "NCDHW":  # (N*D, G*O_g*kd, oh, ow) -> (kd, N, C_out, D, oh, ow)
        u = u.reshape(n, depth, geom.out_channels, kd, *u.shape[2:])
        u = u.transpose(3, 0, 2, 1, 4, 5)
        return depth_overlap_add(u, geom, 2)
    # (N*D, oh, ow, G*O_g*kd) -> (kd, N, D, oh, ow, C_out)
    u = u.reshape(n, depth, *u.shape[1:3], geom.out_channels, kd)
    return depth_overlap_add(jnp.moveaxis(u, -1, 0), geom, 1)
