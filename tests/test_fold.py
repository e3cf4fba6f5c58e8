"""unfold / fold (im2col / col2im) and pixel_shuffle / pixel_unshuffle against the float64
reference and torch.nn.functional (CPU): values, gradients (torch autograd as the oracle, in
float64), every sweep case jitted and a quarter also eager and equal to jit
(``JAXCONV_TEST_FULL=1``: all), low precision, NaN/inf, and the errors torch raises.

The sweep's geometries include what torch's own samples leave out: fold with overlapping
windows (stride < kernel), together with dilation and padding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import with_variants
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference

# --- unfold / fold: a seeded sweep --------------------------------------------------------------


def _fold_cases(count: int, seed: int) -> list[dict]:
    """Geometries torch accepts, half of them with overlapping windows."""
    rng = np.random.default_rng(seed)
    cases: list[dict] = []
    while len(cases) < count:
        k = tuple(int(v) for v in rng.integers(1, 4, size=2))
        d = tuple(int(v) for v in rng.integers(1, 3, size=2))
        p = tuple(int(v) for v in rng.integers(0, 3, size=2))
        s = tuple(int(v) for v in rng.integers(1, 4, size=2))
        if len(cases) % 2 == 0:  # overlapping windows: stride below the dilated extent
            s = tuple(max(1, (di * (ki - 1) + 1) - 1) for ki, di in zip(k, d, strict=True))
        form = len(cases) % 3  # ints, tuples, lists
        if form == 0:
            p = (p[0], p[0])
        hw = tuple(int(v) for v in rng.integers(1, 8, size=2))
        if any(h + 2 * pi < di * (ki - 1) + 1 for h, pi, ki, di in zip(hw, p, k, d, strict=True)):
            continue
        kw = {
            "kernel_size": list(k) if form == 2 else k,
            "dilation": d,
            "padding": p[0] if form == 0 else list(p) if form == 2 else p,
            "stride": s,
        }
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), *hw)
        if len(cases) % 4 == 3:
            shape = shape[1:]  # unbatched
        cases.append({"shape": shape, "kw": kw, "seed": len(cases)})
    return cases


FOLD_CASES = _fold_cases(12, seed=14)


def _id(case: dict) -> str:
    kw = ",".join(f"{k}={v}" for k, v in case["kw"].items())
    return f"{list(case['shape'])}:{kw}".replace(" ", "")


def test_sweep_covers_overlap_dilation_padding():
    overlap = 0
    for case in FOLD_CASES:
        k = np.broadcast_to(case["kw"]["kernel_size"], 2)
        d = np.broadcast_to(case["kw"]["dilation"], 2)
        s = np.broadcast_to(case["kw"]["stride"], 2)
        overlap += bool(np.any(s < d * (k - 1) + 1))
    assert overlap >= 8
    assert sum(np.max(c["kw"]["dilation"]) > 1 for c in FOLD_CASES) >= 4
    assert sum(np.max(c["kw"]["padding"]) > 0 for c in FOLD_CASES) >= 4
    assert {len(c["shape"]) for c in FOLD_CASES} == {3, 4}


@pytest.mark.parametrize(("case", "variant"), with_variants(FOLD_CASES, _id))
def test_unfold_fold_match_reference_and_torch(torch, case, variant):
    F = torch.nn.functional
    rng = np.random.default_rng(case["seed"])
    kw, shape = case["kw"], case["shape"]
    x = rng.standard_normal(shape)
    size = shape[-2:]
    with jax.enable_x64(True):
        unfold = lambda x: jaxconv.unfold(x, **kw)  # noqa: E731
        fold = lambda c: jaxconv.fold(c, size, **kw)  # noqa: E731

        def run(x, g, c, gy):
            """unfold(x) and its gradient for cotangent g, fold(c) and its gradient for gy:
            one program when jitted."""
            (cols, pull_u), (y, pull_f) = jax.vjp(unfold, x), jax.vjp(fold, c)
            return cols, pull_u(g)[0], y, pull_f(gy)[0]

        ref = reference.unfold(x, **kw)
        g = rng.standard_normal(ref.shape)
        c = rng.standard_normal(ref.shape)
        gy = rng.standard_normal(shape)
        cols, grad, y, grad_c = outs = variant(run)(x, g, c, gy)
        if variant is not jax.jit:  # eager == jit
            for a, b in zip(outs, jax.jit(run)(x, g, c, gy), strict=True):
                np.testing.assert_array_equal(a, b)
        tx = torch.tensor(x, requires_grad=True)
        tcols = F.unfold(tx, **kw)
        assert cols.dtype == jnp.float64 and cols.shape == ref.shape == tuple(tcols.shape)
        np.testing.assert_array_equal(cols, ref)  # a copy: exact
        np.testing.assert_array_equal(cols, tcols.detach().numpy())

        # gradients against torch autograd, for a random cotangent
        tcols.backward(torch.tensor(g))
        np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-12, atol=1e-12)

        # fold of random columns (overlapping windows sum), its gradient
        tc = torch.tensor(c, requires_grad=True)
        ty = F.fold(tc, size, **kw)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(y, reference.fold(c, size, **kw), rtol=1e-12, atol=1e-12)
        ty.backward(torch.tensor(gy))
        np.testing.assert_allclose(grad_c, tc.grad.numpy(), rtol=1e-12, atol=1e-12)

        # fold is unfold's adjoint: <unfold(x), c> == <x, fold(c)>
        np.testing.assert_allclose(np.vdot(cols, c), np.vdot(x, y), rtol=1e-10)


@pytest.mark.parametrize("case", FOLD_CASES[:2], ids=_id)
def test_unfold_fold_check_grads(case):
    """Forward and reverse mode, to second order (both ops are linear: the second derivative
    is zero, but it must be traceable)."""
    rng = np.random.default_rng(case["seed"])
    kw = case["kw"]
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal(case["shape"]))
        check_grads(lambda x: jaxconv.unfold(x, **kw), (x,), order=2, modes=("fwd", "rev"))
        c = jnp.asarray(rng.standard_normal(reference.unfold(x, **kw).shape))
        size = case["shape"][-2:]
        check_grads(lambda c: jaxconv.fold(c, size, **kw), (c,), order=2, modes=("fwd", "rev"))


def test_per_side_padding_matches_reference():
    """Per-side padding (beyond torch's forms) against the oracle; fold stays the adjoint."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    kw = {"kernel_size": (3, 2), "padding": ((2, 0), (1, 2)), "stride": (1, 2)}
    cols = jaxconv.unfold(x, **kw)
    np.testing.assert_array_equal(cols, reference.unfold(x, **kw))
    c = rng.standard_normal(cols.shape).astype(np.float32)
    y = jaxconv.fold(c, (5, 6), **kw)
    np.testing.assert_allclose(y, reference.fold(c, (5, 6), **kw), rtol=1e-5, atol=1e-5)


def test_fold_of_unfold_counts_the_windows_covering_each_pixel(torch):
    x = np.ones((1, 1, 4, 5), np.float32)
    kw = {"kernel_size": 3, "padding": 1, "stride": 1}
    y = jaxconv.fold(jaxconv.unfold(x, **kw), (4, 5), **kw)
    t = torch.nn.functional
    expected = t.fold(t.unfold(torch.tensor(x), **kw), (4, 5), **kw).numpy()
    np.testing.assert_array_equal(y, expected)
    assert y[0, 0, 1, 1] == 9 and y[0, 0, 0, 0] == 4


def test_empty_batch(torch):
    cols = jaxconv.unfold(np.zeros((0, 2, 5, 5), np.float32), 2)
    assert cols.shape == (0, 8, 16)
    assert jaxconv.fold(cols, (5, 5), 2).shape == (0, 2, 5, 5)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision(torch, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    kw = {"kernel_size": 3, "dilation": (1, 2), "stride": 1}
    cols = jaxconv.unfold(jnp.asarray(x, dtype), **kw)
    tdt = getattr(torch, dtype)
    tcols = torch.nn.functional.unfold(torch.tensor(x).to(tdt), **kw)
    assert cols.dtype == jnp.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(cols, np.float32), tcols.float().numpy())
    y = jaxconv.fold(cols, (6, 5), **kw)
    ty = torch.nn.functional.fold(tcols, (6, 5), **kw)
    assert y.dtype == jnp.dtype(dtype)
    tol = 1e-2 if dtype == "float16" else 5e-2
    np.testing.assert_allclose(np.asarray(y, np.float32), ty.float().numpy(), rtol=tol, atol=tol)


def test_nan_and_inf_propagate_as_in_torch(torch):
    x = np.arange(2 * 5 * 5, dtype=np.float32).reshape(1, 2, 5, 5)
    x[0, 0, 2, 2], x[0, 1, 0, 1] = np.nan, np.inf
    kw = {"kernel_size": 2, "padding": 1, "stride": 1}
    F = torch.nn.functional
    cols = jaxconv.unfold(x, **kw)
    tcols = F.unfold(torch.tensor(x), **kw)
    np.testing.assert_array_equal(cols, tcols.numpy())  # NaN == NaN for assert_array_equal
    np.testing.assert_array_equal(jaxconv.fold(cols, (5, 5), **kw), F.fold(tcols, (5, 5), **kw))


# --- unfold / fold: what torch refuses ------------------------------------------------------------

X4 = np.zeros((2, 3, 5, 5), np.float32)
C3 = np.zeros((2, 12, 16), np.float32)

UNFOLD_ERRORS = {
    "rank-2": ((X4[0, 0], 2), {}, ValueError, "input must have rank 3 or 4"),
    "rank-5": ((X4[None], 2), {}, ValueError, "input must have rank 3 or 4"),
    "kernel-1-tuple": ((X4, (2,)), {}, TypeError, "kernel_size must be"),
    "kernel-3-tuple": ((X4, (2, 2, 2)), {}, TypeError, "kernel_size must be"),
    "kernel-float": ((X4, 2.0), {}, TypeError, "kernel_size must be"),
    "kernel-0": ((X4, 0), {}, ValueError, "kernel_size must be positive"),
    "stride-0": ((X4, 2), {"stride": 0}, ValueError, "stride must be positive"),
    "dilation-0": ((X4, 2), {"dilation": 0}, ValueError, "dilation must be positive"),
    "padding-negative": ((X4, 2), {"padding": -1}, ValueError, "padding must be non-negative"),
    "kernel-too-large": ((X4, 6), {}, ValueError, "larger than the padded input"),
    "empty-channels": ((np.zeros((2, 0, 5, 5), np.float32), 2), {}, ValueError, "non-empty"),
    "empty-height": ((np.zeros((2, 1, 0, 5), np.float32), 1), {}, ValueError, "non-empty"),
    "int-dtype": ((np.zeros((1, 1, 3, 3), np.int64), 2), {}, TypeError, "floating dtype"),
}

FOLD_ERRORS = {
    "rank-1": ((C3[0, 0], (5, 5), 2), {}, ValueError, "input must have rank 2 or 3"),
    "rank-4": ((C3[None], (5, 5), 2), {}, ValueError, "input must have rank 2 or 3"),
    "blocks-mismatch": ((C3, (6, 5), 2), {}, ValueError, "number of sliding blocks"),
    "rows-not-divisible": ((C3[:, :10], (5, 5), 2), {}, ValueError, "divisible by the product"),
    "output-1-tuple": ((C3, (5,), 2), {}, TypeError, "output_size must be"),
    "kernel-1-tuple": ((C3, (5, 5), (2,)), {}, TypeError, "kernel_size must be"),
    "output-too-small": ((C3[:, :, :1], (1, 1), 2), {}, ValueError, "larger than the padded"),
    "empty-blocks": ((C3[:, :, :0], (0, 5), 2), {}, ValueError, "non-empty"),
    "empty-rows": ((C3[:, :0], (5, 5), 2), {}, ValueError, "non-empty"),
}


def _torch_args(args: tuple) -> tuple:
    import torch

    return tuple(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args)


@pytest.mark.parametrize("name", list(UNFOLD_ERRORS))
def test_unfold_refuses_what_torch_refuses(torch, name):
    args, kw, error, match = UNFOLD_ERRORS[name]
    with pytest.raises(Exception):  # noqa: B017 - torch's types vary (RuntimeError, TypeError, ...)
        torch.nn.functional.unfold(*_torch_args(args), **kw)
    with pytest.raises(error, match=match):
        jaxconv.unfold(*args, **kw)


@pytest.mark.parametrize("name", list(FOLD_ERRORS))
def test_fold_refuses_what_torch_refuses(torch, name):
    args, kw, error, match = FOLD_ERRORS[name]
    with pytest.raises(Exception):  # noqa: B017
        torch.nn.functional.fold(*_torch_args(args), **kw)
    with pytest.raises(error, match=match):
        jaxconv.fold(*args, **kw)


# --- pixel_shuffle / pixel_unshuffle ------------------------------------------------------------


SHUFFLE_CASES = [
    # (leading dims, channels, h, w, r, layout)
    ((), 4, 2, 3, 2, "NCHW"),
    ((2,), 18, 3, 2, 3, "NCHW"),
    ((2, 3), 8, 1, 4, 2, "NCHW"),
    ((1,), 5, 2, 2, 1, "NCHW"),
    ((2,), 12, 3, 2, 2, "NHWC"),
    ((), 9, 2, 1, 3, "NHWC"),
]


def _nchw(x: np.ndarray, layout: str) -> np.ndarray:
    return x if layout == "NCHW" else np.moveaxis(x, -1, -3)


def _back(y: np.ndarray, layout: str) -> np.ndarray:
    return y if layout == "NCHW" else np.moveaxis(y, -3, -1)


@pytest.mark.parametrize(("case", "variant"), with_variants(SHUFFLE_CASES, str))
def test_pixel_shuffle_and_unshuffle_match_torch(torch, variant, case):
    lead, c, h, w, r, layout = case
    F = torch.nn.functional
    rng = np.random.default_rng(c * h * w)
    shape = (*lead, c, h, w) if layout == "NCHW" else (*lead, h, w, c)
    x = rng.standard_normal(shape).astype(np.float32)
    shuffle = lambda x: jaxconv.pixel_shuffle(x, r, layout=layout)  # noqa: E731

    def run(x, g):
        """The shuffle, its gradient for cotangent g, and the unshuffle of the shuffle: one
        program when jitted."""
        y, pullback = jax.vjp(shuffle, x)
        return y, pullback(g)[0], jaxconv.pixel_unshuffle(y, r, layout=layout)

    g = rng.standard_normal(jax.eval_shape(shuffle, x).shape).astype(np.float32)
    y, grad, back = variant(run)(x, g)
    tx = torch.tensor(_nchw(x, layout), requires_grad=True)
    ty = F.pixel_shuffle(tx, r)
    np.testing.assert_array_equal(y, _back(ty.detach().numpy(), layout))
    np.testing.assert_array_equal(y, reference.pixel_shuffle(x, r, layout=layout))
    ty.backward(torch.tensor(_nchw(g, layout)))
    np.testing.assert_array_equal(grad, _back(tx.grad.numpy(), layout))

    np.testing.assert_array_equal(back, x)  # unshuffle inverts shuffle
    tb = F.pixel_unshuffle(torch.tensor(_nchw(np.asarray(y), layout)), r)
    np.testing.assert_array_equal(back, _back(tb.numpy(), layout))
    np.testing.assert_array_equal(back, reference.pixel_unshuffle(y, r, layout=layout))


def test_pixel_shuffle_any_dtype_and_empty_axes(torch):
    """A rearrangement: torch takes every dtype and empty axes, so does jaxconv."""
    x = np.arange(2 * 8 * 2 * 3).reshape(2, 8, 2, 3).astype(np.int32)
    np.testing.assert_array_equal(
        jaxconv.pixel_shuffle(x, 2), torch.nn.functional.pixel_shuffle(torch.tensor(x), 2)
    )
    assert jaxconv.pixel_shuffle(np.zeros((1, 0, 1, 1)), 1).shape == (1, 0, 1, 1)
    assert jaxconv.pixel_unshuffle(np.zeros((1, 1, 0, 2)), 2).shape == (1, 4, 0, 1)
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 2, 2)))
        check_grads(lambda x: jaxconv.pixel_shuffle(x, 2), (x,), order=2, modes=("fwd", "rev"))


