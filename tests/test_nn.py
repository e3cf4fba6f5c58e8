"""jaxconv.nn against torch.nn: the same layer with the same weights gives the same output
(batch norm also the same running statistics), and initial parameters follow torch's rule."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import nn as jnn

ROOT = Path(__file__).resolve().parents[1]


def _t2j(t) -> jnp.ndarray:
    return jnp.asarray(t.detach().numpy())


def _conv_variables(tconv) -> dict:
    params = {"weight": _t2j(tconv.weight)}
    if tconv.bias is not None:
        params["bias"] = _t2j(tconv.bias)
    return {"params": params}


# --- initialisation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "make, fan_in",
    [
        (lambda: jnn.Conv2d(16, 32, 3), 16 * 9),
        (lambda: jnn.Conv2d(12, 24, (5, 3), groups=3), 4 * 15),
        (lambda: jnn.Linear(300, 200), 300),
    ],
)
def test_init_follows_torch_rule(torch, make, fan_in):
    """Weights and biases uniform in +-1/sqrt(fan_in) (torch's kaiming_uniform(a=sqrt(5)) and
    bias rule): inside the bound, reaching close to it, with a uniform's spread; torch's
    own layer of the same shape has the same spread."""
    layer = make()
    x = jnp.ones((1, layer.in_channels, 8, 8)) if isinstance(layer, jnn.Conv2d) else jnp.ones(300)
    params = layer.init(jax.random.key(0), x)["params"]
    bound = 1 / np.sqrt(fan_in)
    if isinstance(layer, jnn.Conv2d):
        tlayer = torch.nn.Conv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, groups=layer.groups
        )
    else:
        tlayer = torch.nn.Linear(300, 200)
    for name in ("weight", "bias"):
        w = np.asarray(params[name])
        tw = getattr(tlayer, name).detach().numpy()
        assert w.shape == tw.shape
        assert np.abs(w).max() <= bound
        assert np.abs(w).max() > 0.9 * bound or w.size < 50
        if w.size >= 200:  # a uniform on [-b, b] has std b / sqrt(3)
            np.testing.assert_allclose(w.std(), bound / np.sqrt(3), rtol=0.15)
            np.testing.assert_allclose(w.std(), tw.std(), rtol=0.15)


def test_batchnorm_init(torch):
    v = jnn.BatchNorm2d(5).init(jax.random.key(0), jnp.ones((2, 5, 3, 3)))
    t = torch.nn.BatchNorm2d(5)
    for coll, name in [
        ("params", "weight"),
        ("params", "bias"),
        ("batch_stats", "running_mean"),
        ("batch_stats", "running_var"),
        ("batch_stats", "num_batches_tracked"),
    ]:
        np.testing.assert_array_equal(v[coll][name], getattr(t, name).detach().numpy())


# --- equal outputs -----------------------------------------------------------------------

CONV_CASES = [
    dict(in_channels=3, out_channels=4, kernel_size=3),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding="same", dilation=2, groups=2),
    dict(in_channels=2, out_channels=3, kernel_size=5, padding="valid", bias=False),
    dict(in_channels=3, out_channels=3, kernel_size=3, padding=(2, 1), groups=3, stride=(1, 2)),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=2, padding_mode="reflect"),
    dict(in_channels=2, out_channels=4, kernel_size=3, padding=1, padding_mode="replicate"),
    dict(
        in_channels=2, out_channels=4, kernel_size=(3, 4), padding="same", padding_mode="circular"
    ),
]


@pytest.mark.parametrize(
    "kw", CONV_CASES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())
)
@pytest.mark.parametrize("batched", [True, False])
def test_conv2d_equals_torch(torch, kw, batched):
    rng = np.random.default_rng(0)
    tconv = torch.nn.Conv2d(**kw)
    layer = jnn.Conv2d(**kw)
    shape = (2, kw["in_channels"], 9, 8) if batched else (kw["in_channels"], 9, 8)
    x = rng.standard_normal(shape).astype(np.float32)
    want = tconv(torch.tensor(x)).detach().numpy()
    variables = _conv_variables(tconv)
    assert jax.tree_util.tree_map(jnp.shape, variables) == jax.tree_util.tree_map(
        jnp.shape, layer.init(jax.random.key(0), x)
    )
    for run in (layer.apply, jax.jit(layer.apply)):
        np.testing.assert_allclose(run(variables, x), want, rtol=1e-5, atol=1e-5)


def test_linear_flatten_activations_equal_torch(torch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4, 5, 6)).astype(np.float32)
    tx = torch.tensor(x)
    np.testing.assert_array_equal(jnn.Flatten().apply({}, x), torch.nn.Flatten()(tx).numpy())
    np.testing.assert_array_equal(
        jnn.Flatten(0, 2).apply({}, x), torch.nn.Flatten(0, 2)(tx).numpy()
    )
    tlin = torch.nn.Linear(6, 7)
    variables = {"params": {"weight": _t2j(tlin.weight), "bias": _t2j(tlin.bias)}}
    np.testing.assert_allclose(
        jnn.Linear(6, 7).apply(variables, x), tlin(tx).detach().numpy(), rtol=1e-5, atol=1e-6
    )
    tlin = torch.nn.Linear(6, 7, bias=False)
    np.testing.assert_allclose(
        jnn.Linear(6, 7, bias=False).apply({"params": {"weight": _t2j(tlin.weight)}}, x),
        tlin(tx).detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )
    for ours, theirs in [
        (jnn.ReLU(), torch.nn.ReLU()),
        (jnn.Sigmoid(), torch.nn.Sigmoid()),
        (jnn.Tanh(), torch.nn.Tanh()),
        (jnn.Identity(), torch.nn.Identity()),
    ]:
        np.testing.assert_allclose(ours.apply({}, x), theirs(tx).numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("MaxPool2d(3, 2, 1)", "MaxPool2d(3, 2, 1)"),
        ("MaxPool2d(2, ceil_mode=True)", "MaxPool2d(2, ceil_mode=True)"),
        ("MaxPool2d(3, 1, dilation=2, return_indices=True)",) * 2,
        ("AvgPool2d(2, 2)",) * 2,
        ("AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)",) * 2,
        ("AvgPool2d(3, divisor_override=2)",) * 2,
        ("AdaptiveAvgPool2d((1, 1))",) * 2,
        ("AdaptiveAvgPool2d((3, None))",) * 2,
        ("AdaptiveMaxPool2d(4, return_indices=True)",) * 2,
    ],
)
def test_pool_layers_equal_torch(torch, ours, theirs):
    x = np.random.default_rng(2).permutation(2 * 3 * 9 * 7).astype(np.float32).reshape(2, 3, 9, 7)
    got = eval(f"jnn.{ours}").apply({}, x)  # noqa: S307 (fixed strings above)
    want = eval(f"torch.nn.{theirs}")(torch.tensor(x))  # noqa: S307
    got, want = (got, want) if isinstance(got, tuple) else ((got,), (want,))
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-6, atol=1e-6)


def test_adaptive_1d_3d_layers_equal_torch(torch):
    rng = np.random.default_rng(3)
    x1 = rng.standard_normal((2, 3, 11)).astype(np.float32)
    x3 = rng.standard_normal((2, 3, 5, 6, 7)).astype(np.float32)
    pairs = [
        (jnn.AdaptiveAvgPool1d(4), torch.nn.AdaptiveAvgPool1d(4), x1),
        (jnn.AdaptiveMaxPool1d(4), torch.nn.AdaptiveMaxPool1d(4), x1),
        (jnn.AdaptiveAvgPool3d((2, None, 3)), torch.nn.AdaptiveAvgPool3d((2, None, 3)), x3),
        (jnn.AdaptiveMaxPool3d(3), torch.nn.AdaptiveMaxPool3d(3), x3),
    ]
    for ours, theirs, x in pairs:
        want = theirs(torch.tensor(x)).numpy()
        np.testing.assert_allclose(ours.apply({}, x), want, rtol=1e-6, atol=1e-6)


# --- batch norm --------------------------------------------------------------------------

BN_CASES = [
    ("BatchNorm1d", (8, 5), {}),
    ("BatchNorm1d", (4, 5, 3), {"momentum": 0.3}),
    ("BatchNorm2d", (3, 5, 4, 4), {}),
    ("BatchNorm2d", (2, 5, 3, 2), {"momentum": None}),
    ("BatchNorm2d", (2, 5, 3, 3), {"affine": False}),
    ("BatchNorm2d", (2, 5, 3, 3), {"track_running_stats": False}),
    ("BatchNorm3d", (2, 5, 2, 3, 2), {"eps": 1e-3}),
]


def _bn_variables(tbn) -> dict:
    variables = {}
    if tbn.affine:
        variables["params"] = {"weight": _t2j(tbn.weight), "bias": _t2j(tbn.bias)}
    if tbn.track_running_stats:
        variables["batch_stats"] = {
            "running_mean": _t2j(tbn.running_mean),
            "running_var": _t2j(tbn.running_var),
            "num_batches_tracked": jnp.asarray(tbn.num_batches_tracked.numpy(), jnp.int32),
        }
    return variables


@pytest.mark.parametrize("cls, shape, kw", BN_CASES, ids=lambda v: str(v))
def test_batchnorm_equals_torch(torch, cls, shape, kw):
    """Three training steps (outputs, running statistics, counter) and then evaluation, from
    random affine parameters and random running statistics."""
    rng = np.random.default_rng(4)
    c = shape[1]
    tbn = getattr(torch.nn, cls)(c, **kw)
    with torch.no_grad():
        if tbn.affine:
            tbn.weight.copy_(torch.tensor(rng.uniform(0.5, 2, c)))
            tbn.bias.copy_(torch.tensor(rng.standard_normal(c)))
        if tbn.track_running_stats:
            tbn.running_mean.copy_(torch.tensor(rng.standard_normal(c)))
            tbn.running_var.copy_(torch.tensor(rng.uniform(0.5, 2, c)))
    layer = getattr(jnn, cls)(c, **kw)
    variables = _bn_variables(tbn)
    step = jax.jit(lambda v, x: layer.apply(v, x, train=True, mutable=["batch_stats"]))
    tbn.train()
    for _ in range(3):
        x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
        want = tbn(torch.tensor(x)).detach().numpy()
        if tbn.track_running_stats:
            y, updates = step(variables, x)
            variables = {**variables, **updates}
        else:
            y = layer.apply(variables, x, train=True)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-5)
        for name, value in _bn_variables(tbn).get("batch_stats", {}).items():
            np.testing.assert_allclose(variables["batch_stats"][name], value, rtol=1e-5, atol=1e-6)
    tbn.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    np.testing.assert_allclose(
        layer.apply(variables, x), tbn(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5
    )


def test_batchnorm_init_does_not_update():
    layer = jnn.BatchNorm2d(3)
    x = jnp.arange(2 * 3 * 2 * 2, dtype=jnp.float32).reshape(2, 3, 2, 2)
    stats = layer.init(jax.random.key(0), x, train=True)["batch_stats"]
    np.testing.assert_array_equal(stats["running_mean"], np.zeros(3))
    assert int(stats["num_batches_tracked"]) == 0


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from jaxconv import nn as jnn
    assert jax.device_count() == 4, jax.devices()
    net = jnn.Sequential((jnn.Conv2d(2, 4, 3), jnn.BatchNorm2d(4), jnn.ReLU(), jnn.Flatten(),
                          jnn.Linear(4 * 6 * 6, 3), jnn.BatchNorm1d(3)))
    x = np.random.default_rng(0).standard_normal((8, 2, 8, 8)).astype(np.float32) * 2 + 1
    v = net.init(jax.random.key(0), x)
    step = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))
    y1, s1 = step(v, jax.device_put(x, jax.devices()[0]))
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    xs = jax.device_put(x, NamedSharding(mesh, P("batch")))
    assert len(xs.sharding.device_set) == 4
    y4, s4 = step(v, xs)
    np.testing.assert_allclose(y4, y1, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(s4), jax.tree_util.tree_leaves(s1)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and per-shard statistics would differ: the test can fail
    part = net.apply(v, x[:2], train=True, mutable=["batch_stats"])[1]
    assert not np.allclose(part["batch_stats"]["1"]["running_mean"],
                           s1["batch_stats"]["1"]["running_mean"])
    print("OK")
    """
)


