"""Depthwise convolution (``groups == in_channels``) as a sum over kernel taps:
``impl="depthwise"``.

Why: XLA:CPU runs ``lax.conv_general_dilated`` with ``feature_group_count == C`` through a
slow generic loop, and its gradients (grouped convolutions again) slower still. A depthwise
conv has no channel contraction at all: output channel ``c*m + j`` (m = out/in, the channel
multiplier) is the sum over the kernel's taps of one strided slice of the padded input channel
``c`` times one weight. Each tap is one strided slice
(:func:`~jaxconv.kernels.windows.strided_taps`: N-D, any stride and dilation), so the forward
pass is one fused elementwise loop. The values never pad the input as a whole: the taps are
slices of the input itself over the output's interior and border boxes
(:func:`~jaxconv.kernels.windows.map_boxes`; :func:`_values` says where and why).

Derivatives: a ``custom_jvp``, written so that its transposes (what reverse mode runs) are
fast on XLA:CPU. The tangent with respect to the input is the tap sum with the taps cut from
the input's stride phases (:func:`~jaxconv.kernels.windows.phase_taps`): its transpose, the
input gradient, sums each phase's own taps and interleaves the phases once. The tangent with
respect to the weight is the tap sum computed one chunk of the batch at a time (``lax.map``),
so that its transpose (the weight gradient) reduces each chunk's taps times the output
gradient while they are in cache, instead of one reduction per tap over the whole batch, for
which XLA:CPU materialises every strided tap in memory. When both tangents are live (a
training step) they are summed inside that one chunk loop, so that both gradients read each
stored chunk of the output gradient (apart, XLA fused the output gradient's producer, e.g. the
forward tap sum, into the input gradient at every tap). Forward mode (jax.jvp) works, and the
rule is written in differentiable jnp/lax ops, so higher derivatives work too.

The taps are computed in the caller's layout (channels first or last, or CHWN): every step is
elementwise or a reduction over the non-channel axes, so no transpose is needed.

float16/bfloat16: the taps are summed (and the weight gradient reduced) in float32 and the
result rounded once to the input's dtype, so ``impl="auto"`` takes this path for them too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import LAYOUT_KERNELS
from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.windows import map_boxes, phase_taps, strided_taps
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

#: Bytes of padded input per chunk of the weight gradient: each chunk's taps and output
#: gradient are reduced while they stay in cache. For one reduction per tap over the whole
#: batch XLA:CPU writes every strided tap to memory first, and the gradient is bandwidth-bound.
CHUNK_BYTES = 4 * 2**20


def is_depthwise(geom: ConvGeometry) -> bool:
    """``groups == in_channels``: every input channel is its own group (m = out/in >= 1)."""
    return geom.groups == geom.in_channels


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the taps are summed in: float32 for float16/bfloat16, else ``dtype``."""
    return jnp.float32 if jnp.dtype(dtype).itemsize < 4 else dtype


def tap_weights(w: Array, geom: ConvGeometry) -> Array:
    """The kernel (in ``LAYOUT_KERNELS[geom.layout]``, its I axis 1) as (K, C, m): one (C, m)
    weight matrix per tap, taps row-major over the kernel (the order of ``strided_taps``)."""
    spec = LAYOUT_KERNELS[geom.layout]
    spatial = [c for c in spec if c not in "OI"]
    w = w.transpose([spec.index(c) for c in [*spatial, "I", "O"]])  # (*k, 1, C*m)
    return w.reshape(math.prod(geom.kernel), geom.in_channels, -1)  # (K, C, m)


def _broadcast_weights(wk: Array, ndim: int, channel_axis: int) -> Array:
    """(K, C, m) -> (K, ...) broadcastable against taps of rank ``ndim + 1`` whose axes
    ``channel_axis`` and ``channel_axis + 1`` are (C, m)."""
    shape = [1] * (ndim + 1)
    shape[channel_axis], shape[channel_axis + 1] = wk.shape[1], wk.shape[2]
    return wk.reshape(wk.shape[0], *shape)


def _merge_multiplier(y: Array, channel_axis: int) -> Array:
    """(..., C, m, ...) -> (..., C*m, ...): output channel c*m + j, as PyTorch orders them."""
    shape = list(y.shape)
    shape[channel_axis : channel_axis + 2] = [shape[channel_axis] * shape[channel_axis + 1]]
    return y.reshape(shape)


