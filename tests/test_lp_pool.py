"""Power-average pooling (lp_pool1d/2d/3d) against PyTorch (CPU) and the float64 oracle.

torch computes ``(sign(a) * relu(|a|) * prod(k)) ** (1/p)`` of ``a = avg_pool(x ** p)`` (no
padding; in ceil mode the overhanging window's average divides by its in-input count), and
±inf norms through max pooling of |x|: values, NaN where torch's are NaN, and gradients
(float64, torch autograd) must agree, in every layout, batched and unbatched; every case
jitted, a quarter also eager and equal to jit (``JAXCONV_TEST_FULL=1``: all).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import jitted_values_and_grad
from conftest import with_variants
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference

LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC", "CHWN"), 3: ("NCDHW", "NDHWC")}


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield


def _perm(layout: str, batched: bool) -> list[int]:
    """Axes that take an array in ``layout`` to channels first."""
    src = layout if batched else layout.replace("N", "")
    dst = "NC" + "".join(c for c in layout if c not in "NC")
    dst = dst if batched else dst.replace("N", "")
    return [src.index(c) for c in dst]


def _torch_lp(torch, n, x, g, layout, batched, norm_type, kernel, stride, ceil_mode):
    """torch's lp_pool on a channels-first copy; values and input gradient, in ``layout``."""
    perm = _perm(layout, batched)
    inv = np.argsort(perm)
    t = torch.tensor(np.transpose(x, perm), requires_grad=True)
    y = getattr(torch.nn.functional, f"lp_pool{n}d")(t, norm_type, kernel, stride, ceil_mode)
    y.backward(torch.tensor(np.transpose(g, perm)))
    return np.transpose(y.detach().numpy(), inv), np.transpose(t.grad.numpy(), inv)


