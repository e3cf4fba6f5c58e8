"""The stride-phase transposed convolution (``conv_transpose*d(impl="phases")``, the CPU
default): the plan's arithmetic, values against the float64 oracle and PyTorch over a seeded
sweep (12 cases, every case jitted, a quarter also eager and equal to jit;
``JAXCONV_TEST_FULL=1``: 18, all eager too) (one merged convolution and one per phase;
dilation, groups, padding past the kernel, output_padding, every layout), derivatives against
the lax path in both modes (also inside ``lax.scan`` and under ``vmap``; second order through
the public path in tests/test_conv_transpose.py), and NaN/inf reaching exactly PyTorch's
outputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL, with_variants
from jax import lax

import jaxconv
from jaxconv import reference
from jaxconv._args import LAYOUT_KERNELS
from jaxconv.geometry import conv_transpose_geometry
from jaxconv.kernels import dispatch, phases

CONVT = {1: jaxconv.conv_transpose1d, 2: jaxconv.conv_transpose2d, 3: jaxconv.conv_transpose3d}
REFT = {1: reference.conv_transpose1d, 2: reference.conv_transpose2d, 3: reference.conv_transpose3d}
LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC", "CHWN"), 3: ("NCDHW", "NDHWC")}


def test_axis_phases_split_the_taps_by_residue():
    # k=3, s=2, d=1: taps 0, 2 land on even outputs, tap 1 on odd ones
    even, odd = phases.axis_phases(3, 2, 1)
    assert (even.k0, even.taps, even.m0, even.tap_stride) == (0, 2, 0, 2)
    assert (odd.k0, odd.taps, odd.m0) == (1, 1, 0)
    # k=2, s=3: phase 2 gets no tap
    assert [p.taps for p in phases.axis_phases(2, 3, 1)] == [1, 1, 0]
    # d=2, s=4 (g=2): taps 0, 2 on phase 0 (one step apart), 1, 3 on phase 2
    ps = phases.axis_phases(4, 4, 2)
    assert [p.taps for p in ps] == [2, 0, 2, 0]
    assert (ps[0].step, ps[0].tap_stride, ps[2].k0, ps[2].m0) == (1, 2, 1, 0)


@pytest.mark.parametrize(
    ("k", "s", "d", "merged"),
    [(4, 2, 1, True), (2, 2, 1, True), (3, 2, 1, False), (3, 3, 1, True), (2, 2, 2, False)],
)
def test_merged_when_every_phase_has_the_same_taps(k, s, d, merged):
    geom = conv_transpose_geometry((1, 2, 5, 5), (2, 2, k, k), stride=s, dilation=d)
    assert phases.phase_plan(geom).merged is merged


def _case(i: int) -> dict:
    r = np.random.default_rng(4100 + i)
    n = (1, 2, 3)[i % 3]
    k = tuple(int(v) for v in r.integers(1, 5, n))
    s = tuple(int(v) for v in r.integers(2, 4, n))
    d = tuple(int(v) for v in r.integers(1, 3, n)) if i % 4 == 3 else (1,) * n
    if i % 4 == 1:  # a merged plan: every kernel size a multiple of its stride
        k = tuple(ss * int(r.integers(1, 3)) for ss in s)
    p = [int(r.integers(0, dd * (kk - 1) + 3)) for kk, dd in zip(k, d, strict=True)]
    op = [int(r.integers(0, max(ss, dd))) for ss, dd in zip(s, d, strict=True)]
    size = tuple(
        max(int(r.integers(1, 5)), -(-(2 * pp - dd * (kk - 1) - oo) // ss) + 1)
        for pp, dd, kk, oo, ss in zip(p, d, k, op, s, strict=True)
    )
    groups = int(r.choice([1, 2]))
    return dict(
        n=n, k=k, s=s, d=d, p=tuple(p), op=tuple(op), size=size, groups=groups,
        cin=groups * int(r.integers(1, 3)), cout=groups * int(r.integers(1, 3)),
        layout=LAYOUTS[n][i % len(LAYOUTS[n])],
    )  # fmt: skip


#: The seeded sweep: 12 cases (``JAXCONV_TEST_FULL=1``: 18, of which these are the first);
#: test_sweep_covers_merged_and_per_phase_plans_and_empty_phases holds for both.
CASES = [_case(i) for i in range(18 if FULL else 12)]


def _to_layout(x: np.ndarray, w: np.ndarray, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """NC* input and (C_in, C_out // g, *k) weight -> ``layout``'s input and kernel."""
    spatial = "".join(c for c in layout if c not in "NC")
    x = x.transpose([("NC" + spatial).index(c) for c in layout])
    w = w.transpose([("OI" + spatial).index(c) for c in LAYOUT_KERNELS[layout]])
    return x, w


def _from_layout(y: np.ndarray, layout: str) -> np.ndarray:
    spatial = "".join(c for c in layout if c not in "NC")
    return y.transpose([layout.index(c) for c in "NC" + spatial])


def _arrays(c: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    x = r.standard_normal((2, c["cin"], *c["size"]))
    w = r.standard_normal((c["cin"], c["cout"] // c["groups"], *c["k"]))
    return x, w


def _call(c: dict, x, w, impl: str):
    return CONVT[c["n"]](
        x, w, None, c["s"], c["p"], c["op"], c["groups"], c["d"], layout=c["layout"], impl=impl
    )


def test_sweep_covers_merged_and_per_phase_plans_and_empty_phases():
    plans = [
        phases.phase_plan(
            conv_transpose_geometry(
                (1, c["cin"], *c["size"]),
                (c["cin"], 1, *c["k"]),
                stride=c["s"],
                padding=c["p"],
                output_padding=c["op"],
                dilation=c["d"],
                layout=LAYOUTS[c["n"]][0],
            )
        )
        for c in CASES
    ]
    assert any(p.merged for p in plans) and any(not p.merged for p in plans)
    assert any(any(ph.taps == 0 for axis in p.phases for ph in axis) for p in plans)
    assert any(max(c["d"]) > 1 for c in CASES) and any(c["groups"] > 1 for c in CASES)


@pytest.mark.parametrize(("i", "variant"), with_variants(range(len(CASES))))
def test_values_match_the_oracle_and_torch(i, variant, torch):
    c = CASES[i]
    x, w = _arrays(c, i)
    F = torch.nn.functional
    torch_op = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[c["n"]]
    want = torch_op(
        torch.tensor(x), torch.tensor(w), None, c["s"], c["p"], c["op"], c["groups"], c["d"]
    ).numpy()
    oracle = REFT[c["n"]](x, w, None, c["s"], c["p"], c["op"], c["groups"], c["d"])
    np.testing.assert_allclose(oracle, want, rtol=1e-10, atol=1e-10)
    xl, wl = _to_layout(x, w, c["layout"])
    with jax.enable_x64(True):
        f = lambda a, b: _call(c, a, b, "phases")  # noqa: E731
        got = np.asarray(variant(f)(xl, wl))
        np.testing.assert_allclose(_from_layout(got, c["layout"]), oracle, rtol=1e-10, atol=1e-10)
        if variant is not jax.jit:  # eager == jit
            np.testing.assert_allclose(jax.jit(f)(xl, wl), got, rtol=1e-12, atol=1e-12)


def _derivatives(c: dict, impl: str):
    """``run(x, w, ct, tx, tw) -> (input gradient, weight gradient, tangent)`` of ``impl``'s
    transposed conv (reverse mode for cotangent ``ct``, forward mode along ``(tx, tw)``),
    jitted: one program."""

    @jax.jit
    def run(x, w, ct, tx, tw):
        conv = lambda a, b: _call(c, a, b, impl)  # noqa: E731
        _, pullback = jax.vjp(conv, x, w)
        return (*pullback(ct), jax.jvp(conv, (x, w), (tx, tw))[1])

    return run


@pytest.mark.parametrize("i", range(0, len(CASES), 3))
def test_derivatives_equal_the_lax_paths_in_both_modes(i):
    c = CASES[i]
    x, w = _to_layout(*_arrays(c, 100 + i), c["layout"])
    r = np.random.default_rng(200 + i)
    with jax.enable_x64(True):
        x, w = jnp.asarray(x), jnp.asarray(w)
        shape = jax.eval_shape(lambda a, b: _call(c, a, b, "lax"), x, w).shape
        ct = jnp.asarray(r.standard_normal(shape))
        tx, tw = jnp.asarray(r.standard_normal(x.shape)), jnp.asarray(r.standard_normal(w.shape))
        got, want = (_derivatives(c, impl)(x, w, ct, tx, tw) for impl in ("phases", "lax"))
    for g, h in zip(got, want, strict=True):  # input and weight gradients, tangent
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


def test_gradients_inside_scan_and_under_vmap():
    """A training loop runs the op inside lax.scan, per-example gradients under vmap: the
    same numbers as lax's."""
    c = CASES[4]
    x, w = _to_layout(*_arrays(c, 9), c["layout"])

    def scanned(a, b, impl):
        def body(carry, _):
            return carry + jnp.sum(jnp.sin(_call(c, a, b, impl))), None

        return lax.scan(body, jnp.zeros((), a.dtype), None, length=2)[0]

    with jax.enable_x64(True):
        x, w = jnp.asarray(x), jnp.asarray(w)
        grads = {
            i: jax.jit(jax.grad(scanned, (0, 1)), static_argnums=2)(x, w, i)
            for i in ("phases", "lax")
        }
        per_example = {
            i: jax.jit(
                jax.vmap(jax.grad(lambda a, b, i=i: scanned(a[None], b, i), (0, 1)), (0, None))
            )(x, w)
            for i in ("phases", "lax")
        }
    for g, h in zip(grads["phases"], grads["lax"], strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)
    for g, h in zip(per_example["phases"], per_example["lax"], strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("i", range(1, len(CASES), 3))
def test_weight_tangent_is_the_transposed_conv(i):
    """The weight's tangent form (a conv of the kernel by the input) equals the op itself."""
    c = CASES[i]
    x, w = _to_layout(*_arrays(c, 300 + i), c["layout"])
    geom = conv_transpose_geometry(
        (x.shape), w.shape, stride=c["s"], padding=c["p"], output_padding=c["op"],
        groups=c["groups"], dilation=c["d"], layout=c["layout"],
    )  # fmt: skip
    with jax.enable_x64(True):  # jitted, one program: un-jitted, every primitive compiles alone
        got, want = jax.jit(
            lambda a, b: (phases.weight_tangent(a, b, geom, None), _call(c, a, b, "lax"))
        )(x, w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


PLANE_CASES = [i for i, c in enumerate(CASES) if c["n"] == 3]


def _values_and_derivatives(c: dict, impl: str):
    """``run(x, w, ct, tx, tw) -> (values, input gradient, weight gradient, tangent)``,
    jitted: one program."""

    @jax.jit
    def run(x, w, ct, tx, tw):
        conv = lambda a, b: _call(c, a, b, impl)  # noqa: E731
        y, dy = jax.jvp(conv, (x, w), (tx, tw))
        return (y, *jax.vjp(conv, x, w)[1](ct), dy)

    return run


@pytest.mark.parametrize("i", PLANE_CASES)
def test_3d_planes_equal_the_oracle_and_the_phases_in_both_modes(i):
    """conv_transpose3d(impl="planes"): values against the float64 oracle, reverse- and
    forward-mode derivatives against the direct phases (3-D convolutions)."""
    c = CASES[i]
    x, w = _arrays(c, 500 + i)
    oracle = REFT[3](x, w, None, c["s"], c["p"], c["op"], c["groups"], c["d"])
    x, w = _to_layout(x, w, c["layout"])
    r = np.random.default_rng(600 + i)
    with jax.enable_x64(True):
        x, w = jnp.asarray(x), jnp.asarray(w)
        ct = jnp.asarray(
            r.standard_normal(jax.eval_shape(lambda a, b: _call(c, a, b, "planes"), x, w).shape)
        )
        tx, tw = jnp.asarray(r.standard_normal(x.shape)), jnp.asarray(r.standard_normal(w.shape))
        # per impl one program: the values (the jvp's primal output) and both derivatives
        res = {impl: _values_and_derivatives(c, impl)(x, w, ct, tx, tw)
               for impl in ("planes", "phases")}  # fmt: skip
    got = res["planes"][0]
    np.testing.assert_allclose(
        _from_layout(np.asarray(got), c["layout"]), oracle, rtol=1e-10, atol=1e-10
    )
    for g, h in zip(res["planes"][1:], res["phases"][1:], strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("where", ["input", "weight"])
@pytest.mark.parametrize("k", [3, 4])
def test_nan_and_inf_reach_torchs_outputs(where, k, torch):
    """Zero taps of a padded kernel would spread an input's NaN to its neighbours: the
    per-phase plan (k=3) has none, the merged one (k=4) needs none."""
    r = np.random.default_rng(k)
    x, w = r.standard_normal((1, 2, 4, 3)), r.standard_normal((2, 3, k, 2))
    a = x if where == "input" else w
    a[0, 0, 1, 1], a[0, 1, 2, 0] = np.nan, np.inf
    args = (None, 2, 1, 1, 1, (1, 2))
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), *args).numpy()
    with jax.enable_x64(True):
        got = np.asarray(jaxconv.conv_transpose2d(x, w, *args, impl="phases"))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-10)


def test_float32_and_bfloat16_against_the_oracle():
    c = CASES[2]
    x, w = _arrays(c, 11)
    want = REFT[c["n"]](x, w, None, c["s"], c["p"], c["op"], c["groups"], c["d"])
    xl, wl = _to_layout(x, w, c["layout"])
    for dtype, tol in ((jnp.float32, 1e-5), (jnp.bfloat16, 5e-2)):
        got = _call(c, jnp.asarray(xl, dtype), jnp.asarray(wl, dtype), "phases")
        assert got.dtype == dtype
        got = _from_layout(np.asarray(got, np.float64), c["layout"])
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 4)


def test_auto_takes_the_phases_on_cpu_and_planes_for_3d():
    geom = conv_transpose_geometry((1, 2, 5, 5), (2, 2, 3, 3), stride=(1, 2))
    assert dispatch.select_transpose_impl(geom, "cpu") == "phases"
    assert dispatch.select_transpose_impl(geom, "gpu") == "lax"
    cube = conv_transpose_geometry((1, 2, 5, 5, 5), (2, 2, 3, 3, 3), stride=2, layout="NCDHW")
    assert dispatch.select_transpose_impl(cube, "cpu") == "planes"
    unit = conv_transpose_geometry((1, 2, 5, 5), (2, 2, 3, 3), stride=1)
    assert dispatch.select_transpose_impl(unit, "cpu") == "phases"
    assert dispatch.select_transpose_impl(unit, "tpu") == "lax"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_unknown_impl_is_refused(n):
    x, w = np.zeros((1, 2) + (4,) * n, np.float32), np.zeros((2, 2) + (3,) * n, np.float32)
    with pytest.raises(ValueError, match=rf"^impl must be one of .* for conv_transpose{n}d"):
        CONVT[n](x, w, impl="vjp")
