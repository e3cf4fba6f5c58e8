"""Max and average pooling in 1-D, 2-D and 3-D against PyTorch (CPU) and the float64 oracle.

A seeded sweep over small geometries (every layout, batched and unbatched, dilation, padding,
ceil mode, every argument form) checks values, indices and gradients in float64 against
torch.nn.functional and its autograd, and jaxconv.reference (every case jitted, its checks
from one program, and a quarter also eager and equal to jit; ``JAXCONV_TEST_FULL=1``: more
cases, all eager too); max-pool inputs are drawn from a
few integers, so windows hold ties and the selected element must be torch's. Forward mode is
checked against torch's indices (the tangent is the tangent at the index torch returns), and
check_grads covers second order of dilated max pooling in 1-D and 3-D.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL, with_variants
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference

#: Layouts per number of spatial axes; the first is the op's default.
LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC", "CHWN"), 3: ("NCDHW", "NDHWC")}


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


# --- layouts ---------------------------------------------------------------------------------


def _first(layout: str, batched: bool) -> tuple[str, str]:
    """(layout of the array, its channels-first spelling), N dropped when unbatched."""
    cf = "NC" + "".join(c for c in layout if c not in "NC")
    return (layout, cf) if batched else (layout.replace("N", ""), cf.replace("N", ""))


def to_cf(a: np.ndarray, layout: str, batched: bool) -> np.ndarray:
    """An array in ``layout`` -> channels first, torch's order."""
    src, dst = _first(layout, batched)
    return np.transpose(a, [src.index(c) for c in dst])


def from_cf(a: np.ndarray, layout: str, batched: bool) -> np.ndarray:
    src, dst = _first(layout, batched)
    return np.transpose(a, [dst.index(c) for c in src])


def shape_in(layout: str, batched: bool, n: int, c: int, size: tuple[int, ...]) -> tuple:
    dims = dict(zip("NC", (n, c), strict=True))
    spatial = iter(size)
    letters = layout if batched else layout.replace("N", "")
    return tuple(dims[ch] if ch in "NC" else next(spatial) for ch in letters)


def _torch(torch, name: str, x: np.ndarray, g: np.ndarray | None, layout: str, batched: bool,
           *args, **kw):  # fmt: skip
    """torch.nn.functional.<name> on a channels-first copy of x: (values, indices or None,
    input gradient for the cotangent g or None), back in ``layout``."""
    t = torch.tensor(to_cf(x, layout, batched), requires_grad=g is not None)
    out = getattr(torch.nn.functional, name)(t, *args, **kw)
    y, idx = out if isinstance(out, tuple) else (out, None)
    grad = None
    if g is not None:
        y.backward(torch.tensor(to_cf(g, layout, batched)))
        grad = from_cf(t.grad.numpy(), layout, batched)
    back = lambda a: None if a is None else from_cf(a.detach().numpy(), layout, batched)  # noqa: E731
    return back(y), back(idx), grad


# --- the sweep -------------------------------------------------------------------------------


def _spell(value: tuple[int, ...], rng: np.random.Generator) -> object:
    """One of the forms torch accepts for a per-axis argument: int, 1-tuple, n-tuple, list."""
    if len(set(value)) == 1:
        return [value[0], (value[0],), value, list(value)][int(rng.integers(4))]
    return value if rng.random() < 0.5 else list(value)


