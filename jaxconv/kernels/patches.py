"""``conv2d(impl="patches")``: the convolution as explicit patches (one strided slice per
kernel tap, see :func:`~jaxconv.kernels.windows.strided_taps`) and one grouped matrix product,
the textbook im2col, for any stride, padding, dilation and groups."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv._args import layout_axes
from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.windows import strided_taps

Array = jax.Array

#: The most elements a patch matrix may have: past it XLA:CPU aborts the process (seen at
#: 2**37 elements) instead of raising, so ``conv2d`` refuses the call first.
MAX_PATCHES = 2**31


def patch_count(x_shape: tuple[int, ...], w_size: int, geom: ConvGeometry) -> int:
    """Elements of the patch matrix of a batched or unbatched input of ``x_shape``."""
    n = x_shape[0] if len(x_shape) == len(geom.layout) else 1
    return n * geom.out_size[0] * geom.out_size[1] * w_size // geom.out_channels


def _taps(x: Array, geom: ConvGeometry) -> list[Array]:
    return strided_taps(
        x, geom.axes, geom.kernel, geom.padding, geom.out_size, geom.stride, geom.dilation
    )


def conv_patches(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched conv as explicit patches (strided slices) and one grouped matrix product."""
    if geom.layout == "CHWN":  # the NHWC product, between transposes
        nhwc = dataclasses.replace(geom, layout="NHWC", axes=layout_axes("NHWC")[1])
        y = conv_patches(x.transpose(3, 1, 2, 0), w, nhwc, precision)
        return y.transpose(3, 1, 2, 0)
    n, G = x.shape[0], geom.groups
    (kh, kw), (oh, ow) = geom.kernel, geom.out_size
    cg, og = geom.in_channels // G, geom.out_channels // G
    if geom.layout == "NCHW":
        p = jnp.stack(_taps(x, geom), axis=2)  # (N, C, kh*kw, oh, ow)
        p = p.reshape(n, G, cg, kh * kw, oh, ow)
        k = w.reshape(G, og, cg, kh * kw)  # OIHW -> (G, Og, Cg, kh*kw)
        y = jnp.einsum("ngckhw,gock->ngohw", p, k, precision=precision)
        return y.reshape(n, geom.out_channels, oh, ow)
    p = jnp.stack(_taps(x, geom), axis=3)  # (N, oh, ow, kh*kw, C)
    p = p.reshape(n, oh, ow, kh * kw, G, cg)
    k = w.reshape(kh * kw, cg, G, og)  # HWIO -> (kh*kw, Cg, G, Og)
    y = jnp.einsum("nhwkgc,kcgo->nhwgo", p, k, precision=precision)
    return y.reshape(n, oh, ow, geom.out_channels)
