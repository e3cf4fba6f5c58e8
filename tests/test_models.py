"""jaxconv.models: the learnable Conv2D (6.2.2, 6.2.4) and LeNet (6.6), against PyTorch."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import models, reference
from jaxconv.conv import corr2d
from jaxconv.models import (
    INPUT_SHAPE,
    VARIANTS,
    Conv2D,
    LeNet,
    count_params,
    format_summary,
    learn_kernel,
    lenet_summary,
)

# The compiled LeNet programs are cached per process: with `--dist loadgroup` (pyproject's
# addopts) one worker runs this file and compiles each once.
pytestmark = pytest.mark.xdist_group("test_models")

# Chapter 6.6's printout, (N, C, H, W).
BOOK_SHAPES = [
    (1, 6, 28, 28), (1, 6, 28, 28), (1, 6, 14, 14),
    (1, 16, 10, 10), (1, 16, 10, 10), (1, 16, 5, 5),
    (1, 400), (1, 120), (1, 120), (1, 84), (1, 84), (1, 10),
]  # fmt: skip
BOOK_NAMES = {
    "classic": ["Conv2d", "Sigmoid", "AvgPool2d", "Conv2d", "Sigmoid", "AvgPool2d", "Flatten",
                "Linear", "Sigmoid", "Linear", "Sigmoid", "Linear"],
    "modern": ["Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
               "Linear", "ReLU", "Linear", "ReLU", "Linear"],
}  # fmt: skip


@functools.cache
def _jitted_init(model: LeNet):
    """``seed -> model.init(PRNGKey(seed), zeros(INPUT_SHAPE))``, jitted once per model (the
    seed traced: every seed runs the one compiled program)."""
    return jax.jit(
        lambda s: model.init(jax.random.PRNGKey(s), jnp.zeros(INPUT_SHAPE)),
    )


@functools.cache
def _jitted_apply(model: LeNet):
    """``jax.jit(model.apply)``, one per model: tests of one batch shape share its compile."""
    return jax.jit(model.apply)


def _params(model: LeNet, seed: int = 0):
    """``model.init(PRNGKey(seed), zeros(INPUT_SHAPE))["params"]``, jitted (fast to build)."""
    return _jitted_init(model)(seed)["params"]


def _init(variant: str, seed: int = 0):
    return _params(LeNet(variant), seed)


#: The batch of the LeNet tests' inputs: one shape, so eager calls and ``_jitted_apply``
#: compile once for all of them.
BATCH = 5


# --------------------------------------------------------------------------- LeNet


@pytest.mark.parametrize("variant", VARIANTS)
def test_lenet_output_shape_eager_and_jit(variant, rng):
    model = LeNet(variant)
    params = _init(variant)
    x = jnp.asarray(rng.random((BATCH, 28, 28, 1), dtype=np.float32))
    eager = model.apply({"params": params}, x)
    jitted = _jitted_apply(model)({"params": params}, x)
    assert eager.shape == (BATCH, 10) and eager.dtype == jnp.float32
    np.testing.assert_allclose(eager, jitted, rtol=1e-5, atol=1e-6)
    # (N, 28, 28) without the channel axis is the same input.
    np.testing.assert_array_equal(_jitted_apply(model)({"params": params}, x[..., 0]), jitted)


@pytest.mark.parametrize("variant", VARIANTS)
def test_lenet_layouts_agree(variant, rng):
    """CHWN activations inside (the CPU training default): the same params, the same
    function and gradients as NHWC, eager and jitted."""
    params = _init(variant)
    x = jnp.asarray(rng.random((BATCH, 28, 28, 1), dtype=np.float32))
    nhwc, chwn = LeNet(variant, layout="NHWC"), LeNet(variant, layout="CHWN")
    chwn_params = jax.eval_shape(_jitted_init(chwn), 0)["params"]  # its init, traced only
    assert chex.assert_trees_all_equal_shapes(params, chwn_params) is None

    def grads(model, p):
        loss = lambda p: jnp.sum(jnp.sin(model.apply({"params": p}, x)))  # noqa: E731
        return jax.grad(loss)(p)

    @jax.jit  # CHWN's output and both layouts' gradients: one compiled program
    def chwn_and_grads(p):
        return chwn.apply({"params": p}, x), grads(chwn, p), grads(nhwc, p)

    y_chwn, g_chwn, g_nhwc = chwn_and_grads(params)
    np.testing.assert_allclose(y_chwn, nhwc.apply({"params": params}, x), rtol=1e-5, atol=1e-5)
    chex.assert_trees_all_close(g_chwn, g_nhwc, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="layout must be one of"):
        LeNet(variant, layout="NCHW")
    with pytest.raises(ValueError, match="layout must be one of"):
        LeNet(variant, layout=None)  # one meaning: the model's default is NHWC, spelled out


@pytest.mark.parametrize("variant", VARIANTS)
def test_summary_matches_the_chapter(variant):
    rows = lenet_summary(variant)
    assert [name for name, _ in rows] == BOOK_NAMES[variant]
    assert [shape for _, shape in rows] == BOOK_SHAPES
    nhwc = [shape for _, shape in lenet_summary(variant, batch=3, layout="NHWC")]
    assert nhwc[0] == (3, 28, 28, 6) and nhwc[5] == (3, 5, 5, 16) and nhwc[-1] == (3, 10)
    table = format_summary(rows).splitlines()
    assert len(table) == 12
    assert table[0].startswith("Conv2d output shape:") and table[0].endswith("(1, 6, 28, 28)")


def test_param_shapes_and_count():
    params = _init("classic")
    # The init compiled once with the seed traced is model.init of PRNGKey(seed): here jitted
    # with the key an argument, compiled alike (un-jitted, init compiles every primitive).
    init = jax.jit(LeNet("classic").init)
    chex.assert_trees_all_equal(
        params, init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    )
    shapes = jax.tree.map(jnp.shape, params)
    assert shapes["conv1"] == {"kernel": (5, 5, 1, 6), "bias": (6,)}  # HWIO
    assert shapes["conv2"] == {"kernel": (5, 5, 6, 16), "bias": (16,)}
    assert shapes["dense1"]["kernel"] == (400, 120)
    assert count_params(params) == 61_706  # PyTorch's LeNet has the same count


def test_init_is_xavier_uniform_with_torch_fans(torch):
    """Bounds sqrt(6 / (fan_in + fan_out)) with PyTorch's fans (the book's xavier_uniform_)."""
    params = _init("classic", seed=3)
    for name, torch_shape in (
        ("conv1", (6, 1, 5, 5)),  # PyTorch's OIHW and (out, in) shapes: its fans
        ("conv2", (16, 6, 5, 5)),
        ("dense1", (120, 400)),
        ("dense3", (10, 84)),
    ):
        fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(torch_shape))
        bound = np.sqrt(6.0 / (fan_in + fan_out))
        w = np.asarray(params[name]["kernel"])
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.9 * bound  # spread over the whole interval
        np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.15)
        assert not np.any(params[name]["bias"])


def _torch_lenet(torch, variant: str, params) -> object:
    """The book's nn.Sequential LeNet carrying ``params`` (NHWC/HWIO -> NCHW/OIHW)."""
    nn = torch.nn
    act = nn.Sigmoid if variant == "classic" else nn.ReLU
    pool = nn.AvgPool2d if variant == "classic" else nn.MaxPool2d
    net = nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2), act(), pool(kernel_size=2, stride=2),
        nn.Conv2d(6, 16, kernel_size=5), act(), pool(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, 10),
    )  # fmt: skip

    def t(a):
        return torch.from_numpy(np.array(a, dtype=np.float64))

    with torch.no_grad():
        for i, name in ((0, "conv1"), (3, "conv2")):
            net[i].weight.copy_(t(np.transpose(params[name]["kernel"], (3, 2, 0, 1))))
            net[i].bias.copy_(t(params[name]["bias"]))
        # Flax flattens (h, w, c), PyTorch (c, h, w): permute dense1's input rows.
        w1 = np.asarray(params["dense1"]["kernel"]).reshape(5, 5, 16, 120)
        net[7].weight.copy_(t(w1.transpose(3, 2, 0, 1).reshape(120, 400)))
        net[7].bias.copy_(t(params["dense1"]["bias"]))
        for i, name in ((9, "dense2"), (11, "dense3")):
            net[i].weight.copy_(t(np.asarray(params[name]["kernel"]).T))
            net[i].bias.copy_(t(params[name]["bias"]))
    return net.double()