def test_batchnorm_statistics_over_sharded_batch():
    """Four CPU devices, the batch sharded over them: the same outputs and running statistics
    as one device (the mean over the batch axis is the global one under jit)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    ).strip()
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


# --- dropout, containers -----------------------------------------------------------------


def test_dropout():
    x = jnp.ones((200, 100))
    layer = jnn.Dropout(0.3)
    np.testing.assert_array_equal(layer.apply({}, x), x)
    y = np.asarray(layer.apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}))
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)
    np.testing.assert_array_equal(
        jnn.Dropout(1.0).apply({}, x, train=True, rngs={"dropout": jax.random.key(0)}), 0 * x
    )


def test_sequential_names_layers_by_position():
    net = jnn.Sequential(
        (jnn.Conv2d(1, 2, 3), jnn.ReLU(), jnn.Sequential((jnn.BatchNorm2d(2), jnn.Dropout())))
    )
    v = net.init(jax.random.key(0), jnp.ones((2, 1, 5, 5)))
    assert set(v["params"]) == {"0", "2"} and set(v["params"]["2"]) == {"0"}
    assert set(v["batch_stats"]["2"]["0"]) == {"running_mean", "running_var", "num_batches_tracked"}


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda: jnn.Conv2d(3, 4, 3, groups=2), ValueError, "in_channels"),
        (lambda: jnn.Conv2d(4, 6, 3, groups=4), ValueError, "out_channels"),
        (lambda: jnn.Conv2d(4, 6, 3, padding_mode="mirror"), ValueError, "padding_mode"),
        (lambda: jnn.Conv2d(4, 6, 3, stride=2, padding="same"), ValueError, "same"),
        (lambda: jnn.Conv2d(4, 6, 3, padding="full"), ValueError, "padding"),
        (lambda: jnn.Conv2d(4, 6, 3, padding=-1), ValueError, "padding"),
        (lambda: jnn.Conv2d(4, 6, (3, 3, 3)), TypeError, "kernel_size"),
        (lambda: jnn.Conv2d(4, 6, 0), ValueError, "kernel_size"),
        (lambda: jnn.Conv2d(4, 6, 3, stride=1.5), TypeError, "stride"),
        (lambda: jnn.Dropout(1.5), ValueError, "p"),
    ],
)
def test_construction_errors(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_call_errors():
    with pytest.raises(ValueError, match="4-D"):
        jnn.BatchNorm2d(3).init(jax.random.key(0), jnp.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="num_features"):
        jnn.BatchNorm1d(3).init(jax.random.key(0), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="more than 1 value"):
        jnn.BatchNorm1d(3).init(jax.random.key(0), jnp.ones((1, 3)), train=True)
    with pytest.raises(ValueError, match="in_features=6"):
        jnn.Linear(6, 2).init(jax.random.key(0), jnp.ones((2, 5)))
