"""A 3-D convolution's values as patch matrices of a few output planes at a time:
``conv3d(impl="plane_patches")``.

Why: on XLA:CPU a matrix product (YNNPACK's) ran some 3-D convs' forward faster than the
depth planes' 2-D convolution (:func:`beats_planes` says which), if the patch matrix it
multiplies stays in cache. Built whole, the patch matrix (every output position times
kd*kh*kw*C) is many times the input and the copy into it dominates; built for a chunk of output
rows inside a loop it is rewritten in place, chunk after chunk, while the product reads it
from cache. The weight gradient is the same kind of work (a sum over output positions of
patch rows times output-gradient rows), so it runs the same loop; the input gradient does
not: a chunk loop's reverse mode adds every chunk's input gradient into a full-size buffer,
so it comes from the caller's path (jaxconv's depth planes, whose input gradient is a 2-D
conv in XLA:CPU's fast forms).

How: the input goes channels last (NCDHW is transposed once) and is padded once. A
``lax.map`` runs over chunks of ``nb`` batch items x ``g`` output planes x ``rh`` output rows
(each a divisor of its axis, chosen by :func:`chunk_shape` so that a chunk's patch matrix
holds about :data:`CHUNK_BYTES`, and at least :data:`MIN_ROWS` rows where a chunk can have
them); per chunk, the kd*kh*kw strided taps of its input slab (stride and dilation as given)
stacked on the channel axis form the (rows, kd*kh*kw*C) patch matrix, times the DHWIO kernel
as a (kd*kh*kw*C, O) matrix. The chunks' outputs are put in place by one transpose, which is
the identity (a bitcast) when only one axis is split, and which also makes NCDHW's output.

Derivatives: a ``custom_jvp`` whose values are always the chunked products. The input's
tangent is that of ``tangent_conv`` (an entry of jaxconv's conv registry computing the same
function, the depth planes in the dispatch), so reverse mode runs that path's input gradient.
The kernel's tangent is :func:`kernel_tangent`, the chunk loop with the kernel as the
variable, written so that its transpose (reverse mode's weight gradient) rebuilds each
chunk's patch matrix in cache and adds one canonical matrix product per chunk. Forward mode
and higher derivatives follow from the same rule (ordinary differentiable JAX operations).
Forward+backward (input and weight gradients; conv3d 4x16x32^3 -> 32 k3, one core) took
0.87-0.92x the depth planes' time at stride 1 p0 and 0.65-0.74x at stride 2 p1, where the
planes' input- and weight-gradient convs together took 1.46x their separate times; inside
``lax.scan`` 0.88x and 0.11x (the planes' strided gradient convs fall to XLA:CPU's slow loop
forms there).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.borrowed import ConvImpl
from jaxconv.kernels.plane_winograd import plane_winograd_values, plane_winograd_wins
from jaxconv.kernels.windows import largest_divisor, strided_taps
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

#: The layouts this path is written for.
PATCH_LAYOUTS = ("NCDHW", "NDHWC")

#: Bytes a chunk's patch matrix aims at: small enough to stay in a core's cache between its
#: copy and its product. On the measured layer (4x16x32^3 -> 32, k3) chunks of 0.8-3.1 MB
#: ran alike and 4.7 MB slower; a whole depth plane of the batch (6 MB) 1.3x and the whole
#: patch matrix (190 MB) 6x slower than one plane of one batch item (1.5 MB).
CHUNK_BYTES = 2 * 2**20

#: A chunk has at least this many rows where its axes allow, whatever its bytes: for wide
#: layers (kd*kh*kw*C in the thousands) the product's own blocking keeps it efficient, and a
#: product of a few rows would not be.
MIN_ROWS = 256


#: Output positions per plane a strided layer needs for this path to be chosen (16x16 won,
#: 8x8 lost; see :func:`beats_planes`).
MIN_STRIDED_PLANE = 256


def plane_patches_apply(geom: ConvGeometry) -> bool:
    """Whether ``impl="plane_patches"`` has its own path: a 3-D geometry in NCDHW or NDHWC
    with groups 1."""
    return geom.layout in PATCH_LAYOUTS and geom.groups == 1


def beats_planes(geom: ConvGeometry) -> bool:
    """Whether this path's values were the faster on XLA:CPU than the depth planes' (float32,
    one core, forward; docs/BENCHMARKS.md): where the planes path's 2-D conv is

    - unpadded with stride 1 and dilation 1 in (H, W) and a kernel of at least 2x2 (the
      planes path runs it padded by one and cropped): 0.56-0.97x its time at every measured
      channel count (4 to 128 in, 16 to 64 out, k3 and k5, 16^3 to 32^3 inputs);
    - strided in (H, W) with output planes of at least :data:`MIN_STRIDED_PLANE` positions:
      0.47-0.96x (8 to 64 channels, 16x16 output planes); with 8x8 output planes 1.09-1.17x.

    Padded stride-1 layers stay on the planes path: measured 0.62-1.31x, faster only with
    16-32 channels on 32x32 planes, slower on 16x16 and 20x20 planes, with k5 and with 128
    channels."""
    if not plane_patches_apply(geom) or max(geom.kernel) == 1:
        return False
    (kh, kw), (oh, ow) = geom.kernel[1:], geom.out_size[1:]
    unpadded = geom.padding[1:] == ((0, 0), (0, 0))
    unit = geom.stride[1:] == (1, 1) and geom.dilation[1:] == (1, 1)
    if unpadded and unit and min(kh, kw) > 1:
        return True
    return geom.stride[1:] != (1, 1) and oh * ow >= MIN_STRIDED_PLANE


def chunk_rows(row_bytes: int) -> int:
    """Output positions a chunk aims at: ``CHUNK_BYTES / row_bytes``, at least
    :data:`MIN_ROWS` (``row_bytes``: the bytes of one patch-matrix row)."""
    return max(CHUNK_BYTES // row_bytes, MIN_ROWS)


def chunk_shape(batch: int, out_size: tuple[int, ...], rows: int) -> tuple[int, int, int]:
    """(nb, g, rh): batch items, output planes and output rows of one chunk, each a divisor
    of its axis (N, od, oh), holding at most ``rows`` output positions where it can (one
    output row, ow positions, at least). Rows are filled first, then planes, then batch
    items: a chunk's input slab is then one contiguous run of the input wherever it can be."""
    od, oh, ow = out_size
    rh = largest_divisor(oh, rows // ow)
    g = largest_divisor(od, rows // (ow * oh)) if rh == oh else 1
    nb = largest_divisor(batch, rows // (ow * oh * od)) if g == od else 1
    return nb, g, rh


def _to_channels_last(x: Array, w: Array, layout: str) -> tuple[Array, Array]:
    """x as NDHWC and w as DHWIO."""
    if layout == "NDHWC":
        return x, w
    return x.transpose(0, 2, 3, 4, 1), w.transpose(2, 3, 4, 1, 0)


def _chunking(
    x: Array, geom: ConvGeometry, rows: int | None, whole_items: bool = False
) -> tuple[Array, tuple[int, int, int], tuple[int, int, int], Callable[[Array], Array]]:
    """The chunks of a channels-last input x (N, D, H, W, C): the padded input, the chunk shape
    (nb, g, rh), the chunk counts along (N, od, oh), and ``cols(i)``, chunk ``i``'s patch
    matrix (nb*g*rh*ow, kd*kh*kw*C), taps major (row-major over the kernel), channels minor.
    ``whole_items``: at most one batch item a chunk (nb == 1)."""
    n, c = x.shape[0], x.shape[-1]
    kernel, stride, dilation = geom.kernel, geom.stride, geom.dilation
    (od, oh, ow), taps = geom.out_size, math.prod(kernel)
    padded = jnp.pad(x, ((0, 0), *geom.padding, (0, 0)))
    rows = chunk_rows(taps * c * x.dtype.itemsize) if rows is None else rows
    if whole_items:
        rows = min(rows, od * oh * ow)
    shape = chunk_shape(n, geom.out_size, rows)
    nb, g, rh = shape
    counts = (n // nb, od // g, oh // rh)
    # Input extent of a chunk: (outputs - 1) * stride + (kernel - 1) * dilation + 1 per axis.
    extent = [
        (m - 1) * s + (k - 1) * d + 1
        for m, s, k, d in zip((g, rh), stride[:2], kernel[:2], dilation[:2], strict=True)
    ]
    slab = (nb, *extent, padded.shape[3], c)

    def cols(i: Array) -> Array:
        b, rest = jnp.divmod(i, counts[1] * counts[2])
        z, r = jnp.divmod(rest, counts[2])
        start = (b * nb, z * g * stride[0], r * rh * stride[1], 0, 0)
        part = lax.dynamic_slice(padded, start, slab)  # (nb, din, hin, Wp, C)
        taps_ = strided_taps(
            part, (1, 2, 3), kernel, ((0, 0),) * 3, (g, rh, ow), stride, dilation
        )  # taps x (nb, g, rh, ow, C)
        return jnp.stack(taps_, axis=4).reshape(nb * g * rh * ow, taps * c)

    return padded, shape, counts, cols


def chunked_forward(
    x: Array, w: Array, geom: ConvGeometry, precision: Any, rows: int | None = None
) -> Array:
    """The values: batched x in ``geom.layout`` (NCDHW or NDHWC), w OIDHW or DHWIO, groups
    1 -> (N, O, od, oh, ow) or (N, od, oh, ow, O), by patch matrices of chunks of about
    ``rows`` output positions (None: :func:`chunk_rows`; module docstring)."""
    x, w = _to_channels_last(x, w, geom.layout)
    n, o = x.shape[0], w.shape[-1]
    (od, oh, ow) = geom.out_size
    _, (nb, g, rh), counts, cols = _chunking(x, geom, rows)
    wmat = w.reshape(-1, o)  # (kd*kh*kw*C, O)
    chunk = lambda i: jnp.dot(cols(i), wmat, precision=precision)  # noqa: E731
    y = lax.map(chunk, jnp.arange(math.prod(counts)))
    y = y.reshape(*counts, nb, g, rh, ow, o)  # (N/nb, od/g, oh/rh, nb, g, rh, ow, O)
    if geom.layout == "NDHWC":
        return y.transpose(0, 3, 1, 4, 2, 5, 6, 7).reshape(n, od, oh, ow, o)
    return y.transpose(0, 3, 7, 1, 4, 2, 5, 6).reshape(n, o, od, oh, ow)


def kernel_tangent(
    x: Array, tw: Array, geom: ConvGeometry, precision: Any, rows: int | None = None
) -> Array:
    """conv(x, tw) for a kernel tangent ``tw`` (x held fixed), shapes as
    :func:`chunked_forward`, written so that its transpose, the weight gradient reverse mode
    runs, is a loop over the same chunks: per chunk the patch matrix is rebuilt in cache
    (``jax.checkpoint``: not stored for every chunk) and ``dy_chunk (O, rows) @ cols (rows,
    kd*kh*kw*C)`` is added to a (O, kd*kh*kw*C) carry. Each chunk's tangent is computed as
    ``tw^T (O, K) @ cols^T`` so that this transposed product is the canonical (M, K) @ (K, N)
    form XLA:CPU hands to YNNPACK (the (K, rows)^T @ (rows, O) form it ran as a slower plain
    dot). Chunks hold at most one batch item."""
    x, tw = _to_channels_last(x, tw, geom.layout)
    n, o = x.shape[0], tw.shape[-1]
    (od, oh, ow) = geom.out_size
    _, (nb, g, rh), counts, cols = _chunking(x, geom, rows, whole_items=True)
    tw_t = tw.reshape(-1, o).T  # (O, kd*kh*kw*C)

    @jax.checkpoint
    def chunk(i: Array) -> Array:
        return jnp.dot(tw_t, cols(i).T, precision=precision)  # (O, g*rh*ow)

    y = lax.map(chunk, jnp.arange(math.prod(counts)))
    y = y.reshape(*counts, o, g, rh, ow)  # (N, od/g, oh/rh, O, g, rh, ow)
    if geom.layout == "NDHWC":
        return y.transpose(0, 1, 4, 2, 5, 6, 3).reshape(n, od, oh, ow, o)
    return y.transpose(0, 3, 1, 4, 2, 5, 6).reshape(n, o, od, oh, ow)


def values(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """The path's values: by Winograd over depth planes where
    :func:`~jaxconv.kernels.plane_winograd.plane_winograd_wins` (float32), else the chunked
    patch matrices (:func:`chunked_forward`)."""
    if x.dtype == jnp.float32 and plane_winograd_wins(geom):
        return plane_winograd_values(x, w, geom, precision)
    return chunked_forward(x, w, geom, precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _plane_patches(
    x: Array, w: Array, geom: ConvGeometry, precision: Any, tangent_conv: ConvImpl
) -> Array:
    """Batched x, w in ``geom``'s layouts: the path's values (derivatives: the rule below)."""
    return values(x, w, geom, precision)


@functools.partial(_plane_patches.defjvp, symbolic_zeros=True)
def _plane_patches_jvp(
    geom: ConvGeometry,
    precision: Any,
    tangent_conv: ConvImpl,
    primals: tuple[Array, Array],
    tangents: tuple[Any, Any],
) -> tuple[Array, Array]:
    """Chunked values; the input's tangent is ``tangent_conv``'s (so the input gradient is that
    path's), the kernel's is :func:`kernel_tangent` (so the weight gradient is the chunk loop).
    A symbolic-zero tangent (e.g. the input data's) costs nothing."""
    (x, w), (tx, tw) = primals, tangents
    y = values(x, w, geom, precision)
    terms = []
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        # Only x is differentiated: XLA drops the values tangent_conv computes alongside.
        terms.append(jax.jvp(lambda a: tangent_conv(a, w, geom, precision), (x,), (tx,))[1])
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        terms.append(kernel_tangent(x, tw, geom, precision))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


def conv_plane_patches(
    x: Array, w: Array, geom: ConvGeometry, precision: Any, tangent_conv: ConvImpl
) -> Array:
    """Batched 3-D conv (NCDHW or NDHWC, groups 1): values by chunked patch matrices,
    derivatives (and a differentiated call's values) those of ``tangent_conv`` (an entry of
    the conv registry: batched input, kernel, geometry, precision); lax for other
    geometries. Returns (N, O, od, oh, ow) or (N, od, oh, ow, O)."""
    if not plane_patches_apply(geom):
        return conv_lax(x, w, geom, precision)
    return _plane_patches(x, w, geom, precision, tangent_conv)
