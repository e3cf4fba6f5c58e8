"""jaxconv.kernels.batchnorm: batch norm's closed-form derivative against autodiff of the plain
formula (float64), PyTorch's batch norm backward (float32), and JAX's numerical check in both
modes; values equal to the plain formula, eager and jitted, channels first and last."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import with_variants
from jax import lax
from jax.test_util import check_grads

from jaxconv.kernels.batchnorm import batch_norm_train

#: (shape, channel axis): 1-D/2-D/3-D batch norms, channels first and last, and (N, C).
CASES = [
    ((6, 4), 1),
    ((3, 5, 7), 1),
    ((3, 7, 5), 2),
    ((4, 3, 5, 6), 1),
    ((4, 5, 6, 3), 3),
    ((2, 3, 2, 4, 3), 1),
    ((2, 2, 4, 3, 3), 4),
]


def plain(x, weight, bias, axes, eps):
    """The formula as written, differentiated by JAX's autodiff (the reference)."""
    mean = jnp.mean(x, axis=axes)
    var = jnp.mean(jnp.square(x - jnp.expand_dims(mean, axes)), axis=axes)
    xhat = (x - jnp.expand_dims(mean, axes)) * jnp.expand_dims(lax.rsqrt(var + eps), axes)
    return xhat * jnp.expand_dims(weight, axes) + jnp.expand_dims(bias, axes), mean, var


def _draw(seed: int, shape: tuple[int, ...], channel: int, dtype, offset: float = 1.0):
    rng = np.random.default_rng(seed)
    c = shape[channel]
    x = (rng.standard_normal(shape) * 3 + offset).astype(dtype)
    weight = rng.uniform(0.5, 2, c).astype(dtype)
    bias = rng.standard_normal(c).astype(dtype)
    # cotangents of all three outputs, so the mean's and variance's derivatives count too
    cots = tuple(rng.standard_normal(s).astype(dtype) for s in (shape, (c,), (c,)))
    return x, weight, bias, cots


def _axes(shape: tuple[int, ...], channel: int) -> tuple[int, ...]:
    return tuple(a for a in range(len(shape)) if a != channel)


def _vjp(fn, x, weight, bias, axes, eps, cots):
    _, pullback = jax.vjp(lambda *a: fn(*a, axes, eps), x, weight, bias)
    return pullback(cots)


def _values_and_vjp(fn, x, weight, bias, cots, axes, eps):
    """``fn``'s three outputs and its input, weight and bias cotangents for ``cots``."""
    return fn(x, weight, bias, axes, eps), _vjp(fn, x, weight, bias, axes, eps, cots)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _rule_and_formula(x, weight, bias, cots, axes, eps):
    """:func:`_values_and_vjp` of the rule and of the plain formula: one program (shared by
    the cases of one shape: the cotangents are arguments)."""
    args = (x, weight, bias, cots, axes, eps)
    return _values_and_vjp(batch_norm_train, *args), _values_and_vjp(plain, *args)


def _case_id(case: tuple) -> str:
    shape, channel, *seed = case
    return "x".join(map(str, shape)) + f"-c{channel}" + "".join(f"-s{s}" for s in seed)


