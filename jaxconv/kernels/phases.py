"""The transposed convolution as ONE stride-1 convolution and a pixel shuffle (stride phases).

Why: XLA:CPU runs a transposed convolution written as one convolution of the input dilated by
the stride (:func:`jaxconv.kernels.xla.conv_transpose_lax`) and its gradients through a slow
generic loop; stride-1 convolutions and matrix products take its fast kernels
(docs/BENCHMARKS.md).

How, per spatial axis with stride ``s``: output element ``Y`` of the full (uncropped) output
gets ``x[i] * w[k]`` for every ``i * s + k * d == Y``. Split the output by phase ``r = Y mod
s``: phase ``r`` sees only the taps with ``k * d == r (mod s)``, and within a phase it is an
ordinary stride-1 correlation of ``x`` with those taps (reversed). So, with the kernel dilated
by zeros to ``E = d * (k - 1) + 1`` taps and padded to ``J * s`` (``J = ceil(E / s)``), all
phases are ONE stride-1 convolution with ``C_out * s**n`` output channels and ``J`` taps per
axis, followed by a depth-to-space shuffle (PyTorch's ``pixel_shuffle`` order: channel, then
phases) and a crop to PyTorch's output window (``padding`` before, ``output_padding`` after).

The stride-1 convolution carries a ``custom_jvp`` (:func:`unit_conv`) whose weight tangent is a
product with explicit patches of the input: its transpose, the weight gradient reverse mode
runs, is one matrix product (XLA:CPU's convolution form of it, a correlation with the output
gradient as kernel, can be over 30x slower). Forward mode and higher derivatives work as for
any JAX function.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import string
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import LAYOUT_KERNELS, Ints, Pads
from jaxconv.geometry import ConvTransposeGeometry
from jaxconv.kernels.windows import strided_taps

Array = jax.Array

#: Bytes the weight tangent's patch matrix may take; above, it is a convolution (slower, no
#: extra memory).
PHASE_PATCH_BYTES = 256 * 2**20


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
    spatial = "".join(c for c in geom.layout if c not in "NC")
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
    spatial = [c for c in layout if c not in "NC"]
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


def conv_transpose_phases(x: Array, w: Array, geom: ConvTransposeGeometry, precision: Any) -> Array:
    """Batched transposed conv (PyTorch's), ``x`` and ``w`` as for
    :func:`jaxconv.kernels.xla.conv_transpose_lax`: a stride-1 conv of ``x`` per phase with
    that phase's taps (ONE conv for all phases when :attr:`PhasePlan.merged`), then
    :func:`shuffle`. Only real kernel taps are multiplied, so NaN and inf reach exactly the
    outputs they reach in PyTorch."""
    plan = phase_plan(geom)
    w = _conv_kernel(w, geom)
    layout, n = geom.layout, len(geom.kernel)
    dilation = tuple(axis[0].step for axis in plan.phases)
    phases = list(itertools.product(*(range(s) for s in geom.stride)))

    def conv(k: Array, pads: Pads) -> Array:
        return unit_conv(x, k, pads, dilation, layout, geom.groups, precision)

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


# --- the stride-1 convolution and its derivative --------------------------------------------


def _conv(
    x: Array, w: Array, pads: Pads, dilation: Ints, layout: str, groups: int, precision: Any
) -> Array:
    """The stride-1 conv of ``x`` with an "OI" + spatial kernel."""
    spatial = "".join(c for c in layout if c not in "NC")
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


def _patch_product(
    x: Array, tw: Array, pads: Pads, dilation: Ints, layout: str, groups: int, precision: Any
) -> Array:
    """``_conv(x, tw)`` as explicit patches of ``x`` contracted with ``tw``: linear in ``tw``,
    so its transpose (the weight gradient) is one product of the patches with the output
    gradient."""
    spatial = [c for c in layout if c not in "NC"]
    axes = tuple(layout.index(c) for c in spatial)
    taps = tw.shape[2:]
    out = [
        x.shape[a] + lo + hi - d * (t - 1)
        for a, (lo, hi), t, d in zip(axes, pads, taps, dilation, strict=True)
    ]
    # taps last: the patch matrix's rows are output positions, as the product wants them
    cols = strided_taps(x, axes, taps, pads, out, dilation=dilation)
    cols = jnp.stack(cols, axis=-1)
    c_axis = layout.index("C")
    cols = cols.reshape(*cols.shape[:c_axis], groups, -1, *cols.shape[c_axis + 1 :])
    # einsum letters: t taps, g groups, i/o in/out channels within a group
    free = iter(c for c in string.ascii_lowercase if c not in "tgio")
    names = {c: next(free) for c in layout if c != "C"}
    x_spec = "".join("gi" if c == "C" else names[c] for c in layout) + "t"
    y_spec = "".join("go" if c == "C" else names[c] for c in layout)
    # (G, I_g, T, O_g): the weight gradient comes out of the product as (I_g * T, O_g)
    kernel = tw.reshape(groups, -1, tw.shape[1], math.prod(taps)).transpose(0, 2, 3, 1)
    y = jnp.einsum(f"{x_spec},gito->{y_spec}", cols, kernel, precision=precision)
    return y.reshape(*y.shape[:c_axis], -1, *y.shape[c_axis + 2 :])


def _input_tangent(
    tx: Array, w: Array, pads: Pads, dilation: Ints, layout: str, groups: int, precision: Any
) -> Array:
    """``_conv(tx, w)`` written for its transpose: the input padded explicitly, then an
    unpadded conv, so that the transpose (the input gradient) is a padded conv (XLA:CPU runs
    unpadded 2-D convolutions several times slower than padded ones)."""
    config = [(0, 0, 0)] * tx.ndim
    for c, (lo, hi) in zip((c for c in layout if c not in "NC"), pads, strict=True):
        config[layout.index(c)] = (lo, hi, 0)
    tx = lax.pad(tx, jnp.zeros((), tx.dtype), config)
    return _conv(tx, w, ((0, 0),) * len(pads), dilation, layout, groups, precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def unit_conv(
    x: Array, w: Array, pads: Pads, dilation: Ints, layout: str, groups: int, precision: Any
) -> Array:
    """Stride-1 conv of ``x`` (``layout``) with an "OI" + spatial kernel ``w`` (taps
    ``dilation`` apart) and per-side ``pads`` (negative crops); the weight's derivative
    through explicit patches, the input's through a padded convolution."""
    return _conv(x, w, pads, dilation, layout, groups, precision)


@functools.partial(unit_conv.defjvp, symbolic_zeros=True)
def _unit_conv_jvp(
    pads: Pads,
    dilation: Ints,
    layout: str,
    groups: int,
    precision: Any,
    primals: tuple[Array, Array],
    tangents: tuple[Any, Any],
) -> tuple[Array, Array]:
    (x, w), (tx, tw) = primals, tangents
    args = (pads, dilation, layout, groups, precision)
    y = _conv(x, w, *args)
    terms = []
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        terms.append(_input_tangent(tx, w, *args))
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        if x.size * math.prod(w.shape[2:]) * x.dtype.itemsize <= PHASE_PATCH_BYTES:
            terms.append(_patch_product(x, tw, *args))
        else:
            terms.append(_conv(x, tw, *args))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)