def _cases(kind: str, n: int, count: int, seed: int) -> list[dict]:
    """Seeded geometries torch accepts (its output rule decides: cases it refuses are redrawn);
    every layout, batched and unbatched, ceil mode, padding, dilation."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(seed)
    cases: list[dict] = []
    while len(cases) < count:
        layout = LAYOUTS[n][len(cases) % len(LAYOUTS[n])]
        batched = layout == "CHWN" or rng.random() < 0.6
        size = tuple(int(v) for v in rng.integers(1, 8 if n < 3 else 6, size=n))
        k = tuple(int(v) for v in rng.integers(1, 4, size=n))
        kw: dict = {"kernel_size": _spell(k, rng)}
        r = rng.random()
        if r < 0.6:
            kw["stride"] = _spell(tuple(int(v) for v in rng.integers(1, 4, size=n)), rng)
        elif r < 0.75:
            kw["stride"] = [(), []][int(rng.integers(2))]  # empty: the kernel
        kw["padding"] = _spell(tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k), rng)
        kw["ceil_mode"] = bool(rng.random() < 0.5)
        if kind == "max" and rng.random() < 0.6:
            kw["dilation"] = _spell(tuple(int(v) for v in rng.integers(1, 4, size=n)), rng)
        if kind == "avg":
            kw["count_include_pad"] = bool(rng.random() < 0.5)
            if n > 1 and rng.random() < 0.25:
                kw["divisor_override"] = int(rng.choice([-3, 2, 5]))
        probe = torch.zeros((1, 1, *size))
        try:
            out = getattr(F, f"{kind}_pool{n}d")(probe, **kw)
        except RuntimeError:
            continue
        if not torch.isfinite(out).all():
            continue  # a dilated window of padding only: -inf, an index outside, no gradient
        c = int(rng.integers(1, 3))
        shape = shape_in(layout, batched, int(rng.integers(1, 3)), c, size)
        cases.append({"n": n, "layout": layout, "batched": batched, "shape": shape, "kw": kw})
    return cases


#: Cases per rank: 4 max and 3 avg (``JAXCONV_TEST_FULL=1``: 6 and 5, of which these are the
#: first); test_sweep_covers_the_hard_cases holds for both.
MAX_CASES = [c for n in (1, 2, 3) for c in _cases("max", n, 6 if FULL else 4, seed=10 + n)]
AVG_CASES = [c for n in (1, 2, 3) for c in _cases("avg", n, 5 if FULL else 3, seed=20 + n)]


def _id(case: dict) -> str:
    kw = ",".join(f"{k}={v}" for k, v in case["kw"].items()).replace(" ", "")
    return f"{case['layout']}{list(case['shape'])}:{kw}"


def test_sweep_covers_the_hard_cases():
    """The seeded sweeps reach every layout, both ranks, ceil mode, padding, dilation, the
    empty stride and the 1-tuple form."""
    for cases in (MAX_CASES, AVG_CASES):
        assert {c["layout"] for c in cases} == {lay for ls in LAYOUTS.values() for lay in ls}
        assert {c["batched"] for c in cases} == {True, False}
        assert any(c["kw"]["ceil_mode"] for c in cases)
        assert any(c["kw"].get("stride") in ((), []) for c in cases)
        assert any(np.max(c["kw"]["padding"]) > 0 for c in cases)
        assert any(isinstance(c["kw"]["kernel_size"], tuple) and len(c["kw"]["kernel_size"]) == 1
                   for c in cases)  # fmt: skip
    for n in (1, 3):
        assert any(c["n"] == n and np.max(c["kw"].get("dilation", 1)) > 1 for c in MAX_CASES)


@pytest.mark.parametrize(("case", "variant"), with_variants(MAX_CASES, _id))
def test_max_pool_values_indices_gradients_vs_torch(case, variant, torch):
    """Values, indices and the gradient (float64, ties everywhere) equal torch's; eager ==
    jit (eager variant); the float64 oracle agrees; forward mode is the tangent at torch's
    index."""
    n, layout, batched, kw = case["n"], case["layout"], case["batched"], case["kw"]
    rng = np.random.default_rng(len(_id(case)))
    x = rng.integers(-2, 3, size=case["shape"]).astype(np.float64)  # few values: ties
    op = getattr(jaxconv, f"max_pool{n}d")
    f = lambda x: op(x, return_indices=True, layout=layout, **kw)  # noqa: E731
    values = lambda x: op(x, layout=layout, **kw)  # noqa: E731

    @jax.jit
    def run(x, g, t):
        """Values and indices, the gradient for cotangent g through the values-only op and
        through the indices path, and the tangent along t: one program."""
        y, idx = f(x)
        grad = jax.vjp(values, x)[1](g)[0]
        grad_idx = jax.vjp(lambda x: f(x)[0], x)[1](g)[0]
        return y, idx, grad, grad_idx, jax.jvp(values, (x,), (t,))[1]

    g = rng.standard_normal(jax.eval_shape(values, x).shape)
    t = rng.standard_normal(x.shape)
    y, idx, grad, grad_idx, tangent = run(x, g, t)
    want_y, want_idx, want_grad = _torch(torch, f"max_pool{n}d", x, g, layout, batched,
                                         return_indices=True, **kw)  # fmt: skip
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(idx, want_idx)
    if variant is not jax.jit:
        y_eager, idx_eager = f(x)
        np.testing.assert_array_equal(y_eager, y)
        np.testing.assert_array_equal(idx_eager, idx)
    ref_y, ref_idx = getattr(reference, f"max_pool{n}d")(x, return_indices=True, layout=layout,
                                                         **kw)  # fmt: skip
    np.testing.assert_array_equal(ref_y, want_y)
    np.testing.assert_array_equal(ref_idx, want_idx)
    np.testing.assert_allclose(grad, want_grad, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad_idx, want_grad, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(tangent, _at_indices(t, want_idx, layout, batched, n))


@pytest.mark.parametrize(("case", "variant"), with_variants(AVG_CASES, _id))
def test_avg_pool_values_gradients_vs_torch(case, variant, torch):
    """Values and gradient (float64) equal torch's; eager == jit (eager variant); the oracle
    agrees."""
    n, layout, batched, kw = case["n"], case["layout"], case["batched"], case["kw"]
    rng = np.random.default_rng(len(_id(case)))
    x = rng.standard_normal(case["shape"])
    op = getattr(jaxconv, f"avg_pool{n}d")
    f = lambda x: op(x, layout=layout, **kw)  # noqa: E731
    g = rng.standard_normal(jax.eval_shape(f, x).shape)
    y, grad = jax.jit(lambda x, g: (f(x), jax.vjp(f, x)[1](g)[0]))(x, g)  # one program
    want_y, _, want_grad = _torch(torch, f"avg_pool{n}d", x, g, layout, batched, **kw)
    np.testing.assert_allclose(y, want_y, rtol=1e-13, atol=1e-14)
    if variant is not jax.jit:
        np.testing.assert_allclose(f(x), y, rtol=1e-15, atol=1e-15)
    ref = getattr(reference, f"avg_pool{n}d")(x, layout=layout, **kw)
    np.testing.assert_allclose(ref, want_y, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-13, atol=1e-14)


# --- gradients: ties, dilation, second order -------------------------------------------------

TIE_CASES = [
    (1, (2, 3, 7), dict(kernel_size=3, stride=1, padding=1)),
    (1, (2, 6), dict(kernel_size=2, stride=1, dilation=2, ceil_mode=True)),
    (2, (1, 2, 5, 5), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    (2, (2, 3, 5, 6), dict(kernel_size=2, padding=1, ceil_mode=True)),  # tiles: XLA:CPU's rule
    (3, (1, 2, 4, 5, 4), dict(kernel_size=2, stride=1, padding=1)),
    (3, (2, 3, 5, 4), dict(kernel_size=(2, 3, 2), stride=(1, 2, 1), dilation=(2, 1, 1))),
]


def _at_indices(t: np.ndarray, idx: np.ndarray, layout: str, batched: bool, n: int) -> np.ndarray:
    """``t``'s entries at torch's flat per-plane indices ``idx`` (both in ``layout``): the
    tangent of the element torch selects."""
    t_cf, i_cf = to_cf(t, layout, batched), to_cf(np.asarray(idx), layout, batched)
    flat = lambda a: a.reshape(*a.shape[: a.ndim - n], -1)  # noqa: E731
    picked = np.take_along_axis(flat(t_cf), flat(i_cf), axis=-1).reshape(i_cf.shape)
    return from_cf(picked, layout, batched)


@pytest.mark.parametrize(("n", "shape", "kw"), TIE_CASES)
def test_max_pool_ties_route_to_torchs_index(n, shape, kw, torch):
    """All-equal windows and repeated maxima: the gradient lands where torch's does (its first
    maximum in scan order), in reverse mode; forward mode gives the tangent at torch's index."""
    rng = np.random.default_rng(n)
    layout, batched = LAYOUTS[n][0], len(shape) == n + 2
    op = getattr(jaxconv, f"max_pool{n}d")
    values = lambda x: op(x, **kw)  # noqa: E731

    @jax.jit
    def run(x, g, t):
        """Indices, the gradient for cotangent g and the tangent along t: one program."""
        _, idx = op(x, return_indices=True, **kw)
        return idx, jax.vjp(values, x)[1](g)[0], jax.jvp(values, (x,), (t,))[1]

    for x in (np.full(shape, 1.5), rng.integers(0, 2, size=shape).astype(np.float64)):
        g = rng.standard_normal(jax.eval_shape(values, x).shape)
        _, want_idx, want_grad = _torch(torch, f"max_pool{n}d", x, g, layout, batched,
                                        return_indices=True, **kw)  # fmt: skip
        t = rng.standard_normal(x.shape)
        idx, grad, tangent = run(x, g, t)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(grad, want_grad)
        np.testing.assert_array_equal(tangent, _at_indices(t, want_idx, layout, batched, n))


