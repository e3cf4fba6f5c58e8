"""Checks shared by the N-D convolution tests (test_conv_nd.py, test_conv_transpose.py, and
the kernels' own: planes, plane_patches, tap_outputs, depthwise).

Each helper compares a jaxconv op with PyTorch or the float64 NumPy oracle in one way; the
test files build the cases (forward conv or transposed conv) and pass the ops in.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import reference

#: Spatial rank -> the channels-last layout name.
CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}

#: Tolerance against the float64 oracle per low-precision dtype (rtol; atol is 3x).
DTYPE_TOL = {jnp.float16: 2e-2, jnp.bfloat16: 1e-1, jnp.float32: 1e-5}


def torch_op(torch: Any, family: str, n: int) -> Callable:
    """``torch.nn.functional.<family><n>d``, e.g. ``torch_op(torch, "conv_transpose", 3)``."""
    return getattr(torch.nn.functional, f"{family}{n}d")


def to_torch(torch: Any, args: Mapping[str, Any]) -> dict[str, Any]:
    """``args`` with every NumPy array as a torch tensor (other values unchanged)."""
    return {k: torch.tensor(v) if isinstance(v, np.ndarray) else v for k, v in args.items()}


def to_last(x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An NC* input and a (dim 0, dim 1, *k) weight in channels-last form: N*C input and
    (*k, dim 1, dim 0) weight. For a conv's OI* weight that is the *IO kernel; for a
    transposed conv's (C_in, C_out // g, *k) weight, the forward conv's spatial-I-O kernel."""
    n = w.ndim - 2
    return np.moveaxis(x, -n - 1, -1), w.transpose(*range(2, n + 2), 1, 0)


def assert_matches_in_both_layouts(
    n: int, last: bool, arrays: tuple, want: np.ndarray, reference: Callable, op: Callable
) -> None:
    """``reference(x, w, b, **layout)`` (float64 NumPy) and ``op(x, w, b, **layout)`` (jaxconv,
    float64, eager and jitted) equal torch's channels-first output ``want``; with ``last``,
    the inputs, ``want`` and ``layout`` are put channels-last first (the reference is also
    checked channels-first)."""
    x, w, b = arrays
    np.testing.assert_allclose(reference(x, w, b), want, rtol=1e-10, atol=1e-10)
    layout = {}
    if last:
        x, w = to_last(x, w)
        want = np.moveaxis(want, -n - 1, -1)
        layout = {"layout": CHANNELS_LAST[n]}
        np.testing.assert_allclose(reference(x, w, b, **layout), want, rtol=1e-10, atol=1e-10)
    with jax.enable_x64(True):
        f = lambda x, w, b: op(x, w, b, **layout)  # noqa: E731
        for got in (f(x, w, b), jax.jit(f)(x, w, b)):
            assert got.dtype == jnp.float64 and got.shape == want.shape
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def assert_grads_match_torch(torch: Any, torch_fn: Callable, op: Callable, arrays: tuple) -> None:
    """The jitted float64 gradients of ``sum(op(x, w, b) * ct)`` with respect to input,
    weight and bias equal torch autograd's through ``torch_fn``, for a seeded random
    cotangent ``ct``."""
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in arrays)
    ty = torch_fn(tx, tw, tb)
    ct = np.random.default_rng(10).standard_normal(tuple(ty.shape))
    (ty * torch.tensor(ct)).sum().backward()
    with jax.enable_x64(True):
        loss = lambda x, w, b: jnp.sum(op(x, w, b) * ct)  # noqa: E731
        grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*arrays)
    for name, g, t in zip(("input", "weight", "bias"), grads, (tx, tw, tb), strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-9, atol=1e-9, err_msg=name)


