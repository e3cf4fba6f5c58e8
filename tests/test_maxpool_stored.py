"""Max pooling's derivative with the selected tap stored (jaxconv.kernels.stored, chosen on
XLA:CPU by kernels.dispatch.stores_max_pool_selection): the same values and gradients, bit for
bit, as the rule that leaves the selection to XLA, in reverse and forward mode, eager and
jitted; gradients equal PyTorch's (ties, -inf and NaN included) and values the float64
reference, over seeded random 1-D, 2-D and 3-D geometries (strides, padding, dilation, ceil
mode, both layouts); ResNet's stem pool in NCHW, NHWC and CHWN against torch's indices in
both modes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import jitted_values_and_grad
from conftest import FULL
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference
from jaxconv.kernels import dispatch, maxpool
from jaxconv.kernels.stored import stored

OPS = {1: "max_pool1d", 2: "max_pool2d", 3: "max_pool3d"}
LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


def _case(seed: int) -> dict:
    """A random geometry whose windows overlap or skip (stride != kernel, or dilation > 1),
    so the general derivative runs; ResNet's 3x3 stride-2 padding-1 pool comes first."""
    if seed == 0:
        return dict(nd=2, shape=(2, 3, 9, 10), kernel_size=3, stride=2, padding=1,
                    dilation=1, ceil_mode=False, last=False)  # fmt: skip
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    while True:
        k = tuple(int(v) for v in rng.integers(1, 4, nd))
        s = tuple(int(v) for v in rng.integers(1, 4, nd))
        d = tuple(int(v) for v in rng.integers(1, 3, nd))
        p = tuple(int(rng.integers(0, kk // 2 + 1)) for kk in k)
        size = tuple(int(v) for v in rng.integers(3, 9 if nd < 3 else 6, nd))
        ceil = bool(rng.integers(0, 2))
        if s == k and d == (1,) * nd:
            continue  # tiling windows take the other rule
        case = dict(nd=nd, shape=(2, 3, *size), kernel_size=k, stride=s, padding=p,
                    dilation=d, ceil_mode=ceil, last=bool(rng.integers(0, 2)))  # fmt: skip
        try:  # a geometry torch refuses (e.g. padding past half the window) is drawn again
            jax.eval_shape(_pool(dict(case, last=False)), jnp.zeros(case["shape"]))
        except ValueError:
            continue
        return case


def _kwargs(case: dict) -> dict:
    keys = ("kernel_size", "stride", "padding", "dilation", "ceil_mode")
    return {k: case[k] for k in keys}


def _values(rng: np.random.Generator, shape: tuple[int, ...], special: bool) -> np.ndarray:
    """Small integers (many ties), with some -inf and NaN when ``special``."""
    x = rng.integers(-3, 4, shape).astype(np.float32)
    if special:
        x[rng.random(shape) < 0.1] = -np.inf
        x[rng.random(shape) < 0.03] = np.nan
    return x


def _to_layout(a: np.ndarray, case: dict) -> np.ndarray:
    return np.moveaxis(a, 1, -1) if case["last"] else a


def _pool(case: dict):
    op, kw = getattr(jaxconv, OPS[case["nd"]]), _kwargs(case)
    layout = LAST[case["nd"]] if case["last"] else None
    extra = {"layout": layout} if layout else {}
    return lambda x: op(x, **kw, **extra)


def _grads(f, x: np.ndarray, ct: np.ndarray, jit: bool):
    """(values, reverse-mode input gradient for cotangent ct, forward-mode tangent along a
    fixed x-shaped tangent); jitted, one program."""

    def run(a, t):
        y, dy = jax.jvp(f, (a,), (t,))
        return y, jax.grad(lambda b: jnp.sum(f(b) * ct))(a), dy

    tangent = np.linspace(-1, 1, x.size, dtype=np.float32).reshape(x.shape)
    return (jax.jit(run) if jit else run)(x, tangent)


def test_the_cpu_dispatch_stores():
    assert dispatch.stores_max_pool_selection() is (jax.default_backend() == "cpu")


#: Seeds of the stored-vs-plain check: by default without 5, 7 and 8 (3-D geometries whose
#: layout and ceil mode seeds 3 and 4 already have; ``JAXCONV_TEST_FULL=1``: all nine); the
#: rest keep 2-D and 3-D, both layouts, ceil mode in each rank, -inf and NaN (seeds 0, 3, 6)
#: and the eager runs (seeds 0-2).
SAME_BITS_SEEDS = range(9) if FULL else (0, 1, 2, 3, 4, 6)


@pytest.mark.parametrize("seed", SAME_BITS_SEEDS)
def test_same_bits_as_without_storing(seed, monkeypatch):
    case = _case(seed)
    rng = np.random.default_rng(100 + seed)
    x = _to_layout(_values(rng, case["shape"], special=seed % 3 == 0), case)
    f = _pool(case)
    ct = rng.standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)
    stored_runs = [_grads(f, x, ct, jit) for jit in ((False, True) if seed < 3 else (True,))]
    jax.clear_caches()
    monkeypatch.setattr(maxpool, "stores_max_pool_selection", lambda: False)
    plain = _grads(f, x, ct, jit=True)
    monkeypatch.undo()
    jax.clear_caches()
    for run in stored_runs:  # eager (a few cases: it is slow) and jitted
        for got, want in zip(run, plain, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("seed", range(8))
def test_gradient_equals_torch_with_ties_and_infinities(torch, seed):
    case = _case(seed)
    rng = np.random.default_rng(200 + seed)
    x = _values(rng, case["shape"], special=seed % 2 == 1)  # channels first, as torch
    x[np.isnan(x)] = -np.inf  # NaN: its own test below (torch's gradient there is a choice)
    f = _pool(dict(case, last=False))
    ct = rng.standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, OPS[case["nd"]])(t, **_kwargs(case))
    ty.backward(torch.tensor(ct))
    y, grad = jitted_values_and_grad(f)(x, ct)
    np.testing.assert_array_equal(np.asarray(y), ty.detach().numpy())
    np.testing.assert_array_equal(np.asarray(grad), t.grad.numpy())


def test_nan_windows_follow_torch(torch):
    """A window holding NaN is NaN, and its gradient goes where torch's index points."""
    case = _case(0)
    rng = np.random.default_rng(7)
    x = _values(rng, case["shape"], special=True)
    f = _pool(case)
    t = torch.tensor(x, requires_grad=True)
    ty = torch.nn.functional.max_pool2d(t, **_kwargs(case))
    ct = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(ct))
    y, grad = jitted_values_and_grad(f)(x, ct)
    np.testing.assert_array_equal(np.asarray(y), ty.detach().numpy())
    np.testing.assert_array_equal(np.asarray(grad), t.grad.numpy())


@pytest.mark.parametrize("seed", range(8))
def test_values_equal_the_float64_reference(seed):
    case = _case(seed)
    rng = np.random.default_rng(300 + seed)
    x = _to_layout(rng.standard_normal(case["shape"]).astype(np.float32), case)
    ref = getattr(reference, OPS[case["nd"]])
    extra = {"layout": LAST[case["nd"]]} if case["last"] else {}
    want = ref(x.astype(np.float64), **_kwargs(case), **extra)
    np.testing.assert_allclose(np.asarray(jax.jit(_pool(case))(x)), want, rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_check_grads_both_modes(seed):
    """Tie-free input: JAX's numerical check of the first and second derivatives."""
    case = _case(seed)
    rng = np.random.default_rng(400 + seed)
    size = math.prod(case["shape"])
    x = ((rng.permutation(size) - size // 2) / 4).astype(np.float32).reshape(case["shape"])
    # jitted: un-jitted, every primitive of every derivative the check takes compiles alone
    f = jax.jit(_pool(dict(case, last=False)))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"), eps=1e-2)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.bool_, np.float32, jnp.bfloat16])
def test_stored_is_the_identity(dtype):
    rng = np.random.default_rng(5)
    x = rng.integers(-100, 100, (3, 4, 5)).astype(dtype)
    floating = jnp.issubdtype(dtype, jnp.floating)
    if floating:
        x.flat[:5] = [np.nan, np.inf, -np.inf, -0.0, 0.0]
    for f in (stored, jax.jit(stored)):
        got = np.asarray(f(x))
        assert got.dtype == x.dtype and got.shape == x.shape
        if floating:  # compared as float32: NumPy sees no NaN in bfloat16
            got, want = got.astype(np.float32), x.astype(np.float32)
            signs = np.signbit(got.flat[1:]), np.signbit(want.flat[1:])  # -0.0 kept
            np.testing.assert_array_equal(*signs)
        np.testing.assert_array_equal(got, x if not floating else want)  # NaN where NaN


def test_stored_floats_differentiate_as_the_identity():
    x = jnp.asarray(np.random.default_rng(6).standard_normal((3, 4)), jnp.float32)
    f = lambda a: jnp.sin(stored(a * 3.0))  # noqa: E731
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))
    np.testing.assert_array_equal(jax.grad(lambda a: f(a).sum())(x), 3.0 * jnp.cos(3.0 * x))


def test_stored_survives_compilation():
    """The reduction is what keeps the value stored: XLA must not simplify it away."""
    for dtype in (jnp.int32, jnp.float32):
        text = jax.jit(lambda a: stored(a) * 2).lower(jnp.zeros((4, 5), dtype)).compile()
        assert "reduce(" in text.as_text()


def test_stored_refuses_other_dtypes():
    with pytest.raises(TypeError, match="x must be an integer, boolean or floating"):
        stored(jnp.zeros(3, jnp.complex64))


# --- ResNet's stem pool (3x3, stride 2, padding 1) in every 2-D layout -------------------------

STEM = dict(kernel_size=3, stride=2, padding=1)
LAYOUT_AXES = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 2, 3, 1), "CHWN": (1, 2, 3, 0)}


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "CHWN"])
@pytest.mark.parametrize("seed", range(2))
def test_stem_pool_both_modes_follow_torch_indices(torch, layout, seed):
    """Values equal the float64 reference and torch; the reverse-mode gradient equals torch's;
    the forward-mode tangent is the tangent at torch's index (ties and NaN included), jitted,
    and eager alike (bit for bit) on the first seed (``JAXCONV_TEST_FULL=1``: both)."""
    rng = np.random.default_rng(700 + seed)
    shape = (3, 4, int(rng.integers(7, 13)), int(rng.integers(7, 13)))  # NCHW
    x = _values(rng, shape, special=True)
    t = rng.standard_normal(shape).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    ty, index = torch.nn.functional.max_pool2d(tx, **STEM, return_indices=True)
    ct = rng.standard_normal(tuple(ty.shape)).astype(np.float32)
    ty.backward(torch.tensor(ct))
    flat = t.reshape(*shape[:2], -1)
    tangent = np.take_along_axis(flat, index.numpy().reshape(*shape[:2], -1), axis=2)
    tangent = tangent.reshape(ty.shape)

    axes = LAYOUT_AXES[layout]
    to = lambda a: np.ascontiguousarray(a.transpose(axes))  # noqa: E731
    back = lambda a: np.asarray(a).transpose(np.argsort(axes))  # noqa: E731
    f = lambda a: jaxconv.max_pool2d(a, **STEM, layout=layout)  # noqa: E731

    def run(a, d):
        """Values, forward-mode tangent along d and the gradient for cotangent ct."""
        y, dy = jax.jvp(f, (a,), (d,))
        return y, jax.grad(lambda b: jnp.sum(f(b) * to(ct)))(a), dy

    want_y = reference.max_pool2d(x.astype(np.float64), **STEM)
    # eager on the first seed (every layout), jitted on both
    wraps = (lambda h: h, jax.jit) if seed == 0 or FULL else (jax.jit,)
    runs = [tuple(back(a) for a in wrap(run)(to(x), to(t))) for wrap in wraps]
    for y, grad, dy in runs:
        np.testing.assert_array_equal(y, want_y.astype(np.float32))
        np.testing.assert_array_equal(y, ty.detach().numpy())
        np.testing.assert_array_equal(grad, tx.grad.numpy())
        np.testing.assert_array_equal(dy, tangent)
    for a, b in zip(runs[0], runs[-1], strict=True):  # eager == jit, bit for bit
        np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))
