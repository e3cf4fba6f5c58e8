"""jaxconv.nn against torch.nn: the same layer with the same weights gives the same output
(batch norm also the same running statistics), and initial parameters follow torch's rule."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _xla_flags import with_host_devices
from conftest import EAGER_EVERY

from jaxconv import nn as jnn

ROOT = Path(__file__).resolve().parents[1]


def _eager(cases: list, case, batched: bool) -> bool:
    """Whether to run ``case`` of ``cases`` un-jitted too: unbatched, and every
    ``EAGER_EVERY``-th case (all of them under ``JAXCONV_TEST_FULL=1``). Un-jitted JAX
    compiles every primitive of every new shape on its own; the eager cases still cover each
    kind of layer."""
    return not batched and cases.index(case) % EAGER_EVERY == 0


def _t2j(t) -> jnp.ndarray:
    return jnp.asarray(t.detach().numpy())


def _conv_variables(tconv) -> dict:
    params = {"weight": _t2j(tconv.weight)}
    if tconv.bias is not None:
        params["bias"] = _t2j(tconv.bias)
    return {"params": params}


# --- initialisation ----------------------------------------------------------------------


INIT_CASES = [
    # (layer, torch arguments, input shape, fan_in torch's rule gives)
    ("Conv2d", (16, 32, 3), (1, 16, 8, 8), 16 * 9),
    ("Conv2d", (12, 24, (5, 3), 1, 0, 1, 3), (1, 12, 8, 8), 4 * 15),
    ("Conv1d", (16, 32, 5), (1, 16, 9), 16 * 5),
    ("Conv3d", (4, 8, (3, 2, 3), 1, 0, 1, 2), (1, 4, 4, 4, 4), 2 * 18),
    # transposed convs: torch's fan comes from weight axis 1, (C_out // groups) * prod(k), so
    # C_in != C_out // groups here tells the two rules apart (bounds differ by 2x and more).
    ("ConvTranspose1d", (20, 10, 5), (1, 20, 6), 10 * 5),
    ("ConvTranspose2d", (8, 32, 3, 1, 0, 0, 2), (1, 8, 5, 5), 16 * 9),
    ("ConvTranspose3d", (6, 12, 3, 1, 0, 0, 3), (1, 6, 3, 3, 3), 4 * 27),
    ("Linear", (300, 200), (300,), 300),
]


@pytest.mark.parametrize("cls, args, shape, fan_in", INIT_CASES, ids=lambda v: str(v))
def test_init_follows_torch_rule(torch, cls, args, shape, fan_in):
    """Weights and biases uniform in +-1/sqrt(fan_in) (torch's kaiming_uniform(a=sqrt(5)) and
    bias rule): inside the bound, reaching close to it, with a uniform's spread; torch's
    own layer of the same shape has the same spread."""
    layer = getattr(jnn, cls)(*args)
    # compiled as jaxconv compiles a network's init (a program that runs once)
    init = jax.jit(layer.init)
    params = init(jax.random.key(0), jnp.ones(shape))["params"]
    bound = 1 / np.sqrt(fan_in)
    tlayer = getattr(torch.nn, cls)(*args)
    for name in ("weight", "bias"):
        w = np.asarray(params[name])
        tw = getattr(tlayer, name).detach().numpy()
        assert w.shape == tw.shape
        assert np.abs(w).max() <= bound
        assert np.abs(tw).max() <= bound  # the oracle follows the rule the test states
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
        lambda a: a.shape, jax.eval_shape(lambda x: layer.init(jax.random.key(0), x), x)
    )
    # jitted on both, eager on a share of the unbatched calls
    for run in (jax.jit(layer.apply),) + (
        (layer.apply,) if _eager(CONV_CASES, kw, batched) else ()
    ):
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


POOL2D_CASES = [
    ("MaxPool2d(3, 2, 1)", "MaxPool2d(3, 2, 1)"),
    ("MaxPool2d(2, ceil_mode=True)", "MaxPool2d(2, ceil_mode=True)"),
    ("MaxPool2d(3, 1, dilation=2, return_indices=True)",) * 2,
    ("AvgPool2d(2, 2)",) * 2,
    ("AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False)",) * 2,
    ("AvgPool2d(3, divisor_override=2)",) * 2,
    ("AdaptiveAvgPool2d((1, 1))",) * 2,
    ("AdaptiveAvgPool2d((3, None))",) * 2,
    ("AdaptiveMaxPool2d(4, return_indices=True)",) * 2,
]


@pytest.mark.parametrize("ours, theirs", POOL2D_CASES)
def test_pool_layers_equal_torch(torch, ours, theirs):
    """Jitted, and eager on every ``EAGER_EVERY``-th case."""
    x = np.random.default_rng(2).permutation(2 * 3 * 9 * 7).astype(np.float32).reshape(2, 3, 9, 7)
    layer = eval(f"jnn.{ours}")  # noqa: S307 (fixed strings above)
    want = eval(f"torch.nn.{theirs}")(torch.tensor(x))  # noqa: S307
    want = want if isinstance(want, tuple) else (want,)
    eager = POOL2D_CASES.index((ours, theirs)) % EAGER_EVERY == 0
    for run in (jax.jit(layer.apply),) + ((layer.apply,) if eager else ()):
        got = run({}, x)
        got = got if isinstance(got, tuple) else (got,)
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


def _ids(kw: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in kw.items())


def _check_layer(torch, tlayer, layer, x, *call_args, rtol=1e-5, atol=1e-5, eager=True, **call_kw):
    """``layer`` (jitted, and eager where ``eager``) with ``tlayer``'s parameters equals
    ``tlayer`` on ``x``; the variables have the shapes ``layer.init`` makes (traced for their
    shapes only, by ``jax.eval_shape``)."""
    variables = {"params": {k: _t2j(v) for k, v in tlayer.named_parameters()}}
    if not variables["params"]:
        variables = {}
    init = jax.eval_shape(
        lambda x, *a: layer.init(jax.random.key(0), x, *a, **call_kw), x, *call_args
    )
    shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), variables)
    assert shapes == jax.tree_util.tree_map(lambda a: tuple(a.shape), dict(init))
    t_args = [torch.tensor(np.asarray(a)) if isinstance(a, np.ndarray) else a for a in call_args]
    want = tlayer(torch.tensor(x), *t_args, **call_kw)
    want = want if isinstance(want, tuple) else (want,)

    def run(v, x, *a):
        return layer.apply(v, x, *a, **call_kw)

    for f in (run, jax.jit(run)) if eager else (jax.jit(run),):
        got = f(variables, x, *call_args)
        got = got if isinstance(got, tuple) else (got,)
        for g, w in zip(got, want, strict=True):
            assert g.shape == tuple(w.shape)
            np.testing.assert_allclose(g, w.detach().numpy(), rtol=rtol, atol=atol)


CONV_ND_CASES = [
    ("Conv1d", dict(in_channels=3, out_channels=4, kernel_size=3)),
    ("Conv1d", dict(in_channels=4, out_channels=6, kernel_size=4, stride=2, padding=2, groups=2)),
    ("Conv1d", dict(in_channels=2, out_channels=3, kernel_size=3, padding="same", dilation=2)),
    (
        "Conv1d",
        dict(in_channels=2, out_channels=4, kernel_size=3, padding=2, padding_mode="reflect"),
    ),
    ("Conv3d", dict(in_channels=2, out_channels=4, kernel_size=(3, 2, 3), bias=False)),
    (
        "Conv3d",
        dict(in_channels=4, out_channels=4, kernel_size=3, stride=(1, 2, 2), padding=1, groups=4),
    ),  # fmt: skip
    (
        "Conv3d",
        dict(in_channels=2, out_channels=3, kernel_size=2, padding="same", padding_mode="circular"),
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "cls, kw", CONV_ND_CASES, ids=lambda v: v if isinstance(v, str) else _ids(v)
)
@pytest.mark.parametrize("batched", [True, False])
def test_conv1d_conv3d_equal_torch(torch, cls, kw, batched):
    rng = np.random.default_rng(5)
    spatial = (9,) if cls == "Conv1d" else (5, 6, 7)
    shape = ((2,) if batched else ()) + (kw["in_channels"],) + spatial
    x = rng.standard_normal(shape).astype(np.float32)
    eager = _eager(CONV_ND_CASES, (cls, kw), batched)
    _check_layer(torch, getattr(torch.nn, cls)(**kw), getattr(jnn, cls)(**kw), x, eager=eager)


CONV_T_CASES = [
    ("ConvTranspose1d", dict(in_channels=3, out_channels=4, kernel_size=3)),
    (
        "ConvTranspose1d",
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=4,
            stride=3,
            padding=1,
            output_padding=2,
            groups=2,
            dilation=2,
        ),
    ),  # fmt: skip
    (
        "ConvTranspose2d",
        dict(
            in_channels=3,
            out_channels=2,
            kernel_size=(3, 2),
            stride=2,
            padding=(1, 0),
            output_padding=(1, 0),
        ),
    ),  # fmt: skip
    (
        "ConvTranspose2d",
        dict(
            in_channels=4,
            out_channels=6,
            kernel_size=3,
            stride=(2, 1),
            groups=2,
            dilation=(1, 3),
            bias=False,
        ),
    ),  # fmt: skip
    ("ConvTranspose2d", dict(in_channels=2, out_channels=2, kernel_size=2, stride=2)),
    (
        "ConvTranspose3d",
        dict(
            in_channels=2,
            out_channels=3,
            kernel_size=(2, 3, 2),
            stride=2,
            padding=1,
            output_padding=1,
        ),
    ),  # fmt: skip
    (
        "ConvTranspose3d",
        dict(
            in_channels=6,
            out_channels=3,
            kernel_size=2,
            groups=3,
            dilation=2,
            output_padding=1,
            stride=(1, 2, 1),
        ),
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "cls, kw", CONV_T_CASES, ids=lambda v: v if isinstance(v, str) else _ids(v)
)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose_equals_torch(torch, cls, kw, batched):
    rng = np.random.default_rng(6)
    spatial = {"ConvTranspose1d": (7,), "ConvTranspose2d": (5, 4), "ConvTranspose3d": (3, 4, 3)}
    shape = ((2,) if batched else ()) + (kw["in_channels"],) + spatial[cls]
    x = rng.standard_normal(shape).astype(np.float32)
    eager = _eager(CONV_T_CASES, (cls, kw), batched)
    _check_layer(torch, getattr(torch.nn, cls)(**kw), getattr(jnn, cls)(**kw), x, eager=eager)


@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose_output_size_equals_torch(torch, batched):
    """forward(input, output_size): every size torch accepts (spatial sizes or the whole
    shape) picks the output_padding torch picks; ``output_padding`` is then ignored."""
    rng = np.random.default_rng(7)
    kw = dict(in_channels=2, out_channels=4, kernel_size=3, stride=(3, 2), padding=1,
              output_padding=1, groups=2)  # fmt: skip
    tlayer, layer = torch.nn.ConvTranspose2d(**kw), jnn.ConvTranspose2d(**kw)
    x = rng.standard_normal(((2,) if batched else ()) + (2, 4, 5)).astype(np.float32)
    lead = x.shape[:-2][:1] + (4,) if batched else (4,)
    # eager (unbatched) on the first size of each rank: the sizes are resolved before tracing
    for i, size in enumerate([(10, 9), (11, 10), (12, 9), [12, 10]]):
        _check_layer(torch, tlayer, layer, x, output_size=size, eager=not batched and i == 0)
    _check_layer(torch, tlayer, layer, x, output_size=lead + (11, 10), eager=False)
    t1, l1 = torch.nn.ConvTranspose1d(3, 2, 2, stride=4), jnn.ConvTranspose1d(3, 2, 2, stride=4)
    x1 = rng.standard_normal(((2,) if batched else ()) + (3, 5)).astype(np.float32)
    for i, size in enumerate([(18,), (21,)]):
        _check_layer(torch, t1, l1, x1, output_size=size, eager=not batched and i == 0)
    t3 = torch.nn.ConvTranspose3d(2, 2, 2, stride=(2, 3, 1))
    l3 = jnn.ConvTranspose3d(2, 2, 2, stride=(2, 3, 1))
    x3 = rng.standard_normal(((2,) if batched else ()) + (2, 2, 3, 2)).astype(np.float32)
    _check_layer(torch, t3, l3, x3, output_size=(5, 9, 3), eager=not batched)


@functools.cache
def _output_size_layer():
    """(layer, input, variables) of the output_size error cases, initialised once."""
    layer = jnn.ConvTranspose2d(2, 4, 3, stride=(3, 2), padding=1)
    x = jnp.ones((2, 2, 4, 5))
    return layer, x, jax.jit(layer.init)(jax.random.key(0), x)


@pytest.mark.parametrize(
    "size, match",
    [((9, 9), r"valid sizes range from \(10, 9\) to \(12, 10\)"), ((13, 9), "valid sizes"),
     ((10, 11), "valid sizes"),
     ((9,), "must have 2 or 4 elements"), (9, "sequence")],
)  # fmt: skip
def test_conv_transpose_output_size_errors(torch, size, match):
    layer, x, variables = _output_size_layer()
    with pytest.raises((ValueError, TypeError), match=match):
        layer.apply(variables, x, output_size=size)
    if not isinstance(size, int):  # torch refuses the same sizes
        with pytest.raises(ValueError):
            torch.nn.ConvTranspose2d(2, 4, 3, stride=(3, 2), padding=1)(
                torch.ones(2, 2, 4, 5), output_size=list(size)
            )


POOL_CASES = [
    ("MaxPool1d(3, 2, 1)", (9,)),
    ("MaxPool1d(2, ceil_mode=True, dilation=2, return_indices=True)", (10,)),
    ("MaxPool3d(2)", (4, 5, 6)),
    (
        "MaxPool3d((3, 2, 2), (1, 2, 1), (1, 0, 1), dilation=(1, 2, 1), return_indices=True)",
        (5, 6, 4),
    ),  # fmt: skip
    ("MaxPool3d(2, ceil_mode=True)", (3, 5, 4)),
    ("AvgPool1d(3, 2, 1)", (9,)),
    ("AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False)", (10,)),
    ("AvgPool3d(2)", (4, 5, 6)),
    ("AvgPool3d(3, 2, 1, ceil_mode=True, count_include_pad=False)", (5, 6, 4)),
    ("AvgPool3d((2, 3, 2), divisor_override=5)", (4, 6, 4)),
    ("LPPool1d(2, 3)", (10,)),
    ("LPPool1d(1.5, 3, 2, ceil_mode=True)", (10,)),
    ("LPPool2d(2, 2)", (6, 7)),
    ("LPPool2d(3, (3, 2), (2, 1), ceil_mode=True)", (7, 6)),
    ("LPPool3d(2, 2)", (4, 4, 5)),
    ("LPPool3d(1, (2, 3, 2), 2, ceil_mode=True)", (5, 6, 5)),
]


@pytest.mark.parametrize("expr, spatial", POOL_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("batched", [True, False])
def test_pool_nd_layers_equal_torch(torch, expr, spatial, batched):
    """Tie-free values (a permutation), positive where LPPool's fractional powers need it."""
    shape = ((2,) if batched else ()) + (3,) + spatial
    x = np.random.default_rng(8).permutation(np.prod(shape)).astype(np.float32).reshape(shape)
    x = x / x.size + (0.1 if expr.startswith("LP") else -0.5)
    ours = eval(f"jnn.{expr}")  # noqa: S307 (fixed strings above)
    theirs = eval(f"torch.nn.{expr}")  # noqa: S307
    eager = _eager(POOL_CASES, (expr, spatial), batched)
    _check_layer(torch, theirs, ours, x, rtol=1e-5, atol=1e-6, eager=eager)


