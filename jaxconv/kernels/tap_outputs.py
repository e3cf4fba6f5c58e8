"""A channels-first 1-D convolution's values as one matrix product per batch item with the
taps stacked on the output rows: ``conv1d(impl="tap_outputs")``.

Why: XLA:CPU runs an NCL convolution well below its NLC speed (the same layer, conv1d
32x64x4000 -> 64 k9, took 1.4x the NLC time), and transposing NCL to NLC and back costs as
much again. In NCL a batch item is a (C, L) matrix whose rows are contiguous, so the conv is
a matrix product and shifted row slices, with no transpose anywhere.

How: for batch item n, ``Z = W' @ x[n]`` with W' the (k*O, C) matrix of the k taps' (O, C)
weights stacked on its rows (one YNNPACK product, K = C); output position i is then
``sum_a Z[a, :, i*s + a*d]``: k strided row slices of Z added in one fusion. A ``lax.map``
over batch items keeps Z (k*O*L) one item at a time; where even that is above
:data:`MAX_Z_BYTES` the path is not taken (:func:`tap_outputs_apply`).

Derivatives: a ``custom_jvp`` (:mod:`~jaxconv.kernels.borrowed`) whose values are the
products above and whose tangent is the tangent of ``tangent_conv`` (by default XLA's own
conv, whose derivatives were already as fast as PyTorch's on the measured layer: only the
forward changes); XLA removes that path's unused values.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.borrowed import ConvImpl, with_derivatives_of
from jaxconv.kernels.xla import conv_lax

Array = jax.Array

#: Bytes one batch item's stacked product Z (k*O x padded L) may take; longer signals keep
#: XLA's convolution (the per-item product would no longer fit in memory comfortably).
MAX_Z_BYTES = 64 * 2**20


def tap_outputs_apply(geom: ConvGeometry, itemsize: int = 4) -> bool:
    """Whether ``impl="tap_outputs"`` has its own path: 1-D, NCL, groups 1, and one batch
    item's stacked product within :data:`MAX_Z_BYTES`."""
    if geom.layout != "NCL" or geom.groups != 1:
        return False
    length = geom.in_size[0] + sum(geom.padding[0])
    return geom.kernel[0] * geom.out_channels * length * itemsize <= MAX_Z_BYTES


def tap_outputs_wins(geom: ConvGeometry) -> bool:
    """Whether this path's values were the faster on XLA:CPU than XLA's NCL conv (float32,
    one core; docs/BENCHMARKS.md): at stride 1 with a kernel of 2 taps or more, 0.69-0.94x
    its forward time (1 to 256 channels, k3 to k9, lengths 500 to 16000; 1.04x on the
    smallest layer, 8x32x1024 k3 at 0.8 ms) and 0.88-0.96x forward+backward. At stride 2
    it computes every position and keeps half: 1.5x."""
    return tap_outputs_apply(geom) and geom.stride == (1,) and geom.kernel[0] > 1


def stacked_forward(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """The values: batched NCL x (N, C, L), OIL w (O, C, k), groups 1 -> (N, O, ol), one
    stacked product per batch item (module docstring)."""
    (k,), (s,), (d,), (ol,) = geom.kernel, geom.stride, geom.dilation, geom.out_size
    o, c = w.shape[:2]
    padded = jnp.pad(x, ((0, 0), (0, 0), geom.padding[0]))  # (N, C, Lp)
    stacked = w.transpose(2, 0, 1).reshape(k * o, c)  # (k*O, C): tap a's rows a*O ... a*O+O-1

    def item(xn: Array) -> Array:
        z = jnp.dot(stacked, xn, precision=precision).reshape(k, o, -1)  # (k, O, Lp)
        taps = [z[a, :, a * d : a * d + (ol - 1) * s + 1 : s] for a in range(k)]
        return sum(taps[1:], taps[0])  # (O, ol)

    return lax.map(item, padded)


_tap_outputs = with_derivatives_of(stacked_forward)


def conv_tap_outputs(
    x: Array, w: Array, geom: ConvGeometry, precision: Any, tangent_conv: ConvImpl = conv_lax
) -> Array:
    """Batched NCL conv (groups 1): values by stacked-tap products, derivatives those of
    ``tangent_conv`` (default: XLA's conv); lax for other geometries. Returns (N, O, ol)."""
    if not tap_outputs_apply(geom, x.dtype.itemsize):
        return conv_lax(x, w, geom, precision)
    return _tap_outputs(x, w, geom, precision, tangent_conv)