def assert_low_precision(op: Callable, reference: Callable, arrays: tuple, dtype: Any) -> None:
    """``op`` on ``arrays`` cast to ``dtype`` returns ``dtype`` and is within
    :data:`DTYPE_TOL` of the float64 ``reference``."""
    y = op(*(jnp.asarray(a, dtype) for a in arrays))
    assert y.dtype == dtype
    tol = DTYPE_TOL[dtype]
    np.testing.assert_allclose(
        np.asarray(y, np.float64), reference(*arrays), rtol=tol, atol=tol * 3
    )


def assert_nonfinite_like(got: np.ndarray, want: np.ndarray) -> None:
    """NaN and inf where ``want`` has them, and the finite values equal."""
    got = np.asarray(got)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-10)


def torch_shape(torch: Any, torch_fn: Callable, x_shape: tuple, w_shape: tuple, args: tuple):
    """The output shape of ``torch_fn(zeros(x_shape), zeros(w_shape), None, *args)``, or
    None where torch refuses it (RuntimeError)."""
    try:
        return tuple(torch_fn(torch.zeros(x_shape), torch.zeros(w_shape), None, *args).shape)
    except RuntimeError:
        return None


def jax_shape(op: Callable, x_shape: tuple, w_shape: tuple, args: tuple):
    """The output shape of ``op(x, w, None, *args)`` traced abstractly (float32), or None
    where jaxconv refuses it (ValueError or TypeError)."""
    x, w = (jax.ShapeDtypeStruct(s, jnp.float32) for s in (x_shape, w_shape))
    try:
        return jax.eval_shape(lambda x, w: op(x, w, None, *args), x, w).shape
    except (ValueError, TypeError):
        return None


