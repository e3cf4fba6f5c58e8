"""max_unpool1d/2d/3d against the float64 reference and torch.nn.functional (CPU).

The indices come from torch's own ``max_pool*d(..., return_indices=True)`` on tie-free inputs
(the round trip max_pool -> max_unpool), in both layouts, batched and unbatched, with and
without ``output_size``; gradients against torch autograd in float64 (one program with the
values); every case jitted, a quarter also eager and equal to jit (``JAXCONV_TEST_FULL=1``:
all, and 15 cases instead of 12); duplicate
and out-of-range indices; the errors torch raises.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL, with_variants
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference, unpool

LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}


def _cases(count: int, seed: int) -> list[dict]:
    """Seeded pooling geometries (1-D, 2-D, 3-D in turn) whose pooled output is non-empty."""
    rng = np.random.default_rng(seed)
    cases: list[dict] = []
    while len(cases) < count:
        n = 1 + len(cases) % 3
        k = tuple(int(v) for v in rng.integers(1, 4, size=n))
        s = tuple(int(v) for v in rng.integers(1, 4, size=n))
        p = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
        size = tuple(int(v) for v in rng.integers(1, 7 if n < 3 else 5, size=n))
        if any(L + 2 * pi < ki for L, pi, ki in zip(size, p, k, strict=True)):
            continue
        kw = {"kernel_size": k, "stride": None if rng.random() < 0.3 else s, "padding": p}
        batched = rng.random() < 0.7
        layout = LAYOUTS[n][len(cases) // 3 % 2]
        # output_size: None (the default), the pooled input's size, or with the N, C entries
        how = ["none", "spatial", "full"][int(rng.integers(0, 3))]
        cases.append(
            {"n": n, "size": size, "kw": kw, "batched": batched, "layout": layout, "how": how}
        )
    return cases


#: 12 cases (``JAXCONV_TEST_FULL=1``: 15, of which these are the first); test_sweep_covers_the_cases
#: holds for both.
CASES = _cases(15 if FULL else 12, seed=14)


def _id(case: dict) -> str:
    kw = ",".join(f"{k}={v}" for k, v in case["kw"].items())
    return (
        f"{case['layout']}{list(case['size'])}{'' if case['batched'] else 'u'}:{kw}:{case['how']}"
    )


def _pool_and_unpool_args(torch, case: dict, rng: np.random.Generator):
    """Pool a tie-free input with torch: its values and indices (in the case's layout), the
    output_size argument and the torch unpool output size."""
    n, kw = case["n"], case["kw"]
    c = int(rng.integers(1, 4))
    shape = (2, c, *case["size"])
    size = int(np.prod(shape))
    x = ((rng.permutation(size) - size // 2) / 4.0).reshape(shape)
    pool = getattr(torch.nn.functional, f"max_pool{n}d")
    y, idx = pool(torch.tensor(x), return_indices=True, **kw)
    if not case["batched"]:
        y, idx = y[0], idx[0]
    out_size = {"none": None, "spatial": case["size"], "full": shape}[case["how"]]
    if case["how"] == "none":  # torch's default must fit the indices
        k, s = kw["kernel_size"], kw["stride"] or kw["kernel_size"]
        default = [(o - 1) * si - 2 * pi + ki for o, si, pi, ki in
                   zip(y.shape[-n:], s, kw["padding"], k, strict=True)]  # fmt: skip
        if int(idx.max()) >= int(np.prod(default)) or min(default) < 1:
            out_size = case["size"]
    return y.numpy(), idx.numpy(), out_size


def _to_layout(a: np.ndarray, layout: str, n: int) -> np.ndarray:
    return a if layout[1] == "C" else np.moveaxis(a, -n - 1, -1)


def _from_layout(a: np.ndarray, layout: str, n: int) -> np.ndarray:
    return a if layout[1] == "C" else np.moveaxis(a, -1, -n - 1)


def _unique_per_plane(idx: np.ndarray, n: int) -> bool:
    planes = idx.reshape(-1, int(np.prod(idx.shape[-n:])))
    return all(len(set(p.tolist())) == p.size for p in planes)


@pytest.mark.parametrize(("case", "variant"), with_variants(CASES, _id))
def test_round_trip_matches_torch(torch, case, variant):
    rng = np.random.default_rng(len(_id(case)))
    n, kw, layout = case["n"], case["kw"], case["layout"]
    F = torch.nn.functional
    y, idx, out_size = _pool_and_unpool_args(torch, case, rng)
    name = f"max_unpool{n}d"
    with jax.enable_x64(True):
        ty = torch.tensor(y, requires_grad=True)
        tout = getattr(F, name)(ty, torch.tensor(idx), output_size=out_size, **kw)
        yl, il = _to_layout(y, layout, n), _to_layout(idx, layout, n)

        def f(v):
            return getattr(jaxconv, name)(v, il, output_size=out_size, layout=layout, **kw)

        def run(v, g):
            """Values and the gradient for cotangent g: one program when jitted."""
            out, pullback = jax.vjp(f, v)
            return out, pullback(g)[0]

        g = rng.standard_normal(tout.shape)
        out, grad = variant(run)(yl, _to_layout(g, layout, n))
        expected = _to_layout(tout.detach().numpy(), layout, n)
        assert out.dtype == jnp.float64 and out.shape == expected.shape
        np.testing.assert_array_equal(out, expected)  # copies: exact
        ref = getattr(reference, name)(yl, il, output_size=out_size, layout=layout, **kw)
        np.testing.assert_array_equal(out, ref)
        if variant is not jax.jit:
            np.testing.assert_array_equal(jax.jit(f)(yl), out)

        tout.backward(torch.tensor(g))
        if _unique_per_plane(idx, n):  # see test_duplicate_indices for the other case
            np.testing.assert_array_equal(_from_layout(np.asarray(grad), layout, n), ty.grad)


def test_sweep_covers_the_cases():
    assert {c["n"] for c in CASES} == {1, 2, 3}
    assert {c["layout"] for c in CASES} == {v for pair in LAYOUTS.values() for v in pair}
    assert {c["how"] for c in CASES} == {"none", "spatial", "full"}
    assert any(not c["batched"] for c in CASES)
    assert any(c["kw"]["stride"] is None for c in CASES)
    assert any(max(c["kw"]["padding"]) > 0 for c in CASES)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_duplicate_indices_last_wins_as_torch(torch):
    """torch's CPU kernel writes in order: of equal indices the last input wins. jaxconv keeps
    that value; its derivatives are that function's: forward mode as torch's forward mode,
    reverse mode its adjoint (the losers get 0) where torch's backward gathers the output
    gradient at every index (each duplicate gets it)."""
    v = np.array([[[[1.0, 2.0], [3.0, 4.0]]]], np.float32)
    idx = np.array([[[[0, 0], [3, 3]]]])
    tv = torch.tensor(v, requires_grad=True)
    tout = torch.nn.functional.max_unpool2d(tv, torch.tensor(idx), 2)
    out = jaxconv.max_unpool2d(v, idx, 2)
    np.testing.assert_array_equal(out, tout.detach().numpy())
    np.testing.assert_array_equal(jax.jit(lambda v: jaxconv.max_unpool2d(v, idx, 2))(v), out)
    np.testing.assert_array_equal(out, reference.max_unpool2d(v, idx, 2))
    assert out[0, 0, 0, 0] == 2 and out[0, 0, 0, 3] == 4
    g = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    tout.backward(torch.tensor(g))
    grad = jax.grad(lambda v: jnp.vdot(jaxconv.max_unpool2d(v, idx, 2), g))(v)
    np.testing.assert_array_equal(tv.grad, [[[[0.0, 0.0], [3.0, 3.0]]]])
    np.testing.assert_array_equal(grad, [[[[0.0, 0.0], [0.0, 3.0]]]])
    tangent = np.array([[[[10.0, 20.0], [30.0, 40.0]]]], np.float32)
    with torch.autograd.forward_ad.dual_level():
        dual = torch.autograd.forward_ad.make_dual(torch.tensor(v), torch.tensor(tangent))
        t_tan = torch.autograd.forward_ad.unpack_dual(
            torch.nn.functional.max_unpool2d(dual, torch.tensor(idx), 2)
        ).tangent
    _, tan = jax.jvp(lambda v: jaxconv.max_unpool2d(v, idx, 2), (v,), (tangent,))
    np.testing.assert_array_equal(tan, t_tan.numpy())


def test_out_of_range_indices():
    """Concrete indices are checked (torch raises at run time); traced ones are dropped."""
    v = np.ones((1, 1, 2, 2), np.float32)
    bad = np.array([[[[0, 1], [2, 16]]]])
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 16\)"):
        jaxconv.max_unpool2d(v, bad, 2)
    with pytest.raises(ValueError, match="found -1"):
        jaxconv.max_unpool2d(v, np.array([[[[0, -1], [2, 3]]]]), 2)
    out = jax.jit(lambda v, i: jaxconv.max_unpool2d(v, i, 2))(v, bad)
    assert float(out.sum()) == 3  # the out-of-range value went nowhere
    out = jax.jit(lambda v, i: jaxconv.max_unpool2d(v, i, 2))(v, np.array([[[[-1, 1], [2, 3]]]]))
    assert float(out.sum()) == 3 and out[0, 0, 3, 3] == 0  # -1 does not wrap around


def test_check_grads_and_low_precision(torch):
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.permutation(2 * 3 * 6 * 4).reshape(2, 3, 6, 4).astype(np.float64))
    y, idx = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    with jax.enable_x64(True):
        check_grads(  # jitted: un-jitted, every primitive of every derivative compiles alone
            jax.jit(lambda v: jaxconv.max_unpool2d(v, idx.numpy(), 2)), (jnp.asarray(y.numpy()),),
            2, modes=("fwd", "rev"),
        )  # fmt: skip
    for dtype in ("float16", "bfloat16"):
        tout = torch.nn.functional.max_unpool2d(y.to(getattr(torch, dtype)), idx, 2)
        out = jaxconv.max_unpool2d(jnp.asarray(y.numpy(), dtype), idx.numpy(), 2)
        assert out.dtype == jnp.dtype(dtype)
        np.testing.assert_array_equal(np.asarray(out, np.float32), tout.float().numpy())


def test_nan_and_inf_are_copied(torch):
    v = np.array([[[np.nan, np.inf, -np.inf]]], np.float32)
    idx = np.array([[[1, 2, 5]]])
    tout = torch.nn.functional.max_unpool1d(torch.tensor(v), torch.tensor(idx), 2)
    np.testing.assert_array_equal(jaxconv.max_unpool1d(v, idx, 2), tout.numpy())


def test_empty_batch_and_unbatched_1d(torch):
    out = jaxconv.max_unpool3d(np.zeros((0, 1, 2, 2, 2)), np.zeros((0, 1, 2, 2, 2), int), 2)
    assert out.shape == (0, 1, 4, 4, 4)
    v, idx = np.arange(12.0).reshape(3, 4), np.array([[0, 3, 4, 7]] * 3)
    tout = torch.nn.functional.max_unpool1d(torch.tensor(v), torch.tensor(idx), 2)
    np.testing.assert_array_equal(jaxconv.max_unpool1d(v, idx, 2), tout.numpy())


V4, I4 = np.ones((1, 1, 2, 2), np.float32), np.array([[[[0, 1], [2, 3]]]])
ERRORS = {
    "input-rank-2": ((V4[0, 0], I4[0, 0], 2), {}, ValueError, "input must have rank 3"),
    "input-rank-5": ((V4[None], I4[None], 2), {}, ValueError, "input must have rank 3"),
    "indices-shape": ((V4, I4[..., :1], 2), {}, ValueError, "indices must have the shape"),
    "indices-float": ((V4, I4.astype(np.float32), 2), {}, TypeError, "integer dtype"),
    "indices-range": ((V4, I4 + 13, 2), {}, ValueError, "indices must lie in"),
    "output-size-too-big": ((V4, I4, 2), {"output_size": (6, 5)}, ValueError, "strictly between"),
    "output-size-length-3": ((V4, I4, 2), {"output_size": (1, 5, 5)}, ValueError, "2 or 4"),
    "output-size-int": ((V4, I4, 2), {"output_size": 4}, TypeError, "sequence"),
    "empty-channels": (
        (np.ones((1, 0, 2, 2)), np.zeros((1, 0, 2, 2), int), 2), {}, ValueError, "non-empty",
    ),
    "int-input": ((I4, I4, 2), {}, TypeError, "floating dtype"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ERRORS))
def test_refuses_what_torch_refuses(torch, name):
    args, kw, error, match = ERRORS[name]
    targs = tuple(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args)
    with pytest.raises(Exception):  # noqa: B017 - torch raises RuntimeError, ValueError, ...
        torch.nn.functional.max_unpool2d(*targs, **kw)
    with pytest.raises(error, match=match):
        jaxconv.max_unpool2d(*args, **kw)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kernel_size": 0}, "kernel_size must be positive"),
        ({"kernel_size": 2, "stride": 0}, "stride must be positive"),
        ({"kernel_size": 2, "padding": -1}, "padding must be non-negative"),
        ({"kernel_size": 2, "padding": 3}, "output size would be negative"),
        ({"kernel_size": 2, "layout": "NCL"}, "layout must be one of"),
    ],
)
def test_refuses_meaningless_geometry(kw, match):
    """torch runs these (and returns arbitrary planes); jaxconv refuses them."""
    with pytest.raises(ValueError, match=match):
        jaxconv.max_unpool2d(V4, I4, **kw)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_gradient_matches_torch_at_scale(torch, n):
    """Unique indices from 2/2 max pooling at a realistic size: jaxconv's gradient (one
    gather of the output gradient) equals torch's backward exactly, eager and jitted."""
    rng = np.random.default_rng(100 + n)
    shape = {1: (4, 8, 512), 2: (4, 8, 32, 32), 3: (2, 8, 16, 16, 16)}[n]
    F = torch.nn.functional
    x = torch.tensor(rng.standard_normal(shape).astype(np.float32))
    y, idx = getattr(F, f"max_pool{n}d")(x, 2, return_indices=True)
    assert _unique_per_plane(idx.numpy(), n)
    ty = y.detach().clone().requires_grad_(True)
    tout = getattr(F, f"max_unpool{n}d")(ty, idx, 2)
    g = rng.standard_normal(tout.shape).astype(np.float32)
    tout.backward(torch.tensor(g))
    op = getattr(jaxconv, f"max_unpool{n}d")

    def loss(v, i):
        return jnp.vdot(op(v, i, 2), g)

    for fn in (jax.grad(loss), jax.jit(jax.grad(loss))):
        np.testing.assert_array_equal(fn(y.detach().numpy(), idx.numpy()), ty.grad.numpy())