def _cases(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    norms = [1, 2, 3, 1.5, -1.0, 0.5, float("inf"), -float("inf")]
    for i in range(count):
        n = 1 + i % 3
        layout = LAYOUTS[n][(i // 3) % len(LAYOUTS[n])]
        batched = layout == "CHWN" or bool(rng.random() < 0.6)
        size = tuple(int(v) for v in rng.integers(3, 7 if n < 3 else 5, size=n))
        k = tuple(int(v) for v in rng.integers(1, 4, size=n))
        k = tuple(min(a, b) for a, b in zip(k, size, strict=True))
        stride = [None, (), tuple(int(v) for v in rng.integers(1, 3, size=n))][i % 3]
        norm = norms[i % len(norms)]
        dims = {"N": 2, "C": int(rng.integers(1, 3))}
        spatial = iter(size)
        letters = layout if batched else layout.replace("N", "")
        shape = tuple(dims[c] if c in "NC" else next(spatial) for c in letters)
        cases.append(dict(n=n, layout=layout, batched=batched, shape=shape, k=k,
                          stride=stride, norm=norm, ceil=bool(i % 2)))  # fmt: skip
    return cases


CASES = _cases(12, seed=3)


def _id(c: dict) -> str:
    return f"{c['layout']}{list(c['shape'])}-p{c['norm']}-k{c['k']}-s{c['stride']}-c{c['ceil']}"


def test_sweep_covers_the_cases():
    assert {c["layout"] for c in CASES} == {lay for ls in LAYOUTS.values() for lay in ls}
    assert {c["batched"] for c in CASES} == {True, False}
    assert {c["norm"] for c in CASES} >= {1, 2, 1.5, -1.0, float("inf"), -float("inf")}
    assert any(c["ceil"] and c["stride"] for c in CASES)


@pytest.mark.parametrize(("case", "variant"), with_variants(CASES, _id))
def test_lp_pool_vs_torch(case, variant, torch):
    """Values (NaN where torch's are), gradients (float64) and the oracle; eager == jit
    (eager variant)."""
    n, layout, batched, p = case["n"], case["layout"], case["batched"], case["norm"]
    rng = np.random.default_rng(len(_id(case)))
    x = rng.standard_normal(case["shape"])
    if not float(p).is_integer() and np.isfinite(p):
        x = np.abs(x) + 0.1  # a negative base of a fractional power is NaN (checked below)
    # torch's lp_pool1d multiplies by kernel_size itself: it takes only an int there
    k = case["k"][0] if n == 1 else case["k"]
    op = getattr(jaxconv, f"lp_pool{n}d")
    f = lambda x: op(x, p, case["k"], case["stride"], case["ceil"], layout=layout)  # noqa: E731
    g = rng.standard_normal(jax.eval_shape(f, x).shape)
    y, grad = jitted_values_and_grad(f)(x, g)
    want, want_grad = _torch_lp(torch, n, x, g, layout, batched, p, k, case["stride"],
                                case["ceil"])  # fmt: skip
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-13)
    if variant is not jax.jit:
        np.testing.assert_allclose(f(x), y, rtol=1e-14, atol=1e-15)
    ref = getattr(reference, f"lp_pool{n}d")(x, p, case["k"], case["stride"], case["ceil"],
                                             layout=layout)  # fmt: skip
    np.testing.assert_allclose(ref, want, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_lp_pool_nan_and_zero_windows_as_torch(n, torch):
    """Negative inputs with a fractional p, negative window sums with p = 1, a window of
    zeros (torch's gradient there is 0, not NaN), ceil mode's rescaled last window."""
    rng = np.random.default_rng(n)
    shape = (2, 2) + (5,) * n
    x = rng.standard_normal(shape)
    x[0, 0] = 0.0  # whole planes of zeros: every window's sum is 0
    layout, op = LAYOUTS[n][0], getattr(jaxconv, f"lp_pool{n}d")
    for p in (1.5, 1, 2):
        f = lambda x, p=p: op(x, p, 2, 2, True)  # noqa: E731
        g = rng.standard_normal(jax.eval_shape(f, x).shape)
        got, grad = jitted_values_and_grad(f)(x, g)
        want, want_grad = _torch_lp(torch, n, x, g, layout, True, p, 2, 2, True)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)  # NaN where torch's
        np.testing.assert_allclose(grad, want_grad, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize(("n", "p"), [(1, 2), (3, 1.5)])
def test_lp_pool_check_grads(n, p):
    """Reverse and forward mode, second order, by finite differences (positive input)."""
    rng = np.random.default_rng(n)
    x = np.abs(rng.standard_normal((1, 2) + (4,) * n)) + 0.5
    f = jax.jit(lambda x: getattr(jaxconv, f"lp_pool{n}d")(x, p, 2, 1, True))
    check_grads(f, (x,), order=2, modes=("fwd", "rev"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_lp_pool_low_precision(dtype, torch):
    rng = np.random.default_rng(0)
    for n in (1, 2):
        x = jnp.asarray(np.abs(rng.standard_normal((2, 3) + (6,) * n)), dtype)
        y = getattr(jaxconv, f"lp_pool{n}d")(x, 2, 2)
        assert y.dtype == x.dtype
        x32 = torch.tensor(np.asarray(x.astype(jnp.float32)))
        want = getattr(torch.nn.functional, f"lp_pool{n}d")(x32, 2, 2).numpy()
        tol = {"float16": 4e-3, "bfloat16": 3e-2, "float32": 1e-6}[dtype]
        np.testing.assert_allclose(y.astype(jnp.float32), want, rtol=tol, atol=tol)


def test_lp_pool_refusals(torch):
    """norm_type must be a non-zero real number; the window's arguments as the pools'."""
    x = np.ones((1, 2, 6, 6))
    F = torch.nn.functional
    for bad in (0, 0.0):
        with pytest.raises(ValueError, match="norm_type"):
            jaxconv.lp_pool2d(x, bad, 2)
        with pytest.raises(ZeroDivisionError):
            F.lp_pool2d(torch.tensor(x), bad, 2)
    with pytest.raises(TypeError, match="norm_type"):
        jaxconv.lp_pool2d(x, "2", 2)
    with pytest.raises(TypeError):
        F.lp_pool2d(torch.tensor(x), "2", 2)
    for bad in (None, True, (2,), float("nan")):
        with pytest.raises((TypeError, ValueError), match="norm_type"):
            jaxconv.lp_pool2d(x, bad, 2)
    for name, kw in [("kernel_size", dict(kernel_size=0)), ("kernel_size", dict(kernel_size=7)),
                     ("stride", dict(kernel_size=2, stride=0)),
                     ("kernel_size", dict(kernel_size=(2, 2, 2)))]:  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=name):
            jaxconv.lp_pool2d(x, 2, **kw)
        with pytest.raises((RuntimeError, ValueError)):
            F.lp_pool2d(torch.tensor(x), 2, **kw)
    with pytest.raises(TypeError):  # no padding argument, as torch
        jaxconv.lp_pool2d(x, 2, 2, padding=1)
    with pytest.raises(ValueError, match="layout"):
        jaxconv.lp_pool1d(np.ones((1, 2, 6)), 2, 2, layout="NCHW")
    with pytest.raises(ValueError, match="input"):
        jaxconv.lp_pool3d(np.ones((2, 6, 6)), 2, 2)