Y4 = np.zeros((2, 8, 3, 3), np.float32)
SHUFFLE_ERRORS = {
    "shuffle-rank-2": ("pixel_shuffle", (Y4[0, 0], 1), ValueError, "at least 3 dimensions"),
    "shuffle-not-divisible": ("pixel_shuffle", (Y4, 3), ValueError, "divisible by"),
    "shuffle-zero": ("pixel_shuffle", (Y4, 0), ValueError, "must be positive"),
    "shuffle-negative": ("pixel_shuffle", (Y4, -2), ValueError, "must be positive"),
    "shuffle-float": ("pixel_shuffle", (Y4, 2.0), TypeError, "upscale_factor must be an int"),
    "unshuffle-rank-2": ("pixel_unshuffle", (Y4[0, 0], 1), ValueError, "at least 3"),
    "unshuffle-not-divisible": ("pixel_unshuffle", (Y4, 2), ValueError, "divisible by"),
    "unshuffle-zero": ("pixel_unshuffle", (Y4, 0), ValueError, "must be positive"),
}


@pytest.mark.parametrize("name", list(SHUFFLE_ERRORS))
def test_pixel_shuffle_refuses_what_torch_refuses(torch, name):
    op, args, error, match = SHUFFLE_ERRORS[name]
    with pytest.raises(Exception):  # noqa: B017
        getattr(torch.nn.functional, op)(*_torch_args(args))
    with pytest.raises(error, match=match):
        getattr(jaxconv, op)(*args)


def test_pixel_shuffle_layout_is_checked():
    with pytest.raises(ValueError, match="layout must be one of"):
        jaxconv.pixel_shuffle(Y4, 2, layout="NCL")