def _weighted_taps(taps: list[Array], wk: Array, geom: ConvGeometry) -> Array:
    """sum over taps t of taps[t] * wk[t]: taps batched in ``geom.layout`` at the output's
    spatial size, wk (K, C, m) -> the batched output in ``geom.layout`` (one fused loop).

    With m = 1 the products have no multiplier axis: the weight gradient (this product's
    transpose) is then a reduction keeping the channel axis alone, where XLA:CPU's
    (YNNPACK's) reduction keeping (C, 1) took 4-7x as long channels last."""
    channel_axis = geom.layout.index("C")
    if wk.shape[2] == 1:
        shape = [1] * taps[0].ndim
        shape[channel_axis] = wk.shape[1]
        wb = wk.reshape(wk.shape[0], *shape)
        return sum(t * wb[i] for i, t in enumerate(taps))
    wb = _broadcast_weights(wk, taps[0].ndim, channel_axis)
    y = sum(jnp.expand_dims(t, channel_axis + 1) * wb[i] for i, t in enumerate(taps))
    return _merge_multiplier(y, channel_axis)


def _tap_sum(x: Array, wk: Array, geom: ConvGeometry, pad_input: bool = True) -> Array:
    """sum over taps t of tap_t(x) * wk[t]: x batched in ``geom.layout``, wk (K, C, m) ->
    the batched output in ``geom.layout``, the taps strided slices of the padded input
    (``pad_input=False``: of the input, each tap padded)."""
    taps = strided_taps(
        x, geom.axes, geom.kernel, geom.padding, geom.out_size, geom.stride, geom.dilation,
        pad_input=pad_input,
    )  # fmt: skip
    return _weighted_taps(taps, wk, geom)


def _values(x: Array, wk: Array, geom: ConvGeometry) -> Array:
    """The conv's values without a padded copy of the input: XLA:CPU writes a padded input
    out before slicing it (as large as the input), and a large temporary is fresh memory at
    every call, page faults and all (docs/BENCHMARKS.md). The taps are slices of the input
    itself, over the output's interior and border boxes
    (:func:`~jaxconv.kernels.windows.map_boxes`), or channels first at a stride, where the
    boxes measured a little slower, each padded at its own size inside the one fused loop.
    The tangents keep the padded input, whose transposes were measured as fast."""
    if geom.layout[1] == "C" and max(geom.stride) > 1:
        return _tap_sum(x, wk, geom, pad_input=False)
    return map_boxes(lambda taps: _weighted_taps(taps, wk, geom), x, geom)


def _input_tangent(tx: Array, wk: Array, geom: ConvGeometry) -> Array:
    """The tap sum of an input tangent, the taps cut from its stride phases
    (:func:`~jaxconv.kernels.windows.phase_taps`) where the conv is strided: the transpose,
    the input gradient, then sums each input phase's own taps (4 of the 9 of a 3x3 stride 2
    kernel land on one phase, 1 on another) and concatenates the phases once, instead of an
    interior pad per tap evaluated at every input element."""
    if max(geom.stride) == 1:
        return _tap_sum(tx, wk, geom)
    taps = phase_taps(
        tx, geom.axes, geom.kernel, geom.padding, geom.out_size, geom.stride, geom.dilation
    )
    return _weighted_taps(taps, wk, geom)


def batch_chunk(x: Array, geom: ConvGeometry) -> int:
    """Images per chunk of the weight gradient: the largest divisor of the batch whose padded
    input fits :data:`CHUNK_BYTES`; the whole batch where the batch is not the leading axis."""
    n = x.shape[geom.layout.index("N")]
    if geom.layout[0] != "N":
        return n
    padded = math.prod(s + sum(p) for s, p in zip(geom.in_size, geom.padding, strict=True))
    per_image = padded * geom.in_channels * x.dtype.itemsize
    fits = max(1, CHUNK_BYTES // per_image)
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= fits)


