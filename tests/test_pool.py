"""Pooling (chapter 6.5): jaxconv.pool against the float64 reference and PyTorch (CPU).

Every random case (12 per op; ``JAXCONV_TEST_FULL=1``: 28) checks jit == reference ==
torch.nn.functional, values and gradients (torch autograd is the gradient oracle; values,
gradient and indices come from one program per case), in both layouts, batched and
unbatched; a quarter of the cases (``JAXCONV_TEST_FULL=1``: all) also run eager, and check
eager == jit. Max-pool inputs are permutations of distinct values (negative ones included),
so no window has a tie.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL, with_variants
from jax.test_util import check_grads

from jaxconv import pool, reference
from jaxconv.shapes import pool_output_shape

# --- helpers ---------------------------------------------------------------------------------


def _to_nchw(x: np.ndarray, layout: str) -> np.ndarray:
    """The NCHW (or CHW) view torch needs of an array in ``layout``."""
    if layout == "NCHW":
        return x
    return np.moveaxis(x, -1, -3)  # (..., H, W, C) -> (..., C, H, W)


def _from_nchw(y: np.ndarray, layout: str) -> np.ndarray:
    return y if layout == "NCHW" else np.moveaxis(y, -3, -1)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Tie-free values: a permutation of distinct integers, half of them negative (exact in f32)."""
    size = int(np.prod(shape))
    return (rng.permutation(size) - size // 2).astype(np.float32).reshape(shape) / 4


def _torch_op(torch, name: str, x: np.ndarray, g: np.ndarray, layout: str, **kw):
    """torch.nn.functional.<name> on x (in ``layout``): output, input gradient for cotangent g,
    and the indices when ``return_indices``."""
    t = torch.tensor(_to_nchw(x, layout), requires_grad=True)
    out = getattr(torch.nn.functional, name)(t, **kw)
    y, idx = out if kw.get("return_indices") else (out, None)
    y.backward(torch.tensor(_to_nchw(g, layout)))
    conv = lambda a: _from_nchw(a.detach().numpy(), layout)  # noqa: E731
    return conv(y), conv(t.grad), None if idx is None else conv(idx)


def _geometry_ok(shape: tuple[int, ...], layout: str, kw: dict) -> bool:
    hw = shape[-2:] if layout == "NCHW" else shape[-3:-1]
    try:
        pool_output_shape(
            hw,
            kw["kernel_size"],
            kw.get("stride"),
            kw.get("padding", 0),
            kw.get("dilation", 1),
            kw.get("ceil_mode", False),
        )
    except ValueError:
        return False
    return True


def _random_cases(kind: str, count: int, seed: int) -> list[dict]:
    """Seeded random geometries that PyTorch accepts; sizes kept small so compiles stay few."""
    rng = np.random.default_rng(seed)
    cases: list[dict] = []
    while len(cases) < count:
        layout = ["NCHW", "NHWC"][len(cases) % 2]
        batched = rng.random() < 0.6
        n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
        h, w = (int(v) for v in rng.integers(1, 11, size=2))
        shape = ((n,) if batched else ()) + ((c, h, w) if layout == "NCHW" else (h, w, c))
        k = tuple(int(v) for v in rng.integers(1, 5, size=2))
        kw: dict = {"kernel_size": k if rng.random() < 0.7 else k[0]}
        if rng.random() < 0.7:
            s = tuple(int(v) for v in rng.integers(1, 4, size=2))
            kw["stride"] = s if rng.random() < 0.7 else s[0]
        pad = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        kw["padding"] = pad if kw["kernel_size"] == k else pad[0]
        kw["ceil_mode"] = bool(rng.random() < 0.5)
        if kind == "max":
            if rng.random() < 0.5:
                kw["dilation"] = tuple(int(v) for v in rng.integers(1, 4, size=2))
        else:
            kw["count_include_pad"] = bool(rng.random() < 0.5)
            if rng.random() < 0.25:
                kw["divisor_override"] = int(rng.choice([-3, 1, 2, 5]))
        if not _geometry_ok(shape, layout, kw):
            continue
        if kind == "max":
            # A dilated window may hold padding only (PyTorch: -inf and an out-of-range index,
            # whose backward is undefined); keep such geometries out of the gradient sweep.
            probe = reference.max_pool2d(np.zeros(shape), layout=layout, **kw)
            if not np.isfinite(probe).all():
                continue
        cases.append({"shape": shape, "layout": layout, "kw": kw, "seed": len(cases)})
    return cases


#: Cases per sweep; the default's are the first of the full sweep's (the draws are sequential)
#: and already reach every feature that test_sweep_covers_the_hard_cases asks for.
SWEEP = 28 if FULL else 12
MAX_CASES = _random_cases("max", SWEEP, seed=1)
AVG_CASES = _random_cases("avg", SWEEP, seed=2)


def _case_id(case: dict) -> str:
    kw = ",".join(f"{k}={v}" for k, v in case["kw"].items()).replace(" ", "")
    return f"{case['layout']}{list(case['shape'])}:{kw}".replace(" ", "")


def _overhangs(case: dict) -> bool:
    """Whether ceil_mode adds a window that the floor rule would not have."""
    kw = dict(case["kw"])
    if not kw.get("ceil_mode"):
        return False
    hw = case["shape"][-2:] if case["layout"] == "NCHW" else case["shape"][-3:-1]
    args = (hw, kw["kernel_size"], kw.get("stride"), kw["padding"], kw.get("dilation", 1))
    try:
        floor = pool_output_shape(*args, False)
    except ValueError:  # only ceil_mode makes any window exist
        return True
    return pool_output_shape(*args, True) != floor


def test_sweep_covers_the_hard_cases():
    """The random sweep must reach every feature it claims to test."""
    for cases in (MAX_CASES, AVG_CASES):
        assert sum(_overhangs(c) for c in cases) >= 3
        assert {c["layout"] for c in cases} == {"NCHW", "NHWC"}
        assert {len(c["shape"]) for c in cases} == {3, 4}
        assert any(isinstance(c["kw"]["kernel_size"], tuple) for c in cases)
        assert any(np.max(c["kw"]["padding"]) > 0 for c in cases)
    assert sum(np.max(c["kw"].get("dilation", 1)) > 1 for c in MAX_CASES) >= 5
    assert any(c["kw"]["count_include_pad"] is False for c in AVG_CASES)
    assert any(c["kw"].get("divisor_override") for c in AVG_CASES)
    assert any(
        _overhangs(c) and c["kw"]["count_include_pad"] and max(np.ravel(c["kw"]["padding"])) > 0
        for c in AVG_CASES
    )


# --- the chapter's printed values ------------------------------------------------------------


def test_chapter_pool2d(variant):
    X = jnp.array([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]])
    Y_max = variant(lambda X: pool.pool2d(X, (2, 2)))(X)
    Y_avg = variant(lambda X: pool.pool2d(X, (2, 2), "avg"))(X)
    np.testing.assert_array_equal(Y_max, [[4.0, 5.0], [7.0, 8.0]])
    np.testing.assert_array_equal(Y_avg, [[2.0, 3.0], [5.0, 6.0]])


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"kernel_size": 3}, [[10.0]]),
        ({"kernel_size": 3, "padding": 1, "stride": 2}, [[5.0, 7.0], [13.0, 15.0]]),
        ({"kernel_size": (2, 3), "stride": (2, 3), "padding": (0, 1)}, [[5.0, 7.0], [13.0, 15.0]]),
    ],
)
def test_chapter_max_pool2d(variant, kw, expected):
    X = jnp.arange(16, dtype=jnp.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(variant(lambda x: pool.max_pool2d(x, **kw))(X), [[expected]])


# --- random sweeps against the reference and torch -------------------------------------------


def _assert_eager_equals_jit(run, args: tuple, eager_outputs: tuple, exact: tuple = ()) -> None:
    """The eager variant's outputs equal ``jax.jit(run)``'s: bit for bit at the positions in
    ``exact``, elsewhere up to float32 rounding of sums that XLA may fuse in another order."""
    for i, (a, b) in enumerate(zip(eager_outputs, jax.jit(run)(*args), strict=True)):
        if i in exact:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("case", "variant"), with_variants(MAX_CASES, _case_id))