def _last_wins_oracle(v: np.ndarray, idx: np.ndarray, plane: int) -> tuple[np.ndarray, ...]:
    """Per row of (R, P): the unpooled (R, plane) and, for each input, whether it is the last
    in its row with its (in-range) index."""
    out, won = np.zeros((v.shape[0], plane), v.dtype), np.zeros(v.shape, bool)
    for r in range(v.shape[0]):
        last = {}
        for i, k in enumerate(idx[r]):
            if 0 <= k < plane:
                last[int(k)] = i
        for k, i in last.items():
            out[r, k], won[r, i] = v[r, i], True
    return out, won


@pytest.mark.parametrize("flat", [True, False])
def test_duplicates_both_index_forms(flat):
    """The planes one at a time, duplicate-heavy and with out-of-range indices, in both
    index forms (one flat vector; (row, position) pairs, used when positions overflow
    int32): values, forward mode (the tangent unpooled alike) and reverse mode (the output
    gradient at the winners, 0 for the losers) against a loop oracle."""
    rng = np.random.default_rng(7)
    for r, p, plane in [(3, 40, 12), (5, 17, 30), (1, 64, 8)]:
        v = rng.standard_normal((r, p))
        idx = rng.integers(-2, plane + 2, size=(r, p))
        t = rng.standard_normal((r, p))
        g = rng.standard_normal((r, plane))
        with jax.enable_x64(True):

            @jax.jit
            def run(v, i, t, g):
                """Values, the tangent along t and the gradient for g: one program."""
                f = lambda v: unpool._last_wins(v, i, plane, flat)  # noqa: B023, E731
                out, tan = jax.jvp(f, (v,), (t,))
                return out, tan, jax.vjp(f, v)[1](g)[0]

            got, tan, grad = run(v, idx, t, g)
            out, won = _last_wins_oracle(v, idx, plane)
            np.testing.assert_array_equal(got, out)
            np.testing.assert_array_equal(tan, _last_wins_oracle(t, idx, plane)[0])
            gathered = np.take_along_axis(g, np.clip(idx, 0, plane - 1), axis=1)
            np.testing.assert_array_equal(grad, np.where(won, gathered, 0.0))