DILATED = [
    (1, (2, 2, 9), dict(kernel_size=3, stride=2, padding=1, dilation=2)),
    (1, (3, 8), dict(kernel_size=2, stride=1, dilation=3, ceil_mode=True)),
    (3, (1, 1, 4, 5, 5), dict(kernel_size=2, stride=(1, 2, 2), padding=1, dilation=2)),
    (3, (1, 4, 4, 5), dict(kernel_size=(2, 1, 3), stride=2, dilation=(1, 1, 2), ceil_mode=True)),
]


@pytest.mark.parametrize(("n", "shape", "kw"), DILATED[::3])
def test_dilated_max_pool_check_grads_second_order(n, shape, kw):
    """Dilated max pooling in 1-D and 3-D: reverse and forward mode, second order, by finite
    differences (tie-free input, where the derivative is defined)."""
    rng = np.random.default_rng(n)
    size = int(np.prod(shape))
    x = (rng.permutation(size) - size / 2).reshape(shape) / size
    op = getattr(jaxconv, f"max_pool{n}d")
    check_grads(jax.jit(lambda x: op(x, **kw)), (x,), order=2, modes=("fwd", "rev"))
    values = jax.jit(lambda x: op(x, return_indices=True, **kw)[0])
    check_grads(values, (x,), order=1, modes=("fwd", "rev"))


