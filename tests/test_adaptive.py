"""Adaptive pooling: jaxconv.adaptive against its float64 oracle and torch.nn.functional.

Seeded random geometries per dimension: input sizes that the output does not divide, outputs
larger than the input, None entries (2-D/3-D), empty outputs, batched and unbatched. Values and
indices against both oracles, jitted; eager too, gradients included, in every
:data:`conftest.EAGER_EVERY`-th random case (``JAXCONV_TEST_FULL=1``: all), and values and
indices eager in two of the large ones without ties (``JAXCONV_TEST_FULL=1``: all);
gradients (one program with the values) against torch autograd in float64, ties included
(torch's index decides where a tie's gradient goes); forward mode through ``jax.jvp``
against the tangent the oracle's bins and indices imply.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EAGER_EVERY, FULL

from jaxconv import adaptive
from jaxconv import reference as ref

NDS = (1, 2, 3)
KINDS = ("avg", "max")
CASES = 6


def _name(kind: str, nd: int) -> str:
    return f"adaptive_{kind}_pool{nd}d"


def _case(seed: int, nd: int) -> tuple[tuple[int, ...], object]:
    """A random input shape and output_size for ``nd`` spatial axes."""
    rng = np.random.default_rng([seed, nd])
    spatial = tuple(int(v) for v in rng.integers(1, 10 if nd < 3 else 7, size=nd))
    batch = () if rng.random() < 0.3 else (int(rng.integers(1, 3)),)
    shape = batch + (int(rng.integers(1, 4)),) + spatial
    out = []
    for n in spatial:
        r = rng.random()
        if r < 0.15 and nd > 1:
            out.append(None)
        elif r < 0.25:
            out.append(int(rng.integers(n + 1, 2 * n + 3)))  # larger than the input
        else:
            out.append(int(rng.integers(1, n + 1)))
    output_size = out[0] if nd == 1 and rng.random() < 0.5 else tuple(out)
    return shape, output_size


def _values(rng: np.random.Generator, shape: tuple[int, ...], ties: bool) -> np.ndarray:
    if ties:  # few distinct values: many ties inside every bin
        return rng.integers(-2, 3, size=shape).astype(np.float32)
    size = int(np.prod(shape))  # distinct, exact in float32
    return ((rng.permutation(size) - size // 2) / 8).astype(np.float32).reshape(shape)


def _torch(torch, kind: str, nd: int, x: np.ndarray, output_size, g: np.ndarray):
    """torch's output, indices (max) and float64 input gradient for cotangent ``g``."""
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    f = getattr(torch.nn.functional, _name(kind, nd))
    res = f(t, output_size, return_indices=True) if kind == "max" else (f(t, output_size), None)
    y, idx = res
    y.backward(torch.tensor(g, dtype=torch.float64))
    return y.detach().numpy(), None if idx is None else idx.numpy(), t.grad.numpy()


def _values_and_grad(kind: str, nd: int):
    """``run(x, g, output_size) -> (y, indices or None, input gradient for cotangent g)``:
    one call of the op (max: with ``return_indices``) differentiated by ``jax.vjp``, one
    program when jitted."""
    f = getattr(adaptive, _name(kind, nd))

    def run(x, g, output_size):
        if kind == "max":
            y, pullback, idx = jax.vjp(lambda a: f(a, output_size, True), x, has_aux=True)
        else:
            (y, pullback), idx = jax.vjp(lambda a: f(a, output_size), x), None
        return y, idx, pullback(g)[0]

    return run