def test_max_pool2d_matches_torch(torch, variant, case):
    rng = np.random.default_rng(case["seed"])
    x = _distinct(rng, case["shape"])
    kw, layout = case["kw"], case["layout"]
    ref = reference.max_pool2d(x, layout=layout, **kw)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    ty, tgrad, tidx = _torch_op(torch, "max_pool2d", x, g, layout, return_indices=True, **kw)

    def run(x, g):
        """Values, the input gradient for cotangent g, and return_indices' pair: one program."""
        y, pullback = jax.vjp(lambda x: pool.max_pool2d(x, layout=layout, **kw), x)
        vals, idx = pool.max_pool2d(x, layout=layout, return_indices=True, **kw)
        return y, pullback(g)[0], vals, idx

    y, grad, vals, idx = out = variant(run)(x, g)
    assert y.dtype == jnp.float32 and y.shape == ref.shape
    if variant is not jax.jit:  # the selected elements and their indices: exact
        _assert_eager_equals_jit(run, (x, g), out, exact=(0, 2, 3))
    np.testing.assert_array_equal(y, ref)  # max selects an element: exact
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(grad, tgrad, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vals, ty)
    np.testing.assert_array_equal(idx, tidx)


@pytest.mark.parametrize(("case", "variant"), with_variants(AVG_CASES, _case_id))
def test_avg_pool2d_matches_torch(torch, variant, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"]).astype(np.float32)
    kw, layout = case["kw"], case["layout"]
    ref = reference.avg_pool2d(x, layout=layout, **kw)
    g = rng.standard_normal(ref.shape).astype(np.float32)
    ty, tgrad, _ = _torch_op(torch, "avg_pool2d", x, g, layout, **kw)

    def run(x, g):
        """Values and the input gradient for cotangent g: one program."""
        y, pullback = jax.vjp(lambda x: pool.avg_pool2d(x, layout=layout, **kw), x)
        return y, pullback(g)[0]

    y, grad = out = variant(run)(x, g)
    assert y.dtype == jnp.float32 and y.shape == ref.shape
    if variant is not jax.jit:
        _assert_eager_equals_jit(run, (x, g), out)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ty, ref, rtol=1e-5, atol=1e-6)  # the two oracles agree
    np.testing.assert_allclose(grad, tgrad, rtol=1e-5, atol=1e-6)