@pytest.mark.parametrize("n", [1, 3])
def test_avg_pool_check_grads(n):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((2, 2, 6) if n == 1 else (1, 2, 4, 5, 4))
    op = getattr(jaxconv, f"avg_pool{n}d")
    f = jax.jit(lambda x: op(x, 3, 2, 1, True, False))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))


# --- NaN and inf -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "shape", "kw"), TIE_CASES + DILATED)
def test_max_pool_nan_inf_as_torch(n, shape, kw, torch):
    """NaN, +inf and -inf: values (NaN where torch's is), indices (a window's last NaN) and
    gradients equal torch's; also all -inf windows reaching padding."""
    rng = np.random.default_rng(n + 7)
    x = rng.standard_normal(shape)
    special = rng.choice([np.nan, np.inf, -np.inf], size=shape)
    x = np.where(rng.random(shape) < 0.25, special, x)
    layout = LAYOUTS[n][0]
    batched = len(shape) == n + 2
    op = getattr(jaxconv, f"max_pool{n}d")
    values = lambda x: op(x, **kw)  # noqa: E731

    @jax.jit
    def run(x, g):
        """Values alone, values and indices, and the gradient for cotangent g: one program
        (values alone take their own path: no selection, no index)."""
        return values(x), *op(x, return_indices=True, **kw), jax.vjp(values, x)[1](g)[0]

    for xs in (x, np.full(shape, -np.inf)):
        g = rng.standard_normal(jax.eval_shape(values, xs).shape)
        want_y, want_idx, want_grad = _torch(torch, f"max_pool{n}d", xs, g, layout, batched,
                                             return_indices=True, **kw)  # fmt: skip
        y_alone, y, idx, grad = run(xs, g)
        np.testing.assert_array_equal(y_alone, want_y)
        np.testing.assert_array_equal(y, want_y)
        np.testing.assert_array_equal(idx, want_idx)
        np.testing.assert_array_equal(grad, want_grad)
        ref_y, ref_idx = getattr(reference, f"max_pool{n}d")(xs, return_indices=True, **kw)
        np.testing.assert_array_equal(ref_y, want_y)
        np.testing.assert_array_equal(ref_idx, want_idx)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_avg_pool_nan_inf_as_torch(n, torch):
    rng = np.random.default_rng(n)
    shape = (2, 2) + (5,) * n
    x = np.where(rng.random(shape) < 0.15, rng.choice([np.nan, np.inf, -np.inf], size=shape),
                 rng.standard_normal(shape))  # fmt: skip
    kw = dict(kernel_size=2, stride=1, padding=1, ceil_mode=True)
    want, _, _ = _torch(torch, f"avg_pool{n}d", x, None, LAYOUTS[n][0], True, **kw)
    np.testing.assert_allclose(getattr(jaxconv, f"avg_pool{n}d")(x, **kw), want, rtol=1e-13)


