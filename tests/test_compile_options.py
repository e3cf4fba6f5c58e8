"""``jaxconv.jit`` and the XLA compile options of the programs jaxconv compiles itself
(:func:`jaxconv.kernels.dispatch.compiler_options`: training's epoch and evaluation, the
benchmark's jaxconv rows).

On CPU the options make XLA run 2-D convolutions with its own kernels instead of YNNPACK's.
They must change the kernel only, never the function: under ``jaxconv.jit`` the conv family's
values equal the float64 NumPy reference over seeded random geometries (channel counts YNNPACK
would take), NaN and inf reach the outputs they reach there, gradients equal ``jax.jit``'s
(which the op tests hold to PyTorch), and a ResNet-18 training step agrees compiled both ways.
An option this jaxlib refuses is dropped, not an error.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _conv_helpers import case_arrays, case_geometry, to_last

import jaxconv
from jaxconv import reference as ref
from jaxconv.kernels import dispatch

ON_CPU = jax.default_backend() == "cpu"
cpu_only = pytest.mark.skipif(not ON_CPU, reason="the options are XLA:CPU's")


def ynn_fusions(jitted, *args) -> int:
    """YNNPACK fusions in the program ``jitted`` compiles for ``args``."""
    return jitted.lower(*args).compile().as_text().count("__ynn_fusion")


def test_options_are_set_on_cpu_only():
    if ON_CPU:
        assert dispatch.compiler_options() == dispatch.CPU_COMPILER_OPTIONS
    assert dispatch.compiler_options("gpu") == {}
    assert dispatch.compiler_options("tpu") == {}


@cpu_only
def test_an_option_this_jaxlib_refuses_is_dropped(monkeypatch):
    monkeypatch.setattr(dispatch, "CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option_jc": True})
    assert dispatch.compiler_options() == {}
    x = jnp.ones((2, 3))
    assert float(jaxconv.jit(lambda x: x.sum())(x)) == 6.0


@cpu_only
def test_jit_runs_convolutions_without_ynnpack_and_callers_options_win():
    x, w = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 32))

    def f(x, w):  # the NHWC rule: XLA's convolution (auto would take Winograd's products here)
        return jaxconv.conv2d(x, w, padding=1, layout="NHWC", impl="vjp")

    if ynn_fusions(jax.jit(f), x, w) == 0:
        pytest.skip("this jaxlib does not run the convolution through YNNPACK")
    assert ynn_fusions(jaxconv.jit(f), x, w) == 0
    back = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION"}
    assert ynn_fusions(jaxconv.jit(f, compiler_options=back), x, w) == 1
    assert jaxconv.jit(f, static_argnums=())(x, w).shape == (2, 8, 8, 32)


def _conv_cases(n: int):
    """Seeded 2-D conv geometries with 17-48 channels (YNNPACK takes convs over 16), as
    :func:`_conv_helpers.case_arrays` reads them, and a layout."""
    rng = np.random.default_rng(7)
    for i in range(n):
        groups = int(rng.choice([1, 1, 2]))
        yield dict(
            i=i,
            batch=int(rng.integers(1, 4)),
            c=groups * int(rng.integers(9, 25)),
            o=groups * int(rng.integers(9, 25)),
            size=tuple(int(v) for v in rng.integers(6, 12, 2)),
            k=tuple(int(v) for v in rng.integers(1, 4, 2)),
            bias=True,
            stride=int(rng.integers(1, 3)),
            padding=int(rng.integers(0, 2)),
            dilation=int(rng.integers(1, 3)),
            groups=groups,
            layout=str(rng.choice(["NCHW", "NHWC"])),
        )


@pytest.mark.parametrize("case", list(_conv_cases(8)), ids=lambda c: f"case{c['i']}")
def test_conv2d_under_jaxconv_jit_equals_the_reference_and_jax_jit(case):
    x, w, b = case_arrays(case)
    if case["layout"] == "NHWC":
        x, w = to_last(x, w)
    kw = {**case_geometry(case), "layout": case["layout"]}

    def f(x, w, b):
        return jaxconv.conv2d(x, w, b, **kw)

    args = [jnp.asarray(a, jnp.float32) for a in (x, w, b)]
    want = ref.conv2d(x, w, b, **kw)

    def loss(x, w, b):
        return jnp.sum(f(x, w, b) ** 2)

    def value_and_grads(x, w, b):  # the values and the gradients: one compiled program
        return f(x, w, b), jax.grad(loss, (0, 1, 2))(x, w, b)

    got, grads = jaxconv.jit(value_and_grads)(*args)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    plain = jax.jit(jax.grad(loss, (0, 1, 2)))(*args)
    for g, p in zip(grads, plain, strict=True):
        np.testing.assert_allclose(g, p, rtol=1e-4, atol=1e-4 * float(jnp.abs(p).max()))


def test_nan_and_inf_reach_the_references_outputs():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 24, 9, 9)), rng.standard_normal((32, 24, 3, 3)) / 8
    x[0, 3, 4, 4], x[1, 10, 0, 8], x[1, 20, 6, 2] = np.nan, np.inf, -np.inf
    kw = dict(padding=1, layout="NHWC")
    xl, wl = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    want = ref.conv2d(xl, wl, None, **kw)
    got = jaxconv.jit(lambda x, w: jaxconv.conv2d(x, w, **kw))(xl, wl)
    got = np.asarray(got)
    assert np.isnan(want).any() and np.isinf(want).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    fin = np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("op", "x_shape", "w_shape", "kw"),
    [
        ("conv_transpose2d", (2, 24, 7, 7), (24, 20, 3, 3), dict(stride=2, padding=1,
                                                                output_padding=1)),
        ("conv3d", (2, 20, 6, 7, 7), (24, 20, 3, 3, 3), dict(padding=1)),
        ("conv_transpose3d", (1, 20, 4, 5, 5), (20, 18, 3, 3, 3), dict(stride=2)),
    ],
    ids=["conv_transpose2d", "conv3d", "conv_transpose3d"],
)  # fmt: skip
def test_the_paths_built_on_2d_convs_equal_the_reference(op, x_shape, w_shape, kw):
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape) / 8
    f = getattr(jaxconv, op)
    want = getattr(ref, op)(x, w, None, **kw)
    got = jaxconv.jit(lambda x, w: f(x, w, None, **kw))(x.astype("f4"), w.astype("f4"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_a_resnet18_training_step_is_as_close_to_float64_compiled_both_ways():
    """Loss, gradients and batch statistics of one training-mode step: jaxconv.jit's float32
    values are as close to the float64 step as jax.jit's (XLA's and YNNPACK's kernels sum in
    different orders; batch norm amplifies the rounding, so the yardstick is jax.jit's own
    distance, not a fixed tolerance)."""
    from jaxconv.models import resnet18
    from jaxconv.networks import init_variables

    model = resnet18(layout="NHWC")
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1))
    y = jnp.asarray(rng.integers(0, 10, 4), jnp.int32)
    variables = init_variables(model, 0, x.shape)

    def step(variables, x, y):
        def loss_fn(p):
            logits, new = model.apply(
                {**variables, "params": p}, x, train=True, mutable=["batch_stats"]
            )
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), new

        (loss, new), grads = jax.value_and_grad(loss_fn, has_aux=True)(variables["params"])
        return loss, grads, new["batch_stats"]

    with jax.enable_x64(True):
        as64 = jax.tree.map(lambda a: np.asarray(a, np.float64), variables)  # no JAX programs
        exact = jax.jit(step)(as64, jnp.asarray(x), y)
        exact = jax.device_get(exact)
    args = (variables, jnp.asarray(x, jnp.float32), y)
    ours = jax.device_get(jaxconv.jit(step)(*args))
    plain = jax.device_get(jax.jit(step)(*args))
    leaves = zip(*(jax.tree.leaves(t) for t in (ours, plain, exact)), strict=True)
    for i, (a, b, e) in enumerate(leaves):
        ours_err, plain_err = np.abs(a - e).max(), np.abs(b - e).max()
        assert ours_err <= 4 * plain_err + 1e-5 * max(1.0, np.abs(e).max()), (
            i,
            ours_err,
            plain_err,
        )