@functools.cache
def _jitted(kind: str, nd: int):
    """:func:`_values_and_grad` jitted once per op (a module-level cache: the ``ties`` cases
    share the ``distinct`` cases' shapes, so their programs too)."""
    return jax.jit(_values_and_grad(kind, nd), static_argnums=2)


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", NDS)
def test_against_oracles(torch, nd, kind, ties):
    f_ref = getattr(ref, _name(kind, nd))
    eager, jitted = _values_and_grad(kind, nd), _jitted(kind, nd)
    for seed in range(CASES):
        shape, output_size = _case(seed, nd)
        rng = np.random.default_rng([seed, nd, 7])
        x = _values(rng, shape, ties)
        want = f_ref(x, output_size, True) if kind == "max" else f_ref(x, output_size)
        want_y, want_i = want if kind == "max" else (want, None)
        g = rng.standard_normal(want_y.shape)
        t_y, t_i, t_grad = _torch(torch, kind, nd, x, output_size, g)
        np.testing.assert_allclose(want_y, t_y, rtol=1e-12, atol=1e-12)  # the oracles agree
        for run in (eager, jitted) if seed % EAGER_EVERY == 0 else (jitted,):
            y, idx, grad = run(x, g.astype(np.float32), output_size)
            assert y.shape == want_y.shape and y.dtype == jnp.float32, (shape, output_size)
            np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-6)
            if kind == "max":
                np.testing.assert_array_equal(idx, want_i)
                np.testing.assert_array_equal(idx, t_i)
            np.testing.assert_allclose(grad, t_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("nd", NDS)
def test_forward_mode(nd, kind):
    """jax.jvp's tangent is the op applied to the tangent (avg: linear) or the tangent read at
    the oracle's index (max)."""
    f = getattr(adaptive, _name(kind, nd))
    for seed in range(CASES // 2):
        shape, output_size = _case(seed + 100, nd)
        rng = np.random.default_rng([seed, nd, 11])
        x, v = _values(rng, shape, False), rng.standard_normal(shape).astype(np.float32)
        jvp = jax.jit(lambda a, v, o=output_size: jax.jvp(lambda a: f(a, o), (a,), (v,)))
        _, tangent = jvp(jnp.asarray(x), v)
        if kind == "avg":
            want = getattr(ref, _name("avg", nd))(v, output_size)
        else:
            _, idx = getattr(ref, _name("max", nd))(x, output_size, True)
            planes = v.reshape(v.shape[:-nd] + (-1,))
            want = np.take_along_axis(planes, idx.reshape(idx.shape[:-nd] + (-1,)), -1)
            want = want.reshape(idx.shape)
        np.testing.assert_allclose(tangent, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nd", NDS)
def test_second_order(nd):
    """Hessian-vector products exist (the max's gather is twice differentiable) and the max's
    Hessian is zero almost everywhere, the average's exactly zero."""
    for kind in KINDS:
        f = getattr(adaptive, _name(kind, nd))
        x = _values(np.random.default_rng(nd), (2, 3) + (5,) * nd, False)
        loss = lambda a, f=f: jnp.sum(jnp.sin(f(a, 3)))
        # jitted: un-jitted, every primitive of the second derivative compiles on its own
        hvp = jax.jit(lambda a, v, loss=loss: jax.jvp(jax.grad(loss), (a,), (v,))[1])(
            jnp.asarray(x), jnp.ones_like(x)
        )
        assert np.isfinite(np.asarray(hvp)).all() and np.abs(np.asarray(hvp)).max() > 0


#: The large shapes also run eager (``JAXCONV_TEST_FULL=1``: all): un-jitted, the op is its
#: own jitted program per shape, so each costs a second large compile; one 1-D and one 2-D
#: (one axis tiled, the other not) keep the eager paths at this scale.
EAGER_LARGE = ((3, 33), (2, 2, 33, 40))


@pytest.mark.parametrize(
    "nd, shape, output_size",
    [
        (1, (2, 3, 1000), 7),
        (1, (2, 4, 1024), 100),
        (1, (3, 33), 8),
        (2, (2, 3, 33, 1000), (8, 7)),
        (2, (2, 3, 32, 32), (7, 7)),
        (2, (2, 2, 33, 40), (8, 8)),  # one axis tiled, the other not
        (3, (2, 2, 16, 16, 16), (5, 5, 5)),
        (3, (1, 2, 33, 9, 20), (8, 4, 7)),
    ],
)
@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_large_uneven_bins(torch, nd, shape, output_size, ties):
    """Larger inputs whose bins overlap and take two widths per axis (the scan and products
    paths at realistic sizes): values, indices and float64 gradients against both oracles,
    jitted; values and indices also eager on the distinct inputs of :data:`EAGER_LARGE`."""
    rng = np.random.default_rng([nd, len(shape), ties])
    x = _values(rng, shape, ties)
    for kind in KINDS:
        f_ref = getattr(ref, _name(kind, nd))
        want = f_ref(x, output_size, True) if kind == "max" else (f_ref(x, output_size), None)
        g = rng.standard_normal(want[0].shape)
        t_y, t_i, t_grad = _torch(torch, kind, nd, x, output_size, g)
        # A float32 sum over a long bin rounds at the scale of its partial sums, not of the mean.
        atol = 1e-6 * float(np.abs(x).max()) if kind == "avg" else 0.0
        y, idx, grad = _jitted(kind, nd)(x, g.astype(np.float32), output_size)
        results = [(y, idx)]
        if not ties and (FULL or shape in EAGER_LARGE):  # the ties half: the same paths
            f = getattr(adaptive, _name(kind, nd))
            results.append(f(x, output_size, True) if kind == "max" else (f(x, output_size), None))
        for y, idx in results:
            np.testing.assert_allclose(y, want[0], rtol=1e-6, atol=atol)
            np.testing.assert_allclose(y, t_y, rtol=1e-6, atol=atol)
            if kind == "max":
                np.testing.assert_array_equal(idx, want[1])
                np.testing.assert_array_equal(idx, t_i)
        np.testing.assert_allclose(grad, t_grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bins", ["uneven", "tiled"])
@pytest.mark.parametrize("nd", NDS)
def test_nonfinite_average_as_torch(torch, nd, bins):
    """NaN and both infinities scattered in uneven bins, and in tiled ones (a reduction per
    bin; the first axis pooled globally): the average's values are torch's (a bin with NaN or
    both infinities NaN, one infinity that infinity, the rest finite) and its gradient is
    still torch's ``g / count`` per bin element."""
    rng = np.random.default_rng(nd + 40)
    shape = (2, 3) + (11, 9, 7)[:nd]
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, size=3 * 4, replace=False)
    flat[spots[:4]], flat[spots[4:8]], flat[spots[8:]] = np.nan, np.inf, -np.inf
    out = ((4, 5, 3) if bins == "uneven" else (1, 3, 7))[:nd]
    f = getattr(adaptive, _name("avg", nd))
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    t_y = getattr(torch.nn.functional, _name("avg", nd))(t, out)
    g = rng.standard_normal(tuple(t_y.shape))
    t_y.backward(torch.tensor(g))
    np.testing.assert_allclose(f(x, out), t_y.detach().numpy(), rtol=1e-6, atol=1e-6)
    y, _, grad = _jitted("avg", nd)(x, g.astype(np.float32), out)
    np.testing.assert_allclose(y, t_y.detach().numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "nd, shape, output_size, paths",
    [
        (1, (2, 3, 1024), 100, ("tap_gathers",)),
        (1, (2, 3, 1000), 7, ("window_gather",)),
        (1, (2, 3, 50), 7, ("slices",)),
        (2, (2, 3, 33, 200), (8, 3), ("slices", "window_gather")),
        (2, (1, 2, 100, 45), (7, 3), ("tap_gathers", "tap_gathers")),
        (3, (1, 2, 16, 30, 20), (5, 2, 7), ("slices", "tap_gathers", "slices")),
    ],
)
def test_average_forward_paths(torch, nd, shape, output_size, paths):
    """Bins that do not tile their axis are summed from static slices, or when wider by
    gathers, tap by tap or (wider still) all at once; under differentiation the gathers
    always all at once. Every way of calling the op gives torch's and the oracle's values,
    NaN and infinities in their bins: plain (jitted and eager), under ``jax.vjp`` and
    ``jax.jvp``. (Gradients on these paths: the tests above.)"""
    from jaxconv.kernels.dispatch import adaptive_avg_path

    sizes = (output_size,) if nd == 1 else output_size
    widest = [
        int(adaptive._bin_widths(n, o).max()) for n, o in zip(shape[-nd:], sizes, strict=True)
    ]
    assert tuple(adaptive_avg_path(w) for w in widest) == paths
    rng = np.random.default_rng([nd, shape[-1]])
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    spots = rng.choice(flat.size, size=6, replace=False)
    flat[spots[:2]], flat[spots[2:4]], flat[spots[4:]] = np.nan, np.inf, -np.inf
    f = functools.partial(getattr(adaptive, _name("avg", nd)), output_size=output_size)
    want = getattr(torch.nn.functional, _name("avg", nd))(torch.tensor(x), output_size).numpy()
    with np.errstate(invalid="ignore"):  # inf - inf in the oracle's bins: NaN, as torch's
        oracle = getattr(ref, _name("avg", nd))(x, output_size)
    tangent = rng.standard_normal(shape).astype(np.float32)
    y_jvp, t_jvp = jax.jit(lambda a, t: jax.jvp(f, (a,), (t,)))(x, tangent)
    results = {
        "jit": jax.jit(f)(x),
        "eager": f(x),
        "vjp": jax.jit(lambda a: jax.vjp(f, a)[0])(x),
        "jvp": y_jvp,
    }
    assert np.isnan(want).any() and np.isinf(want).any()
    for how, y in results.items():
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6, err_msg=how)
        np.testing.assert_allclose(y, oracle, rtol=1e-6, atol=1e-6, err_msg=how)
    # The op is linear: its tangent is the average of the tangent (finite, unlike x).
    t_want = getattr(torch.nn.functional, _name("avg", nd))(torch.tensor(tangent), output_size)
    np.testing.assert_allclose(t_jvp, t_want.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "nd, shape, output_size",
    [
        (1, (2, 3, 12), 4),
        (2, (2, 3, 6, 4), (3, 2)),
        (2, (3, 5, 5), 1),
        (3, (2, 2, 4, 6, 2), (2, 3, 1)),
    ],
)
def test_tiling_bins(torch, nd, shape, output_size):
    """Outputs that divide the input (the reshape path: global pooling, the networks' pools)
    against torch: values, indices, float64 gradients."""
    rng = np.random.default_rng(nd)
    x = _values(rng, shape, False)
    g = rng.standard_normal(getattr(ref, _name("avg", nd))(x, output_size).shape)
    cotangent = jnp.asarray(g, jnp.float32)
    for kind in KINDS:
        t_y, t_i, t_grad = _torch(torch, kind, nd, x, output_size, g)
        y, idx, grad = _jitted(kind, nd)(x, cotangent, output_size)
        if kind == "max":
            np.testing.assert_array_equal(idx, t_i)
        np.testing.assert_allclose(y, t_y, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(grad, t_grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nd", NDS)
@pytest.mark.parametrize("batched", [True, False])
def test_channels_last(nd, batched):
    """layout="NLC"/"NHWC"/"NDHWC": the channels-first result with C moved last (values and
    indices), as the oracle's."""
    _, last = adaptive.LAYOUTS[nd]
    rng = np.random.default_rng(nd + 10)
    shape = ((2,) if batched else ()) + (3,) + (5, 7, 4)[:nd]
    x = _values(rng, shape, False)
    x_last = np.moveaxis(x, -nd - 1, -1)
    out = 3 if nd == 1 else (3,) + (None, 2)[: nd - 1]
    for kind in KINDS:
        f, f_ref = getattr(adaptive, _name(kind, nd)), getattr(ref, _name(kind, nd))
        args = (True,) if kind == "max" else ()
        results = [f(x, out, *args), f(x_last, out, *args, layout=last)]
        results.append(f_ref(x_last, out, *args, layout=last))
        want, got, oracle = (r if kind == "max" else (r,) for r in results)
        for w, g, o in zip(want, got, oracle, strict=True):
            np.testing.assert_array_equal(g, np.moveaxis(np.asarray(w), -nd - 1, -1))
            np.testing.assert_allclose(g, o, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="layout"):
        getattr(adaptive, _name("avg", nd))(x, out, layout="NHWC" if nd != 2 else "NCL")


def test_nan_and_inf_as_torch(torch):
    x = np.array([[[1.0, np.nan, 3.0, np.nan, 2.0, -np.inf, -np.inf, 0.5]]], np.float32)
    for out in (1, 2, 3, 5):
        y, i = adaptive.adaptive_max_pool1d(x, out, return_indices=True)
        ty, ti = torch.nn.functional.adaptive_max_pool1d(torch.tensor(x), out, True)
        np.testing.assert_array_equal(y, ty.numpy())
        np.testing.assert_array_equal(i, ti.numpy())
        np.testing.assert_array_equal(
            adaptive.adaptive_avg_pool1d(x, out),
            torch.nn.functional.adaptive_avg_pool1d(torch.tensor(x), out).numpy(),
        )
    allinf = np.full((1, 2, 4, 4), -np.inf, np.float32)
    y, i = adaptive.adaptive_max_pool2d(allinf, (3, 2), return_indices=True)
    ty, ti = torch.nn.functional.adaptive_max_pool2d(torch.tensor(allinf), (3, 2), True)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(i, ti.numpy())


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision(dtype):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6)).astype(np.float32)
    for kind in KINDS:
        y = getattr(adaptive, _name(kind, 2))(jnp.asarray(x, dtype), (3, 4))
        assert y.dtype == dtype
        want = getattr(ref, _name(kind, 2))(np.asarray(jnp.asarray(x, dtype), np.float64), (3, 4))
        np.testing.assert_allclose(np.asarray(y, np.float64), want, rtol=1e-2, atol=1e-2)


def test_empty_batch_and_channels():
    assert adaptive.adaptive_avg_pool2d(jnp.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)
    assert adaptive.adaptive_max_pool2d(jnp.zeros((0, 2, 5, 5)), 2).shape == (0, 2, 2, 2)
    assert adaptive.adaptive_avg_pool1d(jnp.zeros((1, 0, 5)), 2).shape == (1, 0, 2)  # as torch
    assert adaptive.adaptive_max_pool1d(jnp.zeros((1, 2, 5)), 0).shape == (1, 2, 0)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: adaptive.adaptive_avg_pool2d(jnp.zeros((5, 5)), 2), ValueError, "rank"),
        (lambda: adaptive.adaptive_max_pool1d(jnp.zeros((1, 2, 3, 5)), 2), ValueError, "rank"),
        (
            lambda: adaptive.adaptive_avg_pool2d(jnp.zeros((1, 2, 5, 5)), (2, 3, 4)),
            ValueError,
            "output_size",
        ),
        (
            lambda: adaptive.adaptive_avg_pool2d(jnp.zeros((1, 2, 5, 5)), (2,)),
            ValueError,
            "output_size",
        ),
        (
            lambda: adaptive.adaptive_avg_pool2d(jnp.zeros((1, 2, 5, 5)), (-1, 3)),
            ValueError,
            r"output_size\[0\]",
        ),
        (
            lambda: adaptive.adaptive_avg_pool1d(jnp.zeros((1, 2, 5)), None),
            TypeError,
            "output_size",
        ),
        (lambda: adaptive.adaptive_avg_pool1d(jnp.zeros((1, 2, 5)), 2.0), TypeError, "output_size"),
        (
            lambda: adaptive.adaptive_avg_pool1d(jnp.zeros((1, 2, 5)), True),
            TypeError,
            "output_size",
        ),
        (
            lambda: adaptive.adaptive_avg_pool1d(jnp.zeros((1, 2, 5), jnp.int32), 2),
            TypeError,
            "input",
        ),
        (lambda: adaptive.adaptive_avg_pool1d(jnp.zeros((1, 2, 0)), 2), ValueError, "spatial"),
        (lambda: adaptive.adaptive_max_pool1d(jnp.zeros((1, 0, 5)), 2), ValueError, "channel"),
        (
            lambda: adaptive.adaptive_max_pool1d(jnp.zeros((1, 2, 5)), 2, 1),
            TypeError,
            "return_indices",
        ),
    ],
)
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_torch_refuses_the_same(torch):
    """The refusals above are torch's (its messages differ; the refusal is the point)."""
    F = torch.nn.functional
    for call in (
        lambda: F.adaptive_avg_pool2d(torch.zeros(1, 2, 5, 5), (2, 3, 4)),
        lambda: F.adaptive_avg_pool2d(torch.zeros(1, 2, 5, 5), (-1, 3)),
        lambda: F.adaptive_avg_pool1d(torch.zeros(1, 2, 5), None),
        lambda: F.adaptive_avg_pool1d(torch.zeros(1, 2, 0), 2),
        lambda: F.adaptive_max_pool1d(torch.zeros(1, 0, 5), 2),
    ):
        with pytest.raises((RuntimeError, TypeError, ValueError)):
            call()