CHWN_CASES = [("max", c) for c in MAX_CASES if len(c["shape"]) == 4][:12] + [
    ("avg", c) for c in AVG_CASES if len(c["shape"]) == 4
][:8]


@pytest.mark.parametrize(
    ("op_case", "variant"), with_variants(CHWN_CASES, lambda oc: f"{oc[0]}-{_case_id(oc[1])}")
)
def test_chwn_layout_matches_torch(torch, variant, op_case):
    """layout="CHWN" (C, H, W, N): values, gradients and indices against torch on the NCHW
    transpose; max-pool inputs rounded so that windows hold ties (torch's first-max rule)."""
    op, case = op_case
    rng = np.random.default_rng(case["seed"])
    x = _to_nchw(rng.standard_normal(case["shape"]).astype(np.float32), case["layout"])
    if op == "max":
        x = np.round(x)  # ties in most windows
    kw = case["kw"]
    name = f"{op}_pool2d"
    fn = getattr(pool, name)
    xc = x.transpose(1, 2, 3, 0)
    out_shape = jax.eval_shape(lambda x: fn(x, layout="CHWN", **kw), xc).shape
    g = rng.standard_normal(out_shape).astype(np.float32)
    extra = {"return_indices": True} if op == "max" else {}
    ty, tgrad, tidx = _torch_op(torch, name, x, g.transpose(3, 0, 1, 2), "NCHW", **kw, **extra)

    def run(x, g):
        """Values, the input gradient for cotangent g and (max) the indices: one program."""
        y, pullback = jax.vjp(lambda x: fn(x, layout="CHWN", **kw), x)
        idx = fn(x, layout="CHWN", **kw, **extra)[1] if extra else None
        return y, pullback(g)[0], idx

    y, grad, idx = variant(run)(xc, g)
    np.testing.assert_allclose(y.transpose(3, 0, 1, 2), ty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad.transpose(3, 0, 1, 2), tgrad, rtol=1e-5, atol=1e-6)
    if op == "max":
        np.testing.assert_array_equal(idx.transpose(3, 0, 1, 2), tidx)


