"""The transposed convolution as ONE stride-1 convolution and a pixel shuffle (stride phases).

Why: XLA:CPU runs a transposed convolution written as one convolution of the input dilated by
the stride (:func:`jaxconv.kernels.xla.conv_transpose_lax`) and its gradients through a slow
generic loop; stride-1 convolutions and matrix products take its fast kernels
(docs/BENCHMARKS.md).

How, per spatial axis with stride ``s`` and dilation ``d``: element ``Y`` of the full
(uncropped) output gets ``x[i] * w[k]`` for every ``i * s + k * d == Y``. Split the output by
phase ``r = Y mod s``: phase ``r`` sees only the taps with ``k * d == r (mod s)``, and within
a phase it is an ordinary stride-1 correlation of ``x`` with those taps, reversed (taps
``d / gcd(d, s)`` apart). Each phase is one stride-1 convolution; where every phase has the
same number of taps and the same shift (kernel sizes a multiple of the stride), all phases are
ONE convolution with ``prod(s)`` times the output channels. A depth-to-space shuffle
interleaves the phases and a crop keeps PyTorch's output window (``padding`` before,
``output_padding`` after). No zero taps are multiplied: NaN and inf reach PyTorch's outputs.

The derivatives are a ``custom_jvp`` whose tangents are written so that their transposes
(what reverse mode runs) are XLA:CPU's fast forms: the input gradient an ordinary strided
convolution of the output gradient, the weight gradient a convolution whose kernel taps are
``stride`` apart (:func:`weight_tangent`). Forward mode and higher derivatives work as for any
JAX function (forward mode runs the slower forms).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import LAYOUT_KERNELS, Ints, Pads, spatial_letters
from jaxconv.geometry import ConvTransposeGeometry
from jaxconv.kernels.xla import conv_transpose_lax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class AxisPhase:
    """Phase ``r`` of one spatial axis (stride ``s``, dilation ``d``, ``g = gcd(d, s)``):
    full-output element ``q * s + r`` gets ``x[q - m0 - j * step] * w[k0 + j * s // g]``
    for ``j < taps``, ``step = d // g``; a correlation with ``taps`` kernel taps dilated by
    ``step``. ``taps == 0``: no kernel tap lands in this phase (its outputs are zero)."""

    k0: int
    taps: int
    m0: int
    step: int
    tap_stride: int


def axis_phases(k: int, s: int, d: int) -> tuple[AxisPhase, ...]:
    """The ``s`` phases of one axis with kernel size ``k``, stride ``s``, dilation ``d``."""
    g = math.gcd(d, s)
    phases = []
    for r in range(s):
        ks = [t for t in range(k) if (t * d) % s == r]
        k0 = ks[0] if ks else 0
        phases.append(AxisPhase(k0, len(ks), (k0 * d - r) // s, d // g, s // g))
    return tuple(phases)


@dataclasses.dataclass(frozen=True)
class PhasePlan:
    """The decomposition of one transposed conv: ``phases[i]`` per spatial axis. The phase
    outputs cover full-output elements ``q * s + r`` for ``q`` in ``[q0, q0 + Q)``
    (``phase_size`` Q); PyTorch's output starts at ``offset`` in the shuffled ``Q * s``."""

    phases: tuple[tuple[AxisPhase, ...], ...]
    q0: Ints
    phase_size: Ints
    offset: Ints

    @property
    def merged(self) -> bool:
        """Every phase has the same taps and shift on every axis: all phases are ONE
        convolution with ``prod(s)`` times the output channels."""
        return all(
            len({(p.taps, p.m0) for p in axis}) == 1 and axis[0].taps > 0 for axis in self.phases
        )

    def empty(self, r: tuple[int, ...]) -> bool:
        """Whether phase ``r`` gets no kernel tap on some axis."""
        return any(axis[ri].taps == 0 for axis, ri in zip(self.phases, r, strict=True))

    def pads(self, r: tuple[int, ...], in_size: Ints) -> Pads:
        """Phase ``r``'s stride-1 conv padding per side (negative crops)."""
        pads = []
        for axis, ri, q0, q, n in zip(
            self.phases, r, self.q0, self.phase_size, in_size, strict=True
        ):
            p = axis[ri]
            reach = (p.taps - 1) * p.step
            lo = p.m0 + reach - q0
            pads.append((lo, q + reach - n - lo))
        return tuple(pads)


def phase_plan(geom: ConvTransposeGeometry) -> PhasePlan:
    """Plan ``geom``: the phase outputs ``q`` in ``[q0, q0 + Q)`` cover PyTorch's output
    window ``[p, p + out)`` of the full output on every axis."""
    phases, q0s, sizes, offsets = [], [], [], []
    for k, s, d, (p, _), o in zip(
        geom.kernel, geom.stride, geom.dilation, geom.padding, geom.out_size, strict=True
    ):
        q0 = p // s
        phases.append(axis_phases(k, s, d))
        q0s.append(q0)
        sizes.append((p + o - 1) // s + 1 - q0)
        offsets.append(p - q0 * s)
    return PhasePlan(tuple(phases), tuple(q0s), tuple(sizes), tuple(offsets))


def _conv_kernel(w: Array, geom: ConvTransposeGeometry) -> Array:
    """``w`` as the stride-1 convs take it, (G * O_g, C_in // G, *k): PyTorch's
    (C_in, O_g, *k) with in and out channels swapped within each group."""
    spatial = spatial_letters(geom.layout)
    w = w.transpose([LAYOUT_KERNELS[geom.layout].index(c) for c in "OI" + spatial])
    cin, og, G = w.shape[0], w.shape[1], geom.groups
    w = w.reshape(G, cin // G, og, *geom.kernel).swapaxes(1, 2)
    return w.reshape(G * og, cin // G, *geom.kernel)


def phase_kernel(w: Array, plan: PhasePlan, r: tuple[int, ...]) -> Array:
    """Phase ``r``'s (O, I, *taps) kernel from the (O, I, *k) one: taps ``k0 + j * s // g``,
    reversed (the phase is a correlation)."""
    window = [slice(None), slice(None)]
    for axis, ri in zip(plan.phases, r, strict=True):
        p = axis[ri]
        window.append(slice(p.k0, p.k0 + (p.taps - 1) * p.tap_stride + 1, p.tap_stride))
    return jnp.flip(w[tuple(window)], axis=tuple(range(2, w.ndim)))


def shuffle(z: Array, geom: ConvTransposeGeometry, plan: PhasePlan) -> Array:
    """Interleave and crop: ``z`` is (s_1, ..., s_n, *layout) with spatial sizes Q, phase
    ``r`` at ``z[r]`` -> the transposed conv's output in ``geom.layout``."""
    layout, n = geom.layout, len(geom.kernel)
    spatial = spatial_letters(layout)
    names = [*(f"r{i}" for i in range(n)), *layout]
    order, shape = [], []
    for c in layout:
        if c in "NC":
            order.append(c)
            shape.append(z.shape[names.index(c)])
        else:
            i = spatial.index(c)
            order += [c, f"r{i}"]
            shape.append(plan.phase_size[i] * geom.stride[i])
    z = z.transpose([names.index(a) for a in order]).reshape(shape)
    window = [slice(None)] * z.ndim
    for i, c in enumerate(spatial):
        window[layout.index(c)] = slice(plan.offset[i], plan.offset[i] + geom.out_size[i])
    return z[tuple(window)]


def phase_values(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """The transposed conv's values: a stride-1 conv of ``x`` per phase with that phase's
    taps (ONE conv for all phases when :attr:`PhasePlan.merged`), then :func:`shuffle`. Only
    real kernel taps are multiplied, so NaN and inf reach exactly the outputs they reach in
    PyTorch."""
    plan = phase_plan(geom)
    w = _conv_kernel(w, geom)
    layout, n = geom.layout, len(geom.kernel)
    dilation = tuple(axis[0].step for axis in plan.phases)
    phases = list(itertools.product(*(range(s) for s in geom.stride)))

    def conv(k: Array, pads: Pads) -> Array:
        return _conv(x, k, pads, dilation, layout, geom.groups, precision)

    c_axis = layout.index("C")
    if plan.merged:  # phases as extra output channels, ordered (O, r...): groups outermost
        k = jnp.stack([phase_kernel(w, plan, r) for r in phases], axis=1)
        k = k.reshape(-1, *k.shape[2:])
        z = conv(k, plan.pads(phases[0], geom.in_size))
        z = z.reshape(*z.shape[:c_axis], geom.out_channels, *geom.stride, *z.shape[c_axis + 1 :])
        z = jnp.moveaxis(z, tuple(range(c_axis + 1, c_axis + 1 + n)), tuple(range(n)))
        return shuffle(z, geom, plan)
    zs = [
        None if plan.empty(r) else conv(phase_kernel(w, plan, r), plan.pads(r, geom.in_size))
        for r in phases
    ]
    like = next(z for z in zs if z is not None)  # the kernel's first tap is in phase 0
    z = jnp.stack([jnp.zeros_like(like) if z is None else z for z in zs])
    return shuffle(z.reshape(*geom.stride, *like.shape), geom, plan)


# --- the derivative --------------------------------------------------------------------------


def _conv(
    x: Array, w: Array, pads: Pads, dilation: Ints, layout: str, groups: int, precision: Any
) -> Array:
    """A phase: the stride-1 conv of ``x`` with an "OI" + spatial kernel."""
    spatial = spatial_letters(layout)
    return lax.conv_general_dilated(
        x,
        w,
        (1,) * len(spatial),
        pads,
        rhs_dilation=dilation,
        dimension_numbers=(layout, "OI" + spatial, layout),
        feature_group_count=groups,
        precision=precision,
    )


def _channels_first(x: Array, layout: str) -> Array:
    spatial = spatial_letters(layout)
    return x.transpose([layout.index(c) for c in ["N", "C", *spatial]])


def _from_channels_first(y: Array, layout: str) -> Array:
    order = ["N", "C", *spatial_letters(layout)]
    return y.transpose([order.index(c) for c in layout])


def weight_tangent(x: Array, tw: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """The transposed conv of ``x`` with kernel ``tw`` (both in ``geom.layout``), computed as
    a convolution of ``tw`` by ``x``: ``tw`` is the input ((C_in, O_g, *k): features C_in,
    batch O_g, taps ``dilation`` apart), ``x`` the kernel (its positions ``stride`` apart,
    reversed), so output element ``i * s + k * d - p`` sums ``x[i] * tw[k]``.

    Why: linear in ``tw``, and JAX's transpose of it (the weight gradient, reverse mode) is a
    convolution of the output gradient whose kernel taps are ``stride`` apart, one of
    XLA:CPU's fast forms; the weight gradient of the transposed conv as JAX writes it dilates
    the input instead, a slow one."""
    n, G = len(geom.kernel), geom.groups
    x = _channels_first(x, geom.layout)
    spatial = spatial_letters(geom.layout)
    tw = tw.transpose([LAYOUT_KERNELS[geom.layout].index(c) for c in "OI" + spatial])
    N, C, og = x.shape[0], x.shape[1], tw.shape[1]
    kernel = x.reshape(N, G, C // G, *geom.in_size).swapaxes(0, 1)  # (G, N, C_g, *in)
    kernel = jnp.flip(kernel.reshape(G * N, C // G, *geom.in_size), axis=tuple(range(2, 2 + n)))
    pads = [
        ((i - 1) * s - lo, (i - 1) * s - lo + op)
        for i, s, (lo, _), op in zip(
            geom.in_size, geom.stride, geom.padding, geom.output_padding, strict=True
        )
    ]
    y = lax.conv_general_dilated(
        tw,
        kernel,
        (1,) * n,
        pads,
        lhs_dilation=geom.dilation,
        rhs_dilation=geom.stride,
        dimension_numbers=("CN" + spatial, "OI" + spatial, "CN" + spatial),
        feature_group_count=G,
        precision=precision,
    )  # (G * N, O_g, *out)
    y = y.reshape(G, N, og, *geom.out_size).swapaxes(0, 1)
    return _from_channels_first(y.reshape(N, G * og, *geom.out_size), geom.layout)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def conv_transpose_phases(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """Batched transposed conv (PyTorch's), ``x`` and ``w`` as for
    :func:`jaxconv.kernels.xla.conv_transpose_lax`: the values from :func:`phase_values`;
    the derivatives from ``_conv_transpose_phases_jvp``, written so that reverse mode runs
    XLA:CPU's fast forms."""
    return phase_values(x, w, geom, precision)


@functools.partial(conv_transpose_phases.defjvp, symbolic_zeros=True)
def _conv_transpose_phases_jvp(
    geom: ConvTransposeGeometry,
    precision: Any,
    primals: tuple[Array, Array],
    tangents: tuple[Any, Any],
) -> tuple[Array, Array]:
    """The tangent in ``x`` is the dilated-input form (:func:`conv_transpose_lax`): its
    transpose, the input gradient, is an ordinary strided convolution. The tangent in ``w``
    is :func:`weight_tangent`. Forward mode computes these forms as they are (slower than
    the values' path, the same numbers); higher derivatives differentiate them."""
    (x, w), (tx, tw) = primals, tangents
    y = phase_values(x, w, geom, precision)
    terms = []  # a symbolic-zero tangent (e.g. the input images) costs nothing
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        terms.append(conv_transpose_lax(tx, w, geom, precision))
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        # dilated kernels: XLA's simplifier miscompiles (aborts on) the weight tangent's
        # conv with both dilations, so those take the dilated-input form
        if max(geom.dilation) == 1:
            terms.append(weight_tangent(x, tw, geom, precision))
        else:
            terms.append(conv_transpose_lax(x, tw, geom, precision))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)
