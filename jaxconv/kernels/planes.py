"""A 3-D convolution as ONE 2-D convolution over depth planes: ``conv3d(impl="planes")``.

Why: XLA:CPU's 3-D convolutions (and their gradients) are several times slower than PyTorch's,
while its 2-D ones, with jaxconv's own 2-D rules for the gradients, are fast.

How: a 3-D conv is a sum over the kd depth taps of 2-D convs. Output plane ``z`` sees, for
depth tap ``a``, input plane ``z*sd + a*dd - pad_front``: one strided slice of the
depth-padded input per tap gives those planes for every ``z`` at once. The kd slices are
stacked on the channel axis in the order (groups, kd, C/groups), so that each group's channels
stay contiguous, and the output depth is folded into the batch: the result is one 2-D conv
with kd*C input channels, batch N*od, the kernel's (kh, kw) window, stride, padding and
dilation, and the same groups, with the kernel reshaped to (kh, kw, kd*C/groups, O) (HWIO)
in the matching order. The 2-D conv runs through a 2-D implementation given by the caller (jaxconv's
dispatch), so its gradients take jaxconv's 2-D paths; the stacking's own derivative is pads
and adds. Forward and reverse mode both work wherever the 2-D path's do. An unpadded
stride-1 plane conv runs padded by one and cropped (:func:`pads_and_crops`): XLA:CPU's
unpadded NHWC convolution is the slower kernel.

Layouts: the 2-D conv runs in NHWC (the layout jaxconv's 2-D rules compute in, and on XLA:CPU
faster than NCHW for the strided convs lax runs). NDHWC input needs no transpose; NCDHW
moves its channels last inside the stacking copy and back in one copy of the output.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.geometry import ConvGeometry, conv_geometry
from jaxconv.kernels.windows import strided_taps
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

Conv2d = Callable[[Array, Array, ConvGeometry, Any], Array]

#: The 3-D layouts the plane stacking is written for; the 2-D conv runs in NHWC for both.
PLANE_LAYOUTS = ("NCDHW", "NDHWC")


def planes_apply(geom: ConvGeometry) -> bool:
    """Whether ``impl="planes"`` has its own path: a 3-D geometry in NCDHW or NDHWC."""
    return geom.layout in PLANE_LAYOUTS


def depth_planes(x: Array, geom: ConvGeometry) -> list[Array]:
    """The kd depth taps of ``x`` (batched, ``geom.layout``): for tap ``a`` the input planes
    ``z*sd + a*dd`` of the zero-padded depth axis, ``z < od``. kd arrays shaped like ``x``
    with the depth axis D -> od."""
    return strided_taps(
        x, geom.axes[:1], geom.kernel[:1], geom.padding[:1], geom.out_size[:1],
        geom.stride[:1], geom.dilation[:1],
    )  # fmt: skip


def stacked_input(x: Array, geom: ConvGeometry) -> Array:
    """The 2-D conv's NHWC input: the depth taps stacked on the channel axis in (groups, kd,
    C/groups) order, the output depth folded into the batch: (N*od, H, W, kd*C) from NCDHW
    (N, C, D, H, W) or NDHWC (N, D, H, W, C)."""
    g, c, kd = geom.groups, geom.in_channels, geom.kernel[0]
    taps = depth_planes(x, geom)
    if geom.layout == "NDHWC":
        n, od, h, w = taps[0].shape[:4]
        split = [t.reshape(n, od, h, w, g, c // g) for t in taps]
        stacked = jnp.stack(split, axis=5)  # (N, od, H, W, G, kd, C/G)
    else:
        n, _, od, h, w = taps[0].shape
        split = [t.reshape(n, g, c // g, od, h, w) for t in taps]
        stacked = jnp.stack(split, axis=2)  # (N, G, kd, C/G, od, H, W)
        stacked = stacked.transpose(0, 4, 5, 6, 1, 2, 3)  # (N, od, H, W, G, kd, C/G)
    return stacked.reshape(n * od, h, w, kd * c)


def stacked_kernel(w: Array, geom: ConvGeometry) -> Array:
    """The 2-D conv's HWIO kernel (kh, kw, kd*C/G, O), input channels in (kd, C/G) order as
    :func:`stacked_input` lays each group's, from OIDHW (O, C/G, kd, kh, kw) or DHWIO
    (kd, kh, kw, C/G, O)."""
    if geom.layout == "NDHWC":
        kd, kh, kw, cg, o = w.shape
        return w.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * cg, o)
    o, cg, kd, kh, kw = w.shape
    return w.transpose(3, 4, 2, 1, 0).reshape(kh, kw, kd * cg, o)


def plane_geometry(
    x2_shape: tuple[int, ...], w2_shape: tuple[int, ...], geom: ConvGeometry, padding: Any = None
) -> ConvGeometry:
    """The 2-D geometry of the stacked conv: the (H, W) part of ``geom`` (its padding replaced
    by ``padding`` when given)."""
    return conv_geometry(
        x2_shape,
        w2_shape,
        stride=geom.stride[1:],
        padding=geom.padding[1:] if padding is None else padding,
        dilation=geom.dilation[1:],
        groups=geom.groups,
        layout="NHWC",
    )


def pads_and_crops(geom2: ConvGeometry) -> bool:
    """Whether the 2-D conv runs padded by one on every side and cropped by one after: an
    unpadded stride-1, dilation-1 conv with a kernel of at least 2x2. XLA:CPU's NHWC convolution
    was 2.5-3x slower without padding than with one on each side (same input, same kernel),
    and at stride 1 the padded output's interior is the unpadded output exactly."""
    return (
        geom2.padding == ((0, 0), (0, 0))
        and geom2.stride == (1, 1)
        and geom2.dilation == (1, 1)
        and min(geom2.kernel) > 1
    )


def conv_planes(x: Array, w: Array, geom: ConvGeometry, precision: Any, conv2d: Conv2d) -> Array:
    """Batched 3-D conv (NCDHW or NDHWC) as one 2-D conv run by ``conv2d`` (an entry of the
    2-D registry: batched input, kernel, 2-D geometry, precision); lax for other geometries.
    Returns (N, O, od, oh, ow) or (N, od, oh, ow, O)."""
    if not planes_apply(geom):
        return conv_lax(x, w, geom, precision)
    x2, w2 = stacked_input(x, geom), stacked_kernel(w, geom)
    geom2 = plane_geometry(x2.shape, w2.shape, geom)
    if pads_and_crops(geom2):
        padded = plane_geometry(x2.shape, w2.shape, geom, padding=1)
        y2 = conv2d(x2, w2, padded, precision)[:, 1:-1, 1:-1, :]
    else:
        y2 = conv2d(x2, w2, geom2, precision)
    y = y2.reshape(x.shape[0], geom.out_size[0], *y2.shape[1:])  # (N, od, oh, ow, O)
    return y if geom.layout == "NDHWC" else y.transpose(0, 4, 1, 2, 3)