def test_chwn_tiled_lenet_pool_matches_torch(torch):
    """LeNet's 2x2 pools in CHWN (XLA:CPU's tiled rule) with ties, NaN and -inf."""
    rng = np.random.default_rng(5)
    x = np.round(rng.standard_normal((6, 28, 28, 8)) * 2).astype(np.float32)
    x[0, 0, 0, 0], x[1, 2:4, 2:4, 1], x[2, 4, 5, 2] = np.nan, -np.inf, np.nan
    g = rng.standard_normal((6, 14, 14, 8)).astype(np.float32)
    f = lambda x: pool.max_pool2d(x, 2, layout="CHWN")  # noqa: E731
    y, vjp = jax.vjp(jax.jit(f), x)
    ty, tgrad, _ = _torch_op(torch, "max_pool2d", x.transpose(3, 0, 1, 2),
                             g.transpose(3, 0, 1, 2), "NCHW", kernel_size=2)  # fmt: skip
    np.testing.assert_array_equal(y.transpose(3, 0, 1, 2), ty)
    np.testing.assert_array_equal(vjp(g)[0].transpose(3, 0, 1, 2), tgrad)


def test_chwn_needs_a_batch():
    with pytest.raises(ValueError, match=r"rank 4 \(batched CHWN"):
        pool.avg_pool2d(np.ones((3, 8, 8), np.float32), 2, layout="CHWN")


def test_ceil_mode_avg_divisor_excludes_overhang(torch):
    """6x6 ones, 3x3 window, stride 2, padding 1, ceil_mode: the 4th window per axis covers
    rows 5, 6 (padding), 7 (past the padded input); PyTorch counts 2 of its 3 rows with
    count_include_pad, and the 1 real row without."""
    x = np.ones((1, 6, 6), np.float32)
    kw = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    y = pool.avg_pool2d(x, **kw)
    t = torch.nn.functional.avg_pool2d(torch.tensor(x), **kw).numpy()
    np.testing.assert_allclose(y, t, rtol=1e-6)
    assert y.shape == (1, 4, 4)
    per_axis = np.array([2 / 3, 1, 1, 1 / 2])  # real rows / rows inside the padded input
    np.testing.assert_allclose(y[0], np.outer(per_axis, per_axis), rtol=1e-6)
    y_no_pad = pool.avg_pool2d(x, **kw, count_include_pad=False)
    np.testing.assert_allclose(y_no_pad, np.ones_like(y_no_pad))


def test_ceil_mode_kernel_larger_than_input(torch):
    """With ceil_mode PyTorch accepts a dilated window longer than the input (only taps inside
    count); so does jaxconv, with gradients."""
    rng = np.random.default_rng(3)
    x = _distinct(rng, (2, 3, 3))
    kw = {"kernel_size": 2, "dilation": 3, "ceil_mode": True}  # effective window 4 > 3
    g = rng.standard_normal((2, 1, 1)).astype(np.float32)
    ty, tgrad, _ = _torch_op(torch, "max_pool2d", x, g, "NCHW", **kw)
    np.testing.assert_array_equal(pool.max_pool2d(x, **kw), ty)
    grad = jax.grad(lambda x: jnp.vdot(pool.max_pool2d(x, **kw), g))(x)
    np.testing.assert_array_equal(grad, tgrad)


# --- per-side padding (PyTorch has none: F.pad first where the semantics coincide) -----------

PER_SIDE = [
    ((4, 7), (3, 3), None, ((0, 1), (1, 0)), 1),
    ((6, 5), (2, 4), (1, 2), ((1, 0), (2, 0)), 1),
    ((5, 6), (3, 2), 2, ((1, 0), (0, 1)), (2, 1)),
    ((7, 7), (4, 4), (3, 1), ((2, 0), (1, 2)), 1),
]


#: Each geometry in both layouts, ordered so that the eager quarter has both layouts.
PER_SIDE_CASES = [
    (PER_SIDE[(i + j) % len(PER_SIDE)], layout)
    for j, layout in enumerate(("NCHW", "NHWC"))
    for i in range(len(PER_SIDE))
]


