"""The library path: XLA's own convolution (``lax.conv_general_dilated``), for every layout and
geometry. The reference the other paths are compared with, and the fallback where they do
not apply."""

from __future__ import annotations

from typing import Any

import jax
from jax import lax

from jaxconv._args import LAYOUT_KERNELS
from jaxconv.geometry import ConvGeometry

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