def test_second_order_jvp_and_vmap_with_duplicates():
    """Duplicates included: check_grads to second order in both modes, jax.jvp of the
    linear map is the map of the tangent, and vmap over a leading axis equals the batch."""
    rng = np.random.default_rng(3)
    v = rng.standard_normal((2, 3, 4, 4))
    idx = rng.integers(0, 64, size=(2, 3, 4, 4))  # output planes 8 x 8, many duplicates
    with jax.enable_x64(True):

        def f(v):
            return jaxconv.max_unpool2d(v, idx, 2) ** 2

        # jitted: un-jitted, every primitive of every derivative the check takes compiles alone
        check_grads(jax.jit(f), (v,), 2, modes=("fwd", "rev"))
        t = rng.standard_normal(v.shape)
        out, tan = jax.jit(
            lambda v, t: jax.jvp(lambda v: jaxconv.max_unpool2d(v, idx, 2), (v,), (t,))
        )(v, t)
        np.testing.assert_array_equal(out, reference.max_unpool2d(v, idx, 2))
        np.testing.assert_array_equal(tan, reference.max_unpool2d(t, idx, 2))
        mapped = jax.jit(jax.vmap(lambda a, i: jaxconv.max_unpool2d(a, i, 2, layout="NHWC")))(
            np.moveaxis(v, 1, -1), np.moveaxis(idx, 1, -1)
        )
        np.testing.assert_array_equal(np.moveaxis(mapped, -1, 1), out)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_empty_output_is_torchs(torch, n):
    """Where the default size (L - 1) * stride - 2 * padding + kernel_size is 0, torch gives
    an empty output (no index can land), and so does jaxconv, with a zero gradient."""
    x, idx = np.ones((2,) + (1,) * n, np.float32), np.zeros((2,) + (1,) * n, np.int64)
    want = getattr(torch.nn.functional, f"max_unpool{n}d")(
        torch.from_numpy(x), torch.from_numpy(idx), 2, padding=1
    )
    op = getattr(jaxconv, f"max_unpool{n}d")
    assert op(x, idx, 2, padding=1).shape == tuple(want.shape) == (2,) + (0,) * n
    assert jax.jit(lambda x: op(x, idx, 2, padding=1))(x).shape == tuple(want.shape)
    np.testing.assert_array_equal(jax.grad(lambda x: op(x, idx, 2, padding=1).sum())(x), 0 * x)