def _by_chunks(f: Any, arrays: tuple[Array, ...], nb: int) -> Array:
    """``f(*arrays)`` (batch-leading arrays, one output) one chunk of ``nb`` images at a time
    (``lax.map``), checkpointed: a transpose recomputes each chunk's taps from the inputs
    instead of saving them."""
    n = arrays[0].shape[0]
    chunks = tuple(a.reshape(n // nb, nb, *a.shape[1:]) for a in arrays)  # (chunks, nb, ...)
    y = lax.map(jax.checkpoint(lambda c: f(*c), prevent_cse=False), chunks)
    return y.reshape(n, *y.shape[2:])


def _tangent_from_weights(x: Array, twk: Array, geom: ConvGeometry) -> Array:
    """The tap sum with a weight tangent (K, C, m), one chunk of the batch at a time
    (:func:`batch_chunk`): its transpose, the weight gradient, is then a loop over chunks that
    reduces each chunk's taps * dy while they are in cache and adds into (K, C, m)."""
    nb = batch_chunk(x, geom)
    if geom.layout[0] != "N" or nb == x.shape[0]:
        return _tap_sum(x, twk, geom)
    return _by_chunks(lambda xc: _tap_sum(xc, twk, geom), (x,), nb)


def joint_wins(geom: ConvGeometry) -> bool:
    """Whether both tangents share one chunk loop (:func:`_joint_tangent`): channels-first
    layouts, and strided channels-last ones with 2 or 3 spatial axes. Forward+backward, one
    core: the 3x3 layer 32x96x56x56 took 0.61-0.64x the time of the separate tangents
    channels first (stride 1 and 2), 0.71-0.74x NHWC at stride 2, but 1.06x NHWC at stride
    1; 1-D NLC at stride 2 1.04-1.08x (not analysed). Those keep the separate tangents."""
    channels_first = geom.layout[1] == "C"
    return channels_first or (len(geom.kernel) > 1 and max(geom.stride) > 1)


def joint_loop(x: Array, geom: ConvGeometry) -> bool:
    """Whether :func:`_joint_tangent` runs its one chunk loop: batch-leading layouts whose
    batch splits into more than one chunk, where :func:`joint_wins`."""
    nb = batch_chunk(x, geom)
    return geom.layout[0] == "N" and nb < x.shape[0] and joint_wins(geom)


def _joint_tangent(x: Array, tx: Array, wk: Array, twk: Array, geom: ConvGeometry) -> Array:
    """Both tangents' sum, :func:`_input_tangent` + :func:`_tangent_from_weights`, computed in
    ONE loop over chunks of the batch: its transpose takes each chunk of the output gradient
    once for both gradients.

    Why: with the two tangents apart, the input gradient's fusion re-reads the output
    gradient at every tap, and XLA:CPU fuses the output gradient's producers into it (in a
    loss, the forward tap sum itself: every tap of the input gradient recomputed the whole
    forward), while the weight gradient's loop reads a stored copy. Inside one loop both
    gradients read the stored chunk."""
    if not joint_loop(x, geom):
        return _input_tangent(tx, wk, geom) + _tangent_from_weights(x, twk, geom)
    nb = batch_chunk(x, geom)

    def both(xc: Array, txc: Array) -> Array:
        return _input_tangent(txc, wk, geom) + _tap_sum(xc, twk, geom)

    return _by_chunks(both, (x, tx), nb)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def depthwise_taps(x: Array, wk: Array, geom: ConvGeometry) -> Array:
    """Depthwise conv: x batched in ``geom.layout``, wk (K, C, m) from :func:`tap_weights`
    -> the batched output (C*m channels) in ``geom.layout``; derivatives from
    ``_depthwise_jvp``."""
    return _values(x, wk, geom)


@functools.partial(depthwise_taps.defjvp, symbolic_zeros=True)
def _depthwise_jvp(
    geom: ConvGeometry, primals: tuple[Array, Array], tangents: tuple[Any, Any]
) -> tuple[Array, Array]:
    (x, wk), (tx, twk) = primals, tangents
    # a symbolic-zero tangent (e.g. the input images) costs nothing
    x_zero = isinstance(tx, jax.custom_derivatives.SymbolicZero)
    w_zero = isinstance(twk, jax.custom_derivatives.SymbolicZero)
    # the values' unpadded taps, except where the input tangent's transpose runs outside a
    # chunk loop: XLA:CPU fused the values into that input gradient and wrote every tap out
    in_loop = x_zero or (not w_zero and joint_loop(x, geom))
    y = _values(x, wk, geom) if in_loop else _tap_sum(x, wk, geom)
    if x_zero and w_zero:
        return y, jnp.zeros_like(y)
    if w_zero:
        return y, _input_tangent(tx, wk, geom)
    if x_zero:
        return y, _tangent_from_weights(x, twk, geom)
    return y, _joint_tangent(x, tx, wk, twk, geom)


def conv_depthwise(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched conv in any layout (1-D, 2-D, 3-D, CHWN) as a tap sum where
    ``groups == in_channels``; lax for every other geometry. ``precision`` only reaches lax
    (the tap sum has no matrix product)."""
    if not is_depthwise(geom):
        return conv_lax(x, w, geom, precision)
    dtype = _compute_dtype(x.dtype)
    y = depthwise_taps(x.astype(dtype), tap_weights(w, geom).astype(dtype), geom)
    return y.astype(x.dtype)