@pytest.mark.parametrize("variant", VARIANTS)
def test_lenet_matches_pytorch(variant, torch, rng):
    model = LeNet(variant)
    params = jax.tree.map(
        lambda p: np.asarray(p) + np.float32(0.1) * rng.standard_normal(p.shape, np.float32),
        _init(variant, seed=1),
    )  # non-zero biases too (drawn in NumPy: no JAX program per parameter shape)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    ours = _jitted_apply(model)({"params": params}, jnp.asarray(x))
    net = _torch_lenet(torch, variant, params)
    if variant == "modern":  # standardizes its input first (LeNet.standardize)
        x = (x - models.FASHION_MNIST_MEAN) / models.FASHION_MNIST_STD
    theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float64))).detach().numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="'lenet5'"):
        LeNet("lenet5")
    with pytest.raises(ValueError, match="variant"):
        lenet_summary("resnet")
    with pytest.raises(ValueError, match="layout"):
        lenet_summary("classic", layout="CHWN")


# --------------------------------------------------------------------------- Conv2D


def test_conv2d_layer_is_corr2d_plus_bias(variant, rng):
    layer = Conv2D((2, 3))
    X = rng.standard_normal((6, 7)).astype(np.float32)
    params = layer.init(jax.random.PRNGKey(0), X)["params"]
    w = np.asarray(params["weight"])
    assert w.shape == (2, 3) and params["bias"].shape == ()
    assert w.min() >= 0 and w.max() < 1 and np.unique(w).size == 6  # torch.rand: U[0, 1)
    params = {**params, "bias": jnp.float32(0.7)}
    out = variant(layer.apply)({"params": params}, X)
    assert out.shape == (5, 5)
    np.testing.assert_allclose(out, reference.corr2d(X, w) + 0.7, rtol=1e-5, atol=1e-5)