# --- ceil mode edge cases, argument forms, dtypes --------------------------------------------

#: Geometries from torch's own pooling tests and their ceil-mode rule: the last window must
#: start inside the input or the left padding.
CEIL_EDGES = [
    (1, (1, 1, 3), dict(kernel_size=2, stride=2, ceil_mode=True)),
    (1, (1, 1, 5), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (1, (1, 1, 4), dict(kernel_size=2, stride=3, padding=1, ceil_mode=True)),
    (1, (1, 1, 2), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True)),
    (2, (1, 1, 6, 6), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
    (2, (1, 1, 4, 4), dict(kernel_size=3, stride=3, padding=1, ceil_mode=True)),
    (3, (1, 1, 3, 4, 5), dict(kernel_size=2, stride=2, ceil_mode=True)),
    (3, (1, 1, 4, 4, 4), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
]


@pytest.mark.parametrize(("n", "shape", "kw"), CEIL_EDGES)
def test_ceil_mode_edges_as_torch(n, shape, kw, torch):
    x = np.random.default_rng(n).standard_normal(shape)
    for kind in ("max", "avg"):
        for include in (True, False) if kind == "avg" else (None,):
            extra = {} if include is None else {"count_include_pad": include}
            want, _, _ = _torch(torch, f"{kind}_pool{n}d", x, None, LAYOUTS[n][0], True,
                                **kw, **extra)  # fmt: skip
            got = getattr(jaxconv, f"{kind}_pool{n}d")(x, **kw, **extra)
            assert got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_positional_order_is_torchs(n, torch):
    """``op(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)`` and
    ``avg(input, kernel_size, stride, padding, ceil_mode, count_include_pad[, divisor])`` as
    torch; ``layout`` is keyword-only."""
    x = np.random.default_rng(n).standard_normal((2, 3) + (6,) * n)
    F = torch.nn.functional
    y, idx = getattr(jaxconv, f"max_pool{n}d")(x, 3, 2, 1, 1, True, True)
    want_y, want_idx = getattr(F, f"max_pool{n}d")(torch.tensor(x), 3, 2, 1, 1, True, True)
    np.testing.assert_array_equal(y, want_y.numpy())
    np.testing.assert_array_equal(idx, want_idx.numpy())
    args = (3, 2, 1, True, False) + ((2,) if n > 1 else ())
    want = getattr(F, f"avg_pool{n}d")(torch.tensor(x), *args).numpy()
    np.testing.assert_allclose(getattr(jaxconv, f"avg_pool{n}d")(x, *args), want, rtol=1e-13)
    with pytest.raises(TypeError):
        getattr(jaxconv, f"max_pool{n}d")(x, 3, 2, 1, 1, True, False, LAYOUTS[n][0])
    with pytest.raises(TypeError):
        getattr(jaxconv, f"avg_pool{n}d")(x, 3, 2, 1, True, False, *([None] * (n > 1)),
                                          LAYOUTS[n][0])  # fmt: skip


@pytest.mark.parametrize("n", [1, 2, 3])
def test_argument_forms_as_torch(n, torch):
    """int, 1-tuple, n-tuple, list; an empty stride means the kernel."""
    x = np.random.default_rng(n).standard_normal((1, 2) + (7,) * n)
    F = torch.nn.functional
    forms = [2, (2,), (2,) * n, [2] * n]
    strides = [*forms, (), [], None]
    pads = [1, (1,), (1,) * n, [1] * n]
    for i, (k, s) in enumerate(itertools.product(forms, strides)):
        p = pads[i % len(pads)]
        want = getattr(F, f"max_pool{n}d")(torch.tensor(x), k, s, p).numpy()
        np.testing.assert_array_equal(getattr(jaxconv, f"max_pool{n}d")(x, k, s, p), want)
    want = getattr(F, f"avg_pool{n}d")(torch.tensor(x), (3,), (), [1]).numpy()
    np.testing.assert_allclose(getattr(jaxconv, f"avg_pool{n}d")(x, (3,), (), [1]), want)


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_low_precision_as_torch(n, dtype, torch):
    """Each dtype: max exact (on the rounded input), avg within the dtype's rounding of
    torch's float32 result on the same rounded input (torch has no half avg_pool3d)."""
    rng = np.random.default_rng(n)
    x = jnp.asarray(rng.standard_normal((2, 3) + (6,) * n), dtype)
    x32 = torch.tensor(np.asarray(x.astype(jnp.float32)))
    F = torch.nn.functional
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    y = getattr(jaxconv, f"max_pool{n}d")(x, **kw)
    assert y.dtype == x.dtype
    np.testing.assert_array_equal(y.astype(jnp.float32), getattr(F, f"max_pool{n}d")(x32, **kw))
    a = getattr(jaxconv, f"avg_pool{n}d")(x, **kw)
    assert a.dtype == x.dtype
    want = getattr(F, f"avg_pool{n}d")(x32, **kw).numpy()
    tol = {"float16": 1e-3, "bfloat16": 8e-3, "float32": 1e-6}[dtype]
    np.testing.assert_allclose(a.astype(jnp.float32), want, rtol=tol, atol=tol)


# --- what torch refuses ----------------------------------------------------------------------


def _refusals(n: int) -> list[tuple[str, dict, str]]:
    """(argument named, call kwargs, what is wrong) for an n-D pool of a (1, 2, 6, ...) input."""
    bad = [
        ("kernel_size", dict(kernel_size=(2,) * (n + 1)), "too many entries"),
        ("kernel_size", dict(kernel_size=0), "zero"),
        ("kernel_size", dict(kernel_size=()), "empty"),
        ("stride", dict(kernel_size=2, stride=0), "zero"),
        ("stride", dict(kernel_size=2, stride=(1,) * (n + 1)), "too many entries"),
        ("padding", dict(kernel_size=2, padding=2), "more than half the kernel"),
        ("padding", dict(kernel_size=2, padding=-1), "negative"),
        ("padding", dict(kernel_size=2, padding=()), "empty"),
        ("kernel_size", dict(kernel_size=9), "output would be empty"),
    ]
    if n == 3:  # (a 1-tuple is every axis)
        bad.append(("kernel_size", dict(kernel_size=(2, 2)), "too few entries"))
    return bad


@pytest.mark.parametrize("n", [1, 2, 3])
def test_refused_as_torch(n, torch):
    """What torch refuses, jaxconv refuses before tracing, naming the argument."""
    x = np.zeros((1, 2) + (6,) * n)
    F = torch.nn.functional
    for kind in ("max", "avg"):
        op, top = getattr(jaxconv, f"{kind}_pool{n}d"), getattr(F, f"{kind}_pool{n}d")
        cases = _refusals(n)
        if kind == "max":
            cases += [("dilation", dict(kernel_size=2, dilation=0), "zero"),
                      ("dilation", dict(kernel_size=2, dilation=()), "empty")]  # fmt: skip
        elif n > 1:
            cases += [("divisor_override", dict(kernel_size=2, divisor_override=0), "zero")]
        for name, kw, _why in cases:
            with pytest.raises((ValueError, TypeError), match=name):
                op(x, **kw)
            with pytest.raises((RuntimeError, ValueError, TypeError)):
                top(torch.tensor(x), **kw)
        # the input: rank, empty channel or spatial axes, integer dtype
        for bad in (np.zeros((1, 1, 2) + (6,) * n), np.zeros((2,) + (6,) * (n - 1)),
                    np.zeros((1, 0) + (6,) * n), np.zeros((1, 2, 0) + (6,) * (n - 1))):  # fmt: skip
            with pytest.raises(ValueError, match="input"):
                op(bad, 2)
            with pytest.raises((RuntimeError, IndexError)):
                top(torch.tensor(bad), 2)
        with pytest.raises(TypeError, match="input"):
            op(np.zeros((1, 2) + (6,) * n, np.complex64), 2)
        with pytest.raises(ValueError, match="layout"):
            op(x, 2, layout=LAYOUTS[2 if n != 2 else 1][0])  # another rank's layout
    assert "divisor_override" not in jaxconv.avg_pool1d.__code__.co_varnames  # as torch


def test_empty_batch_as_torch(torch):
    for n in (1, 3):
        x = np.zeros((0, 2) + (4,) * n)
        want = getattr(torch.nn.functional, f"max_pool{n}d")(torch.tensor(x), 2).shape
        assert getattr(jaxconv, f"max_pool{n}d")(x, 2).shape == tuple(want)
        assert getattr(jaxconv, f"avg_pool{n}d")(x, 2).shape == tuple(want)