@pytest.mark.parametrize(
    ("case", "variant"), with_variants(PER_SIDE_CASES, lambda c: f"{c[1]}-{c[0]}".replace(" ", ""))
)
def test_per_side_padding(torch, variant, case):
    (hw, k, s, pads, d), layout = case
    rng = np.random.default_rng(4)
    shape = (2, 3, *hw) if layout == "NCHW" else (2, *hw, 3)
    x = _distinct(rng, shape)
    (t, b), (lf, r) = pads
    F = torch.nn.functional

    def via_torch(op, value, **kw):
        tx = torch.tensor(_to_nchw(x, layout), requires_grad=True)
        y = op(F.pad(tx, (lf, r, t, b), value=value), k, s, **kw)
        return tx, y

    for name, value, extra in (("max", -np.inf, {"dilation": d}), ("avg", 0.0, {})):
        if name == "avg" and d != 1:
            continue
        ours = pool.max_pool2d if name == "max" else pool.avg_pool2d

        def run(x, g, ours=ours, extra=extra):
            """Values and the input gradient for cotangent g: one program."""
            y, pullback = jax.vjp(lambda x: ours(x, k, s, pads, layout=layout, **extra), x)
            return y, pullback(g)[0]

        ref = getattr(reference, f"{name}_pool2d")(x, k, s, pads, layout=layout, **extra)
        g = rng.standard_normal(ref.shape).astype(np.float32)
        y, grad = variant(run)(x, g)
        np.testing.assert_allclose(y, ref, rtol=1e-6, atol=1e-6)
        # Without ceil_mode, padding with -inf (max) or zeros counted in the divisor (avg)
        # first gives the same windows.
        tx, ty = via_torch(getattr(F, f"{name}_pool2d"), value, **extra)
        np.testing.assert_allclose(y, _from_nchw(ty.detach().numpy(), layout), rtol=1e-6)
        ty.backward(torch.tensor(_to_nchw(g, layout)))
        tgrad = _from_nchw(tx.grad.numpy(), layout)
        np.testing.assert_allclose(grad, tgrad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_per_side_padding_ceil_mode_matches_reference(ceil_mode):
    """Per-side padding with ceil_mode and count_include_pad, where only the reference can say."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 7, 6)).astype(np.float32)
    for pads, include in itertools.product((((0, 1), (1, 0)), ((1, 0), (0, 1))), (True, False)):
        kw = {"kernel_size": 3, "stride": 2, "padding": pads, "ceil_mode": ceil_mode}
        np.testing.assert_allclose(
            pool.avg_pool2d(x, count_include_pad=include, **kw),
            reference.avg_pool2d(x, count_include_pad=include, **kw),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_array_equal(
            pool.max_pool2d(x, dilation=(1, 2), **kw),
            reference.max_pool2d(x, dilation=(1, 2), **kw),
        )


# --- ties: the gradient goes where PyTorch sends it ------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"kernel_size": 2},
        {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True},
        {"kernel_size": (2, 3), "stride": 1, "dilation": (2, 1), "padding": (1, 1)},
    ],
)
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_max_pool_ties_follow_torch(torch, kw, layout):
    """After a ReLU most windows tie (zeros); PyTorch's backward picks the first maximum of
    each window, and so does jaxconv (JAX's own reduce_window rule need not)."""
    rng = np.random.default_rng(11)
    shape = (2, 3, 7, 6) if layout == "NCHW" else (2, 7, 6, 3)
    x = np.maximum(rng.integers(-3, 3, size=shape), 0).astype(np.float32)  # many ties
    f = lambda x: pool.max_pool2d(x, layout=layout, **kw)  # noqa: E731
    g = rng.standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)
    ty, tgrad, tidx = _torch_op(torch, "max_pool2d", x, g, layout, return_indices=True, **kw)

    @jax.jit
    def run(x, g):
        """Values, the input gradient for cotangent g, and return_indices' pair: one program."""
        y, pullback = jax.vjp(f, x)
        return y, pullback(g)[0], *pool.max_pool2d(x, layout=layout, return_indices=True, **kw)

    y, grad, vals, idx = run(x, g)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_allclose(grad, tgrad, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(vals, ty)
    np.testing.assert_array_equal(idx, tidx)


def test_max_pool_nan_propagates_like_torch(torch):
    x = _distinct(np.random.default_rng(12), (1, 6, 6))
    x[0, 1, 1] = np.nan
    kw = {"kernel_size": 3, "stride": 2, "padding": 1}
    g = np.ones((1, 3, 3), np.float32)
    ty, tgrad, tidx = _torch_op(torch, "max_pool2d", x, g, "NCHW", return_indices=True, **kw)
    np.testing.assert_array_equal(pool.max_pool2d(x, **kw), ty)  # NaN where torch has NaN
    grad = jax.grad(lambda x: jnp.vdot(pool.max_pool2d(x, **kw), g))(x)
    np.testing.assert_array_equal(grad, tgrad)
    np.testing.assert_array_equal(pool.max_pool2d(x, return_indices=True, **kw)[1], tidx)


@pytest.mark.parametrize("kw", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=3, stride=1, dilation=2)], ids=str)  # fmt: skip
def test_max_pool_nan_propagates_on_large_inputs(torch, kw):
    """Regression: XLA:CPU (jaxlib 0.10.2) runs reduce_window max on inputs this size through
    YNNPACK, which dropped NaN (a window holding one pooled to a number). The values alone
    and under ``vjp`` are computed by different code (``_window_max``, the derivative rule)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 6, 28, 28)).astype(np.float32)
    x[0, 0, 0, 0] = x[1, 4, 13, 20] = x[1, 5, 27, 27] = np.nan
    f = lambda x: pool.max_pool2d(x, **kw)  # noqa: E731
    g = rng.standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)
    ty, tgrad, _ = _torch_op(torch, "max_pool2d", x, g, "NCHW", **kw)
    assert np.isnan(ty).sum() >= 3
    np.testing.assert_array_equal(jax.jit(f)(x), ty)  # values alone: the NaN pass runs
    y, pullback = jax.vjp(jax.jit(f), x)  # values and gradient: one program each
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(pullback(g)[0], tgrad)


# --- gradients where plain JAX has none ------------------------------------------------------


def test_dilated_max_pool_differentiates_both_modes():
    """JAX's reduce_window max has no derivative with window dilation; jaxconv's does
    (forward and reverse mode)."""
    x = jnp.asarray(_distinct(np.random.default_rng(6), (2, 9, 8)))
    kw = {"kernel_size": (3, 2), "stride": (2, 1), "padding": 1, "dilation": (2, 3)}
    with pytest.raises(NotImplementedError):
        jax.grad(
            lambda x: jax.lax.reduce_window(
                x, -jnp.inf, jax.lax.max, (1, 3, 2), (1, 2, 1), "VALID", window_dilation=(1, 2, 3)
            ).sum()
        )(x)
    f = jax.jit(lambda x: pool.max_pool2d(x, **kw))
    check_grads(f, (x,), order=1, modes=("fwd", "rev"), eps=1e-2)


def test_avg_pool_check_grads():
    x = jnp.asarray(np.random.default_rng(7).standard_normal((3, 7, 5)), jnp.float32)
    kw = {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}
    check_grads(jax.jit(lambda x: pool.avg_pool2d(x, **kw)), (x,), order=2, modes=("fwd", "rev"))


# --- the manual pool2d -----------------------------------------------------------------------


POOL2D_CASES = [(hw, size, mode) for mode in ("max", "avg")
                for hw, size in [((5, 7), (2, 3)), ((6, 6), (3, 3)), ((4, 9), (1, 4))]]  # fmt: skip


@pytest.mark.parametrize(("case", "variant"), with_variants(POOL2D_CASES, str))
def test_pool2d_matches_lax_version(variant, case):
    hw, size, mode = case
    rng = np.random.default_rng(8)
    X = _distinct(rng, hw)
    lax_op = pool.max_pool2d if mode == "max" else pool.avg_pool2d
    manual = lambda X: pool.pool2d(X, size, mode)  # noqa: E731
    lax_version = lambda X: lax_op(X[None], size, stride=1)[0]  # noqa: E731
    g = rng.standard_normal(jax.eval_shape(lax_version, X).shape).astype(np.float32)

    def run(X, g):
        """Both versions' values and input gradients for cotangent g: one program."""
        (y, pull), (lax_y, lax_pull) = jax.vjp(manual, X), jax.vjp(lax_version, X)
        return y, pull(g)[0], lax_y, lax_pull(g)[0]

    y, grad, lax_y, lax_grad = variant(run)(X, g)
    np.testing.assert_allclose(y, lax_y, rtol=1e-6)
    np.testing.assert_allclose(y, reference.pool2d(X, size, mode), rtol=1e-6)
    np.testing.assert_allclose(grad, lax_grad, rtol=1e-5, atol=1e-6)