def case_arrays(c: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """float64 channels-first input (N, C, *size), or unbatched (C, *size), an OI* weight
    (O, C // groups, *k) and an optional bias of a seeded sweep case ``c`` (keys i, batch, c,
    o, groups, size, k, bias)."""
    r = np.random.default_rng(c["i"])
    lead = () if c["batch"] is None else (c["batch"],)
    x = r.standard_normal(lead + (c["c"],) + c["size"])
    w = r.standard_normal((c["o"], c["c"] // c["groups"]) + c["k"])
    b = r.standard_normal(c["o"]) if c["bias"] else None
    return x, w, b


def case_geometry(c: Mapping[str, Any]) -> dict[str, Any]:
    """The conv keyword arguments (stride, padding, dilation, groups) of a sweep case."""
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                groups=c["groups"])  # fmt: skip


def assert_scan_vmap_like_lax(conv: Callable, impl: str, x: np.ndarray, w: np.ndarray) -> None:
    """A path inside a training loop: a ``lax.scan`` over the steps of ``w`` (leading axis) of
    ``conv(h, w_step, impl)`` with tanh between, its loss's value and gradients (input and
    weights) vmapped over ``x``'s leading axis, jitted, in float64, equal to ``impl="lax"``'s.
    ``conv(h, w, impl)`` must keep ``h``'s shape (e.g. padding "same")."""

    def run(impl: str) -> Callable:
        def step(h, wk):
            y = conv(h, wk, impl)
            return jnp.tanh(y), jnp.sum(y**2)

        def loss(x, w):
            return jnp.sum(jax.lax.scan(step, x, w)[1])

        return jax.jit(jax.vmap(jax.value_and_grad(loss, argnums=(0, 1)), in_axes=(0, None)))

    with jax.enable_x64(True):
        (got, gg), (want, gw) = run(impl)(x, w), run("lax")(x, w)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        for g, h in zip(gg, gw, strict=True):
            np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-10)


def assert_gradients_like_lax(
    apply: Callable,
    impl: str,
    arrays: tuple,
    variant: Callable,
    argnums: tuple[int, ...],
    seed: int,
) -> None:
    """Reverse mode in float64: the gradients w.r.t. ``argnums`` of ``<apply(impl, x, w, b),
    ct>`` (``ct`` a seeded cotangent), computed under ``variant``, equal ``impl="lax"``'s
    (jitted) to 1e-10. ``apply(impl, x, w, b)`` is the case's conv by ``impl``; ``arrays`` is
    ``(x, w, b)`` in its layout (``b`` may be None; then ``argnums`` must leave out 2)."""

    def grads(impl: str, x: Any, w: Any, b: Any, ct: Any) -> tuple:
        return jax.grad(lambda x, w, b: jnp.sum(apply(impl, x, w, b) * ct), argnums)(x, w, b)

    with jax.enable_x64(True):
        shape = jax.eval_shape(lambda x, w, b: apply("lax", x, w, b), *arrays).shape
        ct = np.random.default_rng(seed).standard_normal(shape)
        want = jax.jit(functools.partial(grads, "lax"))(*arrays, ct)
        got = variant(functools.partial(grads, impl))(*arrays, ct)
        for g, h in zip(got, want, strict=True):
            np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


def assert_forward_mode_like_lax(
    apply: Callable, impl: str, arrays: tuple, seed: int, alone: int | None = None
) -> None:
    """Forward mode in float64: ``jax.jvp`` of ``apply(impl, x, w, b)`` in ``x`` and ``w``
    with seeded tangents equals ``impl="lax"``'s to 1e-10; with ``alone`` (0: x, 1: w) also
    the jvp in that argument alone (the other's tangent a symbolic zero)."""
    x, w, b = arrays
    r = np.random.default_rng(seed)
    tangents = (r.standard_normal(np.shape(x)), r.standard_normal(np.shape(w)))

    def jvps(impl: str) -> tuple:
        out = jax.jvp(lambda x, w: apply(impl, x, w, b), (x, w), tangents)
        if alone is None:
            return out
        only = lambda a: apply(impl, *((a, w) if alone == 0 else (x, a)), b)  # noqa: E731
        return (*out, *jax.jvp(only, (arrays[alone],), (tangents[alone],)))

    with jax.enable_x64(True):
        for g, h in zip(jvps(impl), jvps("lax"), strict=True):
            np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


#: The padding forms the seeded N-D sweeps draw from, by case index modulo 6.
PADDING_FORMS = ("int", "list", "sides", "same", "valid", "tuple")


def draw_padding(r: np.random.Generator, form: str, n: int) -> Any:
    """A ``padding`` argument of ``form`` for ``n`` spatial axes, drawn from ``r``: an int,
    a list or tuple of ints, per-side pairs (``"sides"``), or the string itself."""
    if form == "int":
        return int(r.integers(0, 3))
    if form in ("list", "tuple"):
        padding = [int(v) for v in r.integers(0, 3, n)]
        return tuple(padding) if form == "tuple" else padding
    if form == "sides":
        return [tuple(int(v) for v in r.integers(0, 3, 2)) for _ in range(n)]
    return form


def fitting_size(
    r: np.random.Generator, padding: Any, k: tuple[int, ...], d: tuple[int, ...], spread: int
) -> tuple[int, ...]:
    """An input size per axis: the smallest the dilated kernel fits on after ``padding``,
    plus 0 to ``spread - 1`` drawn from ``r`` (at least 1)."""
    pads = reference.conv._conv_padding(padding, k, d)
    return tuple(
        max(1, int(d[a] * (k[a] - 1) + 1 - sum(pads[a]) + r.integers(0, spread)))
        for a in range(len(k))
    )


def draw_3d_geometry(r: np.random.Generator, i: int, max_stride: int, spread: int) -> dict:
    """The geometry of seeded 3-D sweep case ``i``, drawn from ``r`` in this order: kernel
    (1-3) and dilation (1-2) per axis, stride (1 to ``max_stride`` per axis; 1 with padding
    ``"same"``), padding of the form ``PADDING_FORMS[i % 6]``, and an input size the kernel
    fits on (:func:`fitting_size` with ``spread``). Keys: k, dilation, stride, padding, size."""
    k = tuple(int(v) for v in r.integers(1, 4, 3))
    d = tuple(int(v) for v in r.integers(1, 3, 3))
    form = PADDING_FORMS[i % 6]
    stride = tuple(int(v) for v in r.integers(1, max_stride + 1, 3))
    padding = draw_padding(r, form, 3)
    if form == "same":
        stride = (1, 1, 1)
    size = fitting_size(r, padding, k, d, spread)
    return dict(k=k, dilation=d, stride=stride, padding=padding, size=size)


def jitted_values_and_grad(f: Callable) -> Callable:
    """``(x, ct) -> (f(x), the input gradient for cotangent ct)``, jitted: one program."""

    @jax.jit
    def run(x, ct):
        y, pullback = jax.vjp(f, x)
        return y, pullback(ct)[0]

    return run


def assert_conv2d_opinfo(impl: str, taken: Callable[[tuple, dict], bool]) -> int:
    """Every float64 sample of torch's conv2d OpInfo through ``conv2d(impl=impl)``, jitted:
    the values and the input and weight gradients (for a random output gradient) equal
    torch's; every error input raises ValueError or TypeError. Returns how many samples
    ``taken(weight_shape, kwargs)`` says the path computes itself (the rest fall back), for
    the caller to check that the samples still reach it."""
    pytest.importorskip("expecttest")
    torch = pytest.importorskip("torch")
    from torch.testing._internal.common_methods_invocations import op_db

    info = next(i for i in op_db if i.name == "nn.functional.conv2d" and not i.variant_test_name)
    torch.manual_seed(0)
    count = 0
    for s in info.sample_inputs_func(info, "cpu", torch.float64, True):
        w, rest = s.args[0], s.args[1:]
        x_t, w_t = s.input.clone().requires_grad_(), w.clone().requires_grad_()
        y_t = torch.nn.functional.conv2d(x_t, w_t, *rest, **s.kwargs)
        g = torch.randn(y_t.shape, dtype=torch.float64)
        gx_t, gw_t = torch.autograd.grad(y_t, (x_t, w_t), g)
        args = [a.detach().numpy() if isinstance(a, torch.Tensor) else a for a in rest]

        def values_and_grads(x, w, g, args=args, kwargs=s.kwargs):
            conv = lambda x, w: jaxconv.conv2d(x, w, *args, impl=impl, **kwargs)  # noqa: E731
            y, pull = jax.vjp(conv, x, w)
            return (y, *pull(g))

        with jax.enable_x64(True):
            got = jax.jit(values_and_grads)(s.input.detach().numpy(), w.detach().numpy(), g.numpy())
        for a, b in zip(got, (y_t, gx_t, gw_t), strict=True):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-10)
        count += taken(tuple(w.shape), s.kwargs)
    for err in info.error_inputs_func(info, "cpu"):
        s = err.sample_input
        args = [a.numpy() if isinstance(a, torch.Tensor) else a for a in s.args]
        with pytest.raises((ValueError, TypeError)):
            jaxconv.conv2d(s.input.numpy(), *args, impl=impl, **s.kwargs)
    return count


def assert_derivatives_like_lax(apply: Callable, impl: str, arrays: tuple) -> None:
    """Every derivative of ``apply(impl, x, w, b)`` in float64 equals ``impl="lax"``'s:
    reverse mode (x, w, b together under jit, and x alone un-jitted around ``apply``), forward
    mode (both, and each alone) and a second derivative, d/dx <grad_x |conv|^2, x>."""
    x, w, b = arrays
    assert_gradients_like_lax(apply, impl, arrays, jax.jit, (0, 1, 2), seed=1)
    assert_gradients_like_lax(apply, impl, arrays, lambda f: f, (0,), seed=2)
    for alone in (0, 1):
        assert_forward_mode_like_lax(apply, impl, arrays, seed=3, alone=alone)

    def second(impl: str) -> Any:
        inner = jax.grad(lambda x: jnp.sum(apply(impl, x, w, b) ** 2))
        return jax.jit(jax.grad(lambda x: jnp.vdot(inner(x), x)))(x)

    with jax.enable_x64(True):
        np.testing.assert_allclose(second(impl), second("lax"), rtol=1e-10, atol=1e-10)