@pytest.mark.parametrize(
    ("case", "variant"),
    with_variants([(*c, seed) for seed in range(2) for c in CASES], _case_id),
)
def test_values_and_gradients_equal_autodiff_of_the_formula_float64(variant, case):
    shape, channel, seed = case
    with jax.enable_x64(True):
        x, weight, bias, cots = _draw(seed, shape, channel, np.float64)
        axes, eps = _axes(shape, channel), 1e-5
        (got, got_grads), (want, want_grads) = _rule_and_formula(x, weight, bias, cots, axes, eps)
        if variant is not jax.jit:  # the rule un-jitted (the formula stays the jitted one)
            got, got_grads = _values_and_vjp(batch_norm_train, x, weight, bias, cots, axes, eps)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
        for g, w in zip(got_grads, want_grads, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, channel", CASES[::2])
def test_forward_mode_equals_autodiff_of_the_formula_float64(shape, channel):
    with jax.enable_x64(True):
        x, weight, bias, _ = _draw(7, shape, channel, np.float64)
        rng = np.random.default_rng(8)
        tangents = tuple(rng.standard_normal(np.shape(a)) for a in (x, weight, bias))
        axes, eps = _axes(shape, channel), 1e-5

        @jax.jit  # both tangents: one program
        def tangents_of(primals, tangents):
            def jvp(fn):
                return jax.jvp(lambda *a: fn(*a, axes, eps), primals, tangents)[1]

            return jvp(batch_norm_train), jvp(plain)

        got, want = tangents_of((x, weight, bias), tangents)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("shape, channel", [((3, 2, 3, 4), 1), ((3, 4, 3, 2), 3)])
def test_numerical_gradients_in_both_modes_to_second_order(shape, channel):
    with jax.enable_x64(True):
        x, weight, bias, _ = _draw(3, shape, channel, np.float64)
        axes = _axes(shape, channel)

        def f(x, w, b):
            y, mean, var = batch_norm_train(x, w, b, axes, 1e-3)
            return jnp.sum(jnp.sin(y)) + jnp.sum(mean * var)

        # jitted: the numerical check calls f dozens of times, each a dispatch of every op
        check_grads(
            jax.jit(f), (x, weight, bias), order=2, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5
        )


def _torch_grads(torch, x, weight, bias, channel, eps, g):
    """PyTorch's batch norm (training) outputs and the gradients of ``sum(y * g)``."""
    perm = (0, channel, *(a for a in range(1, x.ndim) if a != channel))  # to channels first
    inv = tuple(np.argsort(perm))
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    ty = torch.nn.functional.batch_norm(
        tx.permute(*perm), None, None, tw, tb, training=True, eps=eps
    ).permute(*inv)
    (ty * torch.tensor(g)).sum().backward()
    return ty.detach().numpy(), tx.grad.numpy(), tw.grad.numpy(), tb.grad.numpy()


def _float32_grads(fn, x, weight, bias, axes, eps, g):
    """``fn``'s outputs and the gradients of ``sum(y * g)`` (the statistics' cotangents 0)."""
    (y, _, _), pullback = jax.vjp(lambda *a: fn(*a, axes, eps), x, weight, bias)
    zeros = jnp.zeros_like(weight)
    return y, *pullback((g, zeros, zeros))


@pytest.mark.parametrize(("case", "variant"), with_variants(CASES, _case_id))
def test_equals_torch_batch_norm_backward_float32(torch, variant, case):
    shape, channel = case
    x, weight, bias, (g, _, _) = _draw(11, shape, channel, np.float32)
    axes, eps = _axes(shape, channel), 1e-5
    got = variant(lambda *a: _float32_grads(batch_norm_train, *a, axes, eps, g))(x, weight, bias)
    want = _torch_grads(torch, x, weight, bias, channel, eps, g)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("shape, channel", CASES)
def test_large_means_are_as_accurate_as_torch_float32(torch, shape, channel):
    """Inputs near 1000 with spread 3: float32 loses digits in every implementation; against
    float64 on the same inputs, the rule's outputs and gradients stay within a few times the
    error of PyTorch's (or of autodiff of the plain formula, whichever is larger)."""
    x, weight, bias, (g, _, _) = _draw(11, shape, channel, np.float32, offset=1000.0)
    axes, eps = _axes(shape, channel), 1e-5
    # jitted: un-jitted, every primitive of the formula's derivative compiles on its own
    got, autodiff = jax.jit(
        lambda *a: tuple(_float32_grads(fn, *a, axes, eps, g) for fn in (batch_norm_train, plain))
    )(x, weight, bias)
    torch_out = _torch_grads(torch, x, weight, bias, channel, eps, g)
    with jax.enable_x64(True):
        args = [a.astype(np.float64) for a in (x, weight, bias, g)]
        exact = jax.jit(lambda x, w, b, g: _float32_grads(plain, x, w, b, axes, eps, g))(*args)

    def error(a, t):
        t = np.asarray(t)
        return float(np.max(np.abs(np.asarray(a, np.float64) - t)) / np.max(np.abs(t)))

    for mine, ref_a, ref_t, t in zip(got, autodiff, torch_out, exact, strict=True):
        assert error(mine, t) <= 4 * max(error(ref_a, t), error(ref_t, t)) + 1e-6


def test_jit_does_not_retrace():
    x, weight, bias, _ = _draw(0, (4, 3, 5, 6), 1, np.float32)
    traces = []

    @jax.jit
    def f(x, w, b):
        traces.append(1)
        return jax.grad(lambda *a: jnp.sum(batch_norm_train(*a, (0, 2, 3), 1e-5)[0] ** 2))(x, w, b)

    f(x, weight, bias)
    f(x + 1, weight, bias)
    assert len(traces) == 1


@pytest.mark.parametrize("layout, shape", [("NCHW", (4, 3, 5, 6)), ("NHWC", (4, 5, 6, 3))])
def test_module_running_statistics_and_gradients_follow_the_formula(variant, layout, shape):
    """BatchNorm2d in training: the running statistics (torch's update, unbiased variance)
    and the parameter gradients as the float64 formula gives them, in both layouts; and
    forward mode through the module."""
    from jaxconv import nn as jnn

    channel = 1 if layout == "NCHW" else 3
    x, weight, bias, (g, _, _) = _draw(5, shape, channel, np.float32)
    layer = jnn.BatchNorm2d(shape[channel], layout=layout)
    variables = layer.init(jax.random.key(0), x)
    variables = {"params": {"weight": weight, "bias": bias}, **variables}
    variables.pop("batch_stats")
    variables["batch_stats"] = {
        "running_mean": jnp.full(weight.shape, 0.5, jnp.float32),
        "running_var": jnp.full(weight.shape, 2.0, jnp.float32),
        "num_batches_tracked": jnp.asarray(3, jnp.int32),
    }

    def loss(params, x):
        y, updates = layer.apply(
            {**variables, "params": params}, x, train=True, mutable=["batch_stats"]
        )
        return jnp.sum(y * g), updates["batch_stats"]

    (_, stats), grads = variant(jax.value_and_grad(loss, has_aux=True))(variables["params"], x)
    axes = _axes(shape, channel)
    x64 = x.astype(np.float64)
    mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    count = x.size // weight.size
    np.testing.assert_allclose(stats["running_mean"], 0.9 * 0.5 + 0.1 * mean, rtol=1e-6)
    np.testing.assert_allclose(
        stats["running_var"], 0.9 * 2.0 + 0.1 * var * count / (count - 1), rtol=1e-6
    )
    assert int(stats["num_batches_tracked"]) == 4
    xhat = (x64 - np.expand_dims(mean, axes)) / np.sqrt(np.expand_dims(var, axes) + 1e-5)
    np.testing.assert_allclose(grads["weight"], np.sum(g * xhat, axis=axes), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grads["bias"], np.sum(g, axis=axes), rtol=1e-5, atol=1e-5)
    tx = np.random.default_rng(6).standard_normal(shape).astype(np.float32)
    apply = lambda x: layer.apply(variables, x, train=True, mutable=["batch_stats"])[0]  # noqa: E731
    _, got = jax.jvp(variant(apply), (x,), (tx,))
    with jax.enable_x64(True):  # the float64 formula's tangent, jitted (the oracle)
        p = variables["params"]
        _, want = jax.jit(lambda x, t: jax.jvp(
            lambda x: plain(x, p["weight"].astype(np.float64), p["bias"].astype(np.float64),
                            axes, 1e-5)[0],
            (x,), (t,),
        ))(x64, tx.astype(np.float64))  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
