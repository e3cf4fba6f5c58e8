"""The library path: XLA's own convolution (``lax.conv_general_dilated``), for every layout and
geometry. The reference the other paths are compared with, and the fallback where they do
not apply; and the transposed convolution, as one XLA convolution."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import LAYOUT_KERNELS, spatial_letters
from jaxconv.geometry import ConvGeometry, ConvTransposeGeometry

Array = jax.Array


def dimension_numbers(layout: str) -> tuple[str, str, str]:
    """(input, kernel, output) specs for ``lax.conv_general_dilated`` in ``layout``."""
    return (layout, LAYOUT_KERNELS[layout], layout)


def conv_lax(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched conv through XLA's convolution."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=geom.stride,
        padding=geom.padding,
        rhs_dilation=geom.dilation,
        dimension_numbers=dimension_numbers(geom.layout),
        feature_group_count=geom.groups,
        precision=precision,
    )


def conv_transpose_lax(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """Batched transposed conv (PyTorch's) as ONE ``lax.conv_general_dilated``.

    The input gradient of a forward conv is a conv of the output gradient, dilated by the
    stride, with the kernel flipped and its in/out channel axes swapped within each group,
    padded by ``d*(k-1) - p`` before and ``d*(k-1) - p + output_padding`` after (negative
    where ``p > d*(k-1)``: lax then crops).

    ``w`` is the forward conv's kernel in ``LAYOUT_KERNELS[geom.layout]``, its O axis this
    op's input channels; ``geom.padding`` is torch's ``(p, p)`` per axis.
    """
    spatial = spatial_letters(geom.layout)
    G, cin, cout = geom.groups, geom.in_channels, geom.out_channels
    # to torch's (C_in, C_out // G, *k), then per group swap in/out -> (C_out, C_in // G, *k)
    w = w.transpose([LAYOUT_KERNELS[geom.layout].index(c) for c in "OI" + spatial])
    w = w.reshape(G, cin // G, cout // G, *geom.kernel).swapaxes(1, 2)  # (G, Og, Cg, *k)
    w = w.reshape(cout, cin // G, *geom.kernel)
    w = jnp.flip(w, axis=tuple(range(2, w.ndim)))
    pads = [
        (d * (k - 1) - lo, d * (k - 1) - hi + op)
        for k, d, (lo, hi), op in zip(
            geom.kernel, geom.dilation, geom.padding, geom.output_padding, strict=True
        )
    ]
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=(1,) * len(spatial),
        padding=pads,
        lhs_dilation=geom.stride,
        rhs_dilation=geom.dilation,
        dimension_numbers=(geom.layout, "OI" + spatial, geom.layout),
        feature_group_count=G,
        precision=precision,
    )