# --- dtypes, layouts of edge sizes, tracing ---------------------------------------------------


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_keeps_dtype(dtype):
    x = np.random.default_rng(9).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for op in (pool.max_pool2d, pool.avg_pool2d):
        y = op(jnp.asarray(x, dtype), 3, 2, 1, ceil_mode=True)
        assert y.dtype == dtype
        np.testing.assert_allclose(
            np.asarray(y, np.float32),
            op(x, 3, 2, 1, ceil_mode=True),
            rtol=2e-2,
            atol=2e-2,
        )


def test_empty_batch_is_allowed(torch):
    """As in PyTorch, only the batch axis may be empty."""
    x = np.zeros((0, 2, 5, 5), np.float32)
    want = tuple(torch.nn.functional.max_pool2d(torch.tensor(x), 2).shape)
    assert pool.max_pool2d(x, 2).shape == want == (0, 2, 2, 2)
    assert pool.max_pool2d(x, 2, dilation=2, stride=2).shape == (0, 2, 2, 2)
    x_nhwc = np.zeros((0, 5, 5, 2), np.float32)
    assert pool.avg_pool2d(x_nhwc, 2, layout="NHWC").shape == (0, 2, 2, 2)


def test_jit_traces_once():
    traces = []

    @jax.jit
    def f(x):
        traces.append(1)
        return pool.max_pool2d(x, 3, 2, 1, dilation=2).sum() + pool.avg_pool2d(x, 3, 2, 1).sum()

    x = jnp.ones((1, 2, 9, 9))
    f(x)
    f(x + 1)
    assert len(traces) == 1