def test_conv2d_learns_the_edge_kernel():
    """Chapter 6.2.4: from X and Y = corr2d(X, [[1, -1]]), 10 steps find about [1, -1]."""
    X = np.ones((6, 8), np.float32)
    X[:, 2:6] = 0.0
    Y = corr2d(X, jnp.array([[1.0, -1.0]]))
    # three seeds at once (vmapped, one compiled program), then one long run
    by_seed = jax.jit(jax.vmap(lambda s: learn_kernel(X, Y, (1, 2), seed=s, steps=10)))
    all_params, all_losses = by_seed(jnp.arange(3))
    for seed in range(3):
        losses = np.asarray(all_losses[seed])
        assert losses[-1] < 0.1 * losses[0] and losses[-1] < 1.5
        assert all(b < a for a, b in zip(losses, losses[1:], strict=False))
        np.testing.assert_allclose(all_params["weight"][seed], [[1.0, -1.0]], atol=0.1)
    params, _ = jax.jit(lambda: learn_kernel(X, Y, (1, 2), steps=60))()
    np.testing.assert_allclose(params["weight"], [[1.0, -1.0]], atol=1e-3)


def test_learn_kernel_is_plain_gradient_descent(rng):
    """From a given start, ``learn_kernel`` is the book's loop: w -= lr * grad of the summed
    squared error (float64 NumPy, the gradient by hand), vmappable over starts."""
    X = rng.standard_normal((5, 7))
    Y = reference.corr2d(X, np.array([[0.5, -2.0, 1.0]]))
    starts = rng.uniform(-1, 1, (4, 1, 3))
    learned = jax.vmap(lambda w: learn_kernel(X, Y, (1, 3), steps=5, learning_rate=0.01,
                                              init_weight=w))  # fmt: skip
    params, losses = jax.jit(learned)(jnp.asarray(starts, jnp.float32))
    for i, w in enumerate(starts):
        expected = []
        for _ in range(5):
            err = reference.corr2d(X, w) - Y  # (5, 5)
            expected.append(np.sum(err**2))
            grad = np.array([[np.sum(2 * err * X[:, j : j + 5]) for j in range(3)]])
            w = w - 0.01 * grad
        np.testing.assert_allclose(losses[i], expected, rtol=1e-4)
        np.testing.assert_allclose(params["weight"][i], w, rtol=1e-4, atol=1e-5)
        assert float(params["bias"][i]) == 0.0