UNPOOL_CASES = [
    ("1d", dict(kernel_size=2), (8,), None),
    ("1d", dict(kernel_size=3, stride=2, padding=1), (9,), (10,)),
    ("2d", dict(kernel_size=2), (6, 5), (6, 5)),
    ("2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)), (7, 5), None),
    ("3d", dict(kernel_size=2), (4, 6, 4), None),
    ("3d", dict(kernel_size=(2, 3, 2), stride=2, padding=(0, 1, 1)), (4, 6, 5), (4, 6, 5)),
]


@pytest.mark.parametrize("nd, kw, spatial, output_size", UNPOOL_CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("batched", [True, False])
def test_max_unpool_layers_equal_torch(torch, nd, kw, spatial, output_size, batched):
    """MaxUnpool of torch's MaxPool (values and indices): torch's output, sizes default or
    given."""
    shape = ((2,) if batched else ()) + (3,) + spatial
    x = np.random.default_rng(9).permutation(np.prod(shape)).astype(np.float32).reshape(shape)
    pooled, indices = getattr(torch.nn, f"MaxPool{nd}")(**kw, return_indices=True)(torch.tensor(x))
    tlayer = getattr(torch.nn, f"MaxUnpool{nd}")(**kw)
    layer = getattr(jnn, f"MaxUnpool{nd}")(**kw)
    _check_layer(
        torch,
        tlayer,
        layer,
        pooled.numpy(),
        indices.numpy(),
        output_size=output_size,
        atol=0,
        eager=_eager(UNPOOL_CASES, (nd, kw, spatial, output_size), batched),
    )


@pytest.mark.parametrize("batched", [True, False])
def test_fold_unfold_pixel_shuffle_layers_equal_torch(torch, batched):
    rng = np.random.default_rng(10)
    lead = (2,) if batched else ()
    x = rng.standard_normal(lead + (3, 7, 6)).astype(np.float32)
    for kw in [dict(kernel_size=2), dict(kernel_size=(3, 2), dilation=(1, 2), padding=1, stride=2)]:
        _check_layer(torch, torch.nn.Unfold(**kw), jnn.Unfold(**kw), x, eager=not batched)
    cols = rng.standard_normal(lead + (3 * 6, 8)).astype(np.float32)
    # overlapping windows (stride 1 < kernel): the sums of the overlaps
    kw = dict(output_size=(4, 5), kernel_size=(3, 2), padding=(1, 0), stride=(1, 2))
    _check_layer(torch, torch.nn.Fold(**kw), jnn.Fold(**kw), cols, eager=not batched)
    y = rng.standard_normal(lead + (8, 3, 2)).astype(np.float32)
    _check_layer(torch, torch.nn.PixelShuffle(2), jnn.PixelShuffle(2), y, atol=0, eager=not batched)
    _check_layer(
        torch,
        torch.nn.PixelUnshuffle(3),
        jnn.PixelUnshuffle(3),
        x[..., :6, :6],
        atol=0,
        eager=not batched,
    )


def test_new_layers_convert_with_torch_keys(torch):
    """A torch Sequential of the new parameterised layers: its state_dict converts under its
    own keys, gives torch's output, and converts back to a strict load."""
    from jaxconv import convert

    tnet = torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3),
        torch.nn.ReLU(),
        torch.nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
        torch.nn.MaxPool1d(2),
    )
    net = jnn.Sequential(
        (jnn.Conv1d(2, 4, 3), jnn.ReLU(), jnn.ConvTranspose1d(4, 6, 3, stride=2, groups=2),
         jnn.MaxPool1d(2)),
        example_input_shape=(2, 2, 9),
    )  # fmt: skip
    x = np.random.default_rng(11).standard_normal((2, 2, 9)).astype(np.float32)
    variables = convert.from_torch(net, tnet.state_dict())
    want = tnet(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(net.apply(variables, x), want, rtol=1e-5, atol=1e-5)
    tnet.load_state_dict(convert.to_torch(net, variables), strict=True)


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
    v = jax.jit(net.init)(jax.random.key(0), x)
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
    env["XLA_FLAGS"] = with_host_devices(env, 4)
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
    v = jax.eval_shape(net.init, jax.random.key(0), jnp.ones((2, 1, 5, 5)))  # names only
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
        (lambda: jnn.Conv1d(4, 6, (3, 3)), TypeError, "kernel_size"),
        (lambda: jnn.Conv3d(4, 6, 3, stride=(2, 1, 1), padding="same"), ValueError, "same"),
        (lambda: jnn.ConvTranspose2d(3, 4, 3, groups=2), ValueError, "in_channels"),
        (lambda: jnn.ConvTranspose2d(4, 6, 3, groups=4), ValueError, "out_channels"),
        (lambda: jnn.ConvTranspose2d(4, 6, 3, padding_mode="reflect"), ValueError, "zeros"),
        (lambda: jnn.ConvTranspose2d(4, 6, 3, padding="same"), TypeError, "padding"),
        (lambda: jnn.ConvTranspose1d(4, 6, 3, output_padding=-1), ValueError, "output_padding"),
        (lambda: jnn.ConvTranspose3d(4, 6, 3, dilation=0), ValueError, "dilation"),
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
