"""A 3-D convolution's values by Winograd's F(3x3, 3x3) over its stacked depth planes: the
values of ``conv3d(impl="plane_patches")`` for wide 3x3 (H, W) windows at stride 1.

Why: on XLA:CPU the direct 3-D conv's products ran at the matrix product's speed at best
(the chunked patch matrices' product alone: 77 GFLOP/s of a one-core peak near 85-90 on the
measured AMD EPYC), and PyTorch's oneDNN 3-D convolution ran at about that speed too. Only
fewer products can go faster: Winograd's F(3x3, 3x3) (:mod:`~jaxconv.kernels.winograd`)
computes a 3x3 tile of a plane's outputs with 25 products per channel pair instead of 81.

What it computes: the outputs of a 3-D conv are ONE 2-D conv of the depth taps' input planes
stacked on the channel axis, the output depth folded into the batch
(:mod:`~jaxconv.kernels.planes`: kd*C input channels, the (3, 3) window, the (H, W) padding).
Here that 2-D conv runs by Winograd (:func:`~jaxconv.kernels.winograd.winograd_nhwc`, over
chunks of the batch that stay in cache), so it takes no pad-and-crop either. NCDHW input is
transposed to channels last before the stacking: stacking straight from NCDHW took 16.7 ms
on the family's conv3d layer (4x16x32^3), the transpose 1.8 ms and the stacking from NDHWC
4.5 ms.

Only values: the derivatives are :mod:`~jaxconv.kernels.plane_patches`' rule, which calls
:func:`plane_winograd_values` for the values where :func:`plane_winograd_wins`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from jaxconv.geometry import ConvGeometry
from jaxconv.kernels import winograd
from jaxconv.kernels.planes import stacked_input, stacked_kernel

Array = jax.Array

#: The layouts this path is written for.
WINOGRAD_PLANE_LAYOUTS = ("NCDHW", "NDHWC")

#: Stacked input channels (kd*C) and output channels from which the dispatch takes these
#: values, and the smallest output side of a plane: as the 2-D Winograd path
#: (:data:`~jaxconv.kernels.winograd.MIN_CHANNELS`, :data:`~jaxconv.kernels.winograd.MIN_SIDE`).
MIN_CHANNELS = winograd.MIN_CHANNELS
MIN_SIDE = winograd.MIN_SIDE


def plane_winograd_applies(geom: ConvGeometry) -> bool:
    """Whether the values can come from this path: a 3-D geometry in NCDHW or NDHWC, groups
    1, a 3x3 window in (H, W) at stride 1 and dilation 1 there, (H, W) padding under 3 on
    every side (any depth kernel, stride, dilation and padding)."""
    return (
        geom.layout in WINOGRAD_PLANE_LAYOUTS
        and geom.groups == 1
        and geom.kernel[1:] == (3, 3)
        and geom.stride[1:] == (1, 1)
        and geom.dilation[1:] == (1, 1)
        and all(p < 3 for side in geom.padding[1:] for p in side)
    )


def plane_winograd_wins(geom: ConvGeometry) -> bool:
    """Whether the dispatch takes these values on CPU for a float32 layer: where they apply,
    with at least :data:`MIN_CHANNELS` stacked input (kd*C) and output channels and output
    planes of at least :data:`MIN_SIDE` on each side (docs/BENCHMARKS.md)."""
    return (
        plane_winograd_applies(geom)
        and min(geom.kernel[0] * geom.in_channels, geom.out_channels) >= MIN_CHANNELS
        and min(geom.out_size[1:]) >= MIN_SIDE
    )


def plane_winograd_values(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """The conv's values: batched x in ``geom.layout`` (NCDHW or NDHWC), w OIDHW or DHWIO ->
    (N, O, od, oh, ow) or (N, od, oh, ow, O), by F(3x3, 3x3) over the stacked depth planes
    (module docstring). Raises ValueError where :func:`plane_winograd_applies` refuses."""
    if not plane_winograd_applies(geom):
        raise ValueError(f"plane_winograd_values takes 3x3 (H, W) windows at stride 1, got {geom}")
    if geom.layout == "NCDHW":
        x = x.transpose(0, 2, 3, 4, 1)
        w = w.transpose(2, 3, 4, 1, 0)
    geom_cl = dataclasses.replace(geom, layout="NDHWC", axes=(1, 2, 3))
    x2, w2 = stacked_input(x, geom_cl), stacked_kernel(w, geom_cl)
    y2 = winograd.winograd_nhwc(x2, w2, geom.padding[1:], precision)  # (N*od, oh, ow, O)
    y = y2.reshape(x.shape[0], geom.out_size[0], *y2.shape[1:])
    return y if geom.layout == "NDHWC" else y.transpose(0, 4, 1, 2, 3)