# --- pool_output_shape against torch ---------------------------------------------------------


def test_pool_output_shape_matches_torch(torch):
    """Every small geometry: same size where torch succeeds, ValueError where it refuses."""
    F = torch.nn.functional
    for n, k, s, d, p, ceil in itertools.product(
        range(1, 8), range(1, 5), range(1, 4), range(1, 4), range(3), (False, True)
    ):
        try:
            want = F.max_pool2d(torch.zeros(1, n, 2), (k, 1), (s, 1), (p, 0), (d, 1), ceil).shape[1]
        except RuntimeError:
            want = None
        try:
            got = pool_output_shape((n, 2), (k, 1), (s, 1), (p, 0), (d, 1), ceil)[0]
        except ValueError:
            got = None
        assert got == want, (n, k, s, d, p, ceil)


# --- validation: one test per rule, and torch refuses the same --------------------------------

X4 = np.zeros((1, 2, 5, 5), np.float32)


def _torch_refuses(torch, fn):
    with pytest.raises((RuntimeError, TypeError, ValueError, IndexError, NotImplementedError)):
        fn(torch.nn.functional)


def test_padding_over_half_the_window(torch):
    for op in (pool.max_pool2d, pool.avg_pool2d):
        with pytest.raises(ValueError, match="padding must be at most half"):
            op(X4, 2, padding=2)
        with pytest.raises(ValueError, match="padding must be at most half"):
            op(X4, 3, padding=((0, 2), (0, 0)))
    # with dilation the rule still uses the kernel size, not the effective window
    with pytest.raises(ValueError, match="padding"):
        pool.max_pool2d(X4, 2, padding=2, dilation=3)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), 2, padding=2))
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), 2, padding=2))
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), 2, padding=2, dilation=3))


def test_negative_padding(torch):
    with pytest.raises(ValueError, match="padding must be non-negative"):
        pool.max_pool2d(X4, 3, padding=-1)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), 3, padding=-1))


@pytest.mark.parametrize("name", ["kernel_size", "stride", "dilation"])
@pytest.mark.parametrize("value", [0, -1, (2, 0)])
def test_non_positive_window_arguments(torch, name, value):
    kw = {"kernel_size": 2, name: value}
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        pool.max_pool2d(X4, **kw)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), **kw))
    if name != "dilation":
        with pytest.raises(ValueError, match=f"{name} must be positive"):
            pool.avg_pool2d(X4, **kw)
        _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), **kw))


@pytest.mark.parametrize("value", [2.0, "2", (2, 2, 2), None])
def test_non_int_kernel_size(torch, value):
    with pytest.raises(TypeError, match="kernel_size"):
        pool.max_pool2d(X4, value)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), value))


@pytest.mark.parametrize(
    "kw", [{"kernel_size": 6}, {"kernel_size": 3, "dilation": 3}, {"kernel_size": (1, 6)}]
)
def test_empty_output(torch, kw):
    op = pool.max_pool2d
    with pytest.raises(ValueError, match="output would be empty"):
        op(X4, **kw)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(X4), **kw))
    kw.pop("dilation", None)
    if kw["kernel_size"] == 3:
        return
    with pytest.raises(ValueError, match="output would be empty"):
        pool.avg_pool2d(X4, **kw)
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), **kw))


@pytest.mark.parametrize("shape", [(5, 5), (1, 1, 1, 5, 5)])
def test_wrong_rank(torch, shape):
    for op in (pool.max_pool2d, pool.avg_pool2d):
        with pytest.raises(ValueError, match="input must have rank 3 or 4"):
            op(np.zeros(shape, np.float32), 2)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.zeros(shape), 2))
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.zeros(shape), 2))


