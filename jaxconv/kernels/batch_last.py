"""The CHWN (batch last) rule of ``conv2d(impl="vjp")``: patch matrices and matrix products,
reverse mode only.

Why: with the batch as the minor axis, every kernel tap's view of the input is a run of whole
rows of N contiguous elements, so the patch matrix (im2col) is kh*kw*C slabs copied side by
side, its transpose (col2im) a sum of shifted slabs, and the forward pass and both gradients
are matrix products with a long (oh*ow*N) free or contracted axis, where XLA:CPU's matmuls run
near peak. In NHWC the same copies move runs of only C elements. This is why training LeNet on
CPU runs in CHWN (docs/BENCHMARKS.md).

How: a ``custom_vjp``, because the orientation of each product matters and JAX's transpose of a
dot_general always puts the cotangent first (the weight gradient would transpose the patch
matrix by a copy). Here the backward pass computes ``cols . dy`` with the patch matrix as the
left operand and ``W @ dy`` straight into the patch matrix's layout, then an in-place col2im.
The cost: forward-mode differentiation (jax.jvp, jacfwd) of this path raises TypeError
(``conv2d`` says which impl to use); use layout="NHWC" or impl="lax" there. Reverse mode works
to any order (the backward pass is plain jnp, itself differentiable).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import Padding
from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.nhwc import FEW_CHANNEL_PAIRS, tap_sum
from jaxconv.kernels.windows import patch_bytes, unit_taps

Array = jax.Array

#: Bytes a CHWN patch matrix may take (it is kept for the backward pass) before the NHWC rule
#: is used instead: LeNet's conv1 at batch 1024 needs 80 MB, at 4096 320 MB.
CHWN_PATCH_BYTES = 2**30


def _cores() -> int:
    """The cores this process may run on, which is what XLA:CPU sizes its thread pool by."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on every platform
        return os.cpu_count() or 1


#: More row blocks than this cost more in per-product overhead than they gain.
MAX_ROW_BLOCKS = 8

#: Output-row blocks of the CHWN patch matrix: one product each, independent, so XLA:CPU can
#: run them on different cores (its products do not split a long contraction): one block per
#: core, bounded (docs/BENCHMARKS.md).
ROW_BLOCKS = max(1, min(MAX_ROW_BLOCKS, _cores()))


def col2im(dcols: Array, x_shape: tuple[int, ...], kernel: tuple[int, ...],
           pads: Padding) -> Array:  # fmt: skip
    """The transpose of the patch matrix (the taps of :func:`unit_taps` stacked on the first
    axis): (kh*kw*C, oh, ow, N) -> x_shape (C, H, W, N), each tap's slab added back at its
    offset.

    As kh*kw in-place slice updates of one buffer, which XLA:CPU runs as contiguous
    read-add-writes (one sum of shifted pads checks every pad's bounds per element)."""
    (kh, kw), (top, bottom), (left, right) = kernel, *pads
    c, h, w, n = x_shape
    oh, ow = dcols.shape[1:3]
    out = jnp.zeros((c, h + top + bottom, w + left + right, n), dcols.dtype)
    for i, tap in enumerate(jnp.split(dcols, kh * kw, axis=0)):
        a, b = divmod(i, kw)
        out = out.at[:, a : a + oh, b : b + ow, :].add(tap)
    return out[:, top : top + h, left : left + w, :]


def row_blocks(oh: int) -> list[tuple[int, int]]:
    """``ROW_BLOCKS`` contiguous [start, stop) ranges covering ``range(oh)``."""
    b = max(1, min(ROW_BLOCKS, oh))
    edges = [round(i * oh / b) for i in range(b + 1)]
    return [(edges[i], edges[i + 1]) for i in range(b)]


def _forward_chwn(
    x: Array, w: Array, pads: Padding, precision: Any
) -> tuple[Array, tuple[Array, ...]]:
    """The values (Cout, oh, ow, N) = W^T @ cols, and the patch matrix in row blocks (kept
    for the weight gradient). One input channel too: a tap sum would fuse into its consumers
    (ReLU, the max pool's selection), which XLA then recomputes it in."""
    kh, kw, ci, co = w.shape
    taps = unit_taps(x, (kh, kw), pads)
    oh = taps[0].shape[1]
    blocks = row_blocks(oh)
    cols = tuple(jnp.concatenate([t[:, r0:r1] for t in taps], axis=0) for r0, r1 in blocks)
    # W^T as an array of its own: folded into the product as a transposed operand, XLA:CPU
    # runs it with a slower kernel
    wt = lax.optimization_barrier(w.reshape(kh * kw * ci, co).T)
    ys = [lax.dot_general(wt, c, (((1,), (0,)), ((), ())), precision=precision) for c in cols]
    return jnp.concatenate(ys, axis=1), cols


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_chwn(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """Stride 1, dilation 1, groups 1: x (Cin, H, W, N), w (kh, kw, Cin, Cout) ->
    (Cout, oh, ow, N).

    Undifferentiated calls (evaluation) with one input channel take the tap sum: no patch
    matrix to allocate (most of its cost is fresh pages)."""
    kh, kw, ci, _ = w.shape
    if ci == 1:
        return tap_sum(unit_taps(x, (kh, kw), pads), w, 0)  # taps (1, oh, ow, N)
    return _forward_chwn(x, w, pads, precision)[0]


def _conv_chwn_fwd(
    x: Array, w: Array, pads: Padding, precision: Any
) -> tuple[Array, tuple[tuple[Array, ...], Array]]:
    y, cols = _forward_chwn(x, w, pads, precision)
    return y, (cols, w)


def _conv_chwn_bwd(
    pads: Padding, precision: Any, res: tuple[tuple[Array, ...], Array], dy: Array
) -> tuple[Array, Array]:
    cols, w = res
    kh, kw, ci, co = w.shape
    oh, (_, _, ow, n) = dy.shape[1], cols[0].shape
    x_shape = (ci, oh + kh - 1 - sum(pads[0]), ow + kw - 1 - sum(pads[1]), n)
    wm = w.reshape(kh * kw * ci, co)
    # per row block, cols (kh*kw*Cin, rows, ow, N) . dy (Cout, rows, ow, N) -> (kh*kw*Cin,
    # Cout): the patch matrix is the left operand, so XLA never transposes it (at most dy,
    # kh*kw*Cin/Cout times smaller)
    dw = sum(
        lax.dot_general(c, dy[:, r0:r1], (((1, 2, 3), (1, 2, 3)), ((), ())), precision=precision)
        for c, (r0, r1) in zip(cols, row_blocks(oh), strict=True)
    )
    dcols = lax.dot_general(wm, dy, (((1,), (0,)), ((), ())), precision=precision)
    dx = col2im(dcols, x_shape, (kh, kw), pads)  # XLA drops it where unused (images)
    return dx, dw.reshape(w.shape)


conv_chwn.defvjp(_conv_chwn_fwd, _conv_chwn_bwd)


def chwn_uses_patches(x: Array, geom: ConvGeometry) -> bool:
    """Whether a CHWN call runs :func:`conv_chwn`: few channels (:data:`FEW_CHANNEL_PAIRS`,
    as the NHWC rule's col2im) and a patch matrix under :data:`CHWN_PATCH_BYTES`. Wider
    layers are faster through the NHWC rule between transposes; narrow ones are not: there
    XLA fuses the producer into the transposes."""
    small = geom.in_channels * geom.out_channels <= FEW_CHANNEL_PAIRS
    return small and patch_bytes(x, geom.kernel, geom.padding) <= CHWN_PATCH_BYTES