@pytest.mark.parametrize("shape", [(1, 0, 5, 5), (1, 2, 0, 5), (2, 5, 0)])
def test_empty_channel_or_spatial_axis(torch, shape):
    with pytest.raises(ValueError, match="non-empty"):
        pool.max_pool2d(np.zeros(shape, np.float32), 2, padding=1)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.zeros(shape), 2, padding=1))


def test_unknown_layout():
    # torch has no layout argument; jaxconv knows NCHW, NHWC and CHWN only.
    for op in (pool.max_pool2d, pool.avg_pool2d):
        with pytest.raises(ValueError, match="layout must be one of"):
            op(X4, 2, layout="NWHC")


def test_complex_dtype(torch):
    xc = X4.astype(np.complex64)
    for op in (pool.max_pool2d, pool.avg_pool2d):
        with pytest.raises(TypeError, match="input must have a real floating dtype"):
            op(xc, 2)
    _torch_refuses(torch, lambda F: F.max_pool2d(torch.tensor(xc), 2))
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(xc), 2))


def test_integer_dtype_is_refused(torch):
    """A deliberate divergence: torch pools integer tensors; jaxconv refuses them (max pooling
    pads with -inf, and an integer mean would silently truncate)."""
    xi = X4.astype(np.int32)
    for op in (pool.max_pool2d, pool.avg_pool2d):
        with pytest.raises(TypeError, match="input must have a real floating dtype"):
            op(xi, 2)
    with pytest.raises(TypeError, match="X must have a real floating dtype"):
        pool.pool2d(np.zeros((3, 3), np.int32), 2)
    assert torch.nn.functional.max_pool2d(torch.tensor(xi), 2).dtype == torch.int32


def test_divisor_override_zero(torch):
    with pytest.raises(ValueError, match="divisor_override must be a non-zero int"):
        pool.avg_pool2d(X4, 2, divisor_override=0)
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), 2, divisor_override=0))


@pytest.mark.parametrize("value", [2.5, True, "2"])
def test_divisor_override_not_int(torch, value):
    with pytest.raises(TypeError, match="divisor_override must be an int"):
        pool.avg_pool2d(X4, 2, divisor_override=value)
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), 2, divisor_override=value))


def test_negative_divisor_override_as_in_torch(torch):
    """PyTorch refuses only 0; a negative divisor divides as written. jaxconv does the same."""
    x = np.random.default_rng(10).standard_normal((2, 5, 5)).astype(np.float32)
    want = torch.nn.functional.avg_pool2d(torch.tensor(x), 2, divisor_override=-3).numpy()
    np.testing.assert_allclose(pool.avg_pool2d(x, 2, divisor_override=-3), want, rtol=1e-6)


@pytest.mark.parametrize("name", ["ceil_mode", "count_include_pad"])
def test_flags_must_be_bool(torch, name):
    with pytest.raises(TypeError, match=f"{name} must be a bool"):
        pool.avg_pool2d(X4, 2, **{name: 1})
    _torch_refuses(torch, lambda F: F.avg_pool2d(torch.tensor(X4), 2, **{name: 1}))
    if name == "ceil_mode":
        with pytest.raises(TypeError, match="ceil_mode must be a bool"):
            pool.max_pool2d(X4, 2, ceil_mode=1)
        with pytest.raises(TypeError, match="return_indices must be a bool"):
            pool.max_pool2d(X4, 2, return_indices=1)


def test_errors_raise_under_jit():
    """Validation runs on static shapes at trace time: the same error, never an XLA one."""
    with pytest.raises(ValueError, match="padding must be at most half"):
        jax.jit(lambda x: pool.max_pool2d(x, 2, padding=2))(X4)
    with pytest.raises(ValueError, match="output would be empty"):
        jax.jit(lambda x: pool.avg_pool2d(x, 6))(X4)


def test_pool2d_errors():
    X = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match="mode must be 'max' or 'avg'"):
        pool.pool2d(X, 2, "mean")
    with pytest.raises(ValueError, match="pool_size .* is larger than X"):
        pool.pool2d(X, (4, 2))
    with pytest.raises(ValueError, match="pool_size must be positive"):
        pool.pool2d(X, 0)
    with pytest.raises(ValueError, match="X must have rank 2"):
        pool.pool2d(X[None], 2)
