"""jaxconv.nn's channels-last layouts (``"NLC"``, ``"NHWC"``, ``"NDHWC"``) against the
channels-first layers (themselves checked against torch.nn in tests/test_nn.py).

Over seeded random configurations of every layer that takes ``layout``: the same key draws
the same parameters (a conv weight stored in its layout's kernel form, the transpose of
torch's), and with those parameters the channels-last layer gives the channels-first output
with the channels moved last, the same batch statistics, and the same gradients (input and
parameters, the weight's in its stored order). Bad layouts are refused at construction.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL

from jaxconv import nn as jnn
from jaxconv.nn._common import LAYER_LAYOUTS, channels_last_kernel

FIRST = {nd: pair[0] for nd, pair in LAYER_LAYOUTS.items()}
LAST = {nd: pair[1] for nd, pair in LAYER_LAYOUTS.items()}


def to_last(x, batched: bool = True):
    """Channels-first -> channels-last (the channel axis moved to the end)."""
    return jnp.moveaxis(x, 1 if batched else 0, -1)


def _close(a, b, rtol=2e-5, atol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


def _params_to_last(layer_last, variables):
    """Channels-first variables -> the channels-last layer's (its ``torch_param_axes``)."""
    if "params" not in variables:
        return variables
    axes = layer_last.torch_param_axes() if hasattr(layer_last, "torch_param_axes") else {}
    params = {
        k: jnp.transpose(v, axes[k]) if k in axes else v for k, v in variables["params"].items()
    }
    return {**variables, "params": params}


def _random_variables(layer, x, seed: int = 3):
    """``layer``'s variables drawn with NumPy (parameters uniform in [0.5, 1.5], so batch
    norm's affine matters; batch statistics as init makes them): no init to compile."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(layer.init, jax.random.key(0), x)

    def draw(path, a):
        names = [getattr(k, "key", "") for k in path]
        if names[0] == "params":
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype)
        if names[-1] == "running_var":
            return jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype)
        if names[-1] == "running_mean":
            return jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype)
        return jnp.zeros(a.shape, a.dtype)

    return jax.tree_util.tree_map_with_path(draw, dict(abstract))


def _compare(first, last, x, batched, *, train=None, mutable=False, rtol=2e-5):
    """``first`` on ``x`` and ``last`` on ``to_last(x)`` with the same parameters: outputs,
    updated collections, and the gradient of a random projection of the output with respect
    to the input and every parameter; both layouts in one compiled function."""
    v_first = _random_variables(first, x)
    v_last = _params_to_last(last, v_first)
    kw = {} if train is None else {"train": train}
    if mutable:
        kw["mutable"] = ["batch_stats"]
    out_shape = jax.eval_shape(lambda v, x: first.apply(v, x, **kw), v_first, x)
    out_shape = out_shape[0] if mutable else out_shape
    cot = jnp.asarray(np.random.default_rng(4).standard_normal(out_shape.shape), jnp.float32)

    def one(layer, v, x, cotangent):
        def f(params, x):
            out = layer.apply({**v, "params": params}, x, **kw)
            y, updates = out if mutable else (out, {})
            return jnp.sum(y * cotangent), (y, updates)

        (_, (y, updates)), grads = jax.value_and_grad(f, (0, 1), has_aux=True)(
            v.get("params", {}), x
        )
        return y, updates, grads

    @jax.jit  # values compared
    def both(v_first, v_last, x):
        xl, cl = to_last(x, batched), to_last(cot, batched)
        return one(first, v_first, x, cot), one(last, v_last, xl, cl)

    (y_f, upd_f, g_f), (y_l, upd_l, g_l) = both(v_first, v_last, x)
    assert y_l.shape == to_last(y_f, batched).shape
    _close(y_l, to_last(y_f, batched), rtol=rtol, atol=rtol)
    for a, b in zip(jax.tree.leaves(upd_f), jax.tree.leaves(upd_l), strict=True):
        _close(a, b, rtol=rtol, atol=rtol)
    _close(g_l[1], to_last(g_f[1], batched), rtol=1e-4, atol=1e-4)  # input gradient
    want = _params_to_last(last, {"params": g_f[0]})["params"]
    assert want.keys() == g_l[0].keys()
    for name in want:
        _close(g_l[0][name], want[name], rtol=1e-4, atol=1e-4)


def _input(rng, n: int, c: int, spatial, batched: bool):
    shape = ((n,) if batched else ()) + (c, *spatial)
    return jnp.asarray(rng.standard_normal(shape), jnp.float32)


# --------------------------------------------------------------------------- convolutions

CONV = {1: jnn.Conv1d, 2: jnn.Conv2d, 3: jnn.Conv3d}
CONV_T = {1: jnn.ConvTranspose1d, 2: jnn.ConvTranspose2d, 3: jnn.ConvTranspose3d}


def _conv_config(seed: int, transpose: bool):
    rng = np.random.default_rng(seed)
    nd = int(rng.integers(1, 4))
    groups = int(rng.choice([1, 2]))
    c_in, c_out = groups * int(rng.integers(1, 4)), groups * int(rng.integers(1, 4))
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 3, nd))
    d = tuple(int(v) for v in rng.integers(1, 3, nd))
    kw = dict(stride=s, dilation=d, groups=groups, bias=bool(rng.integers(0, 2)))
    if transpose:
        kw["padding"] = tuple(int(rng.integers(0, ki)) for ki in k)
        kw["output_padding"] = tuple(
            int(rng.integers(0, max(si, di))) for si, di in zip(s, d, strict=True)
        )
    else:
        mode = str(rng.choice(["zeros", "zeros", "reflect", "replicate", "circular"]))
        kw["padding"] = tuple(int(rng.integers(0, 2)) for _ in k)
        kw["padding_mode"] = mode
    size = tuple(di * (ki - 1) + 2 + int(rng.integers(0, 4)) for ki, di in zip(k, d, strict=True))
    batched = bool(rng.integers(0, 2))
    x = _input(rng, 2, c_in, size, batched)
    return nd, c_in, c_out, k, kw, x, batched


#: Seeds of the conv cases: with 0, 1, 3 and 6 every padding mode (zeros, reflect,
#: replicate, circular), 2-D and 3-D, grouped and not, batched and not; all 8 under FULL.
CONV_SEEDS = range(8) if FULL else (0, 1, 3, 6)


@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_conv_layers_channels_last_equal_channels_first(seed):
    nd, c_in, c_out, k, kw, x, batched = _conv_config(seed, transpose=False)
    first = CONV[nd](c_in, c_out, k, **kw)
    last = CONV[nd](c_in, c_out, k, **kw, layout=LAST[nd])
    assert first.layout == FIRST[nd]
    _compare(first, last, x, batched)


@pytest.mark.parametrize("seed", range(6 if FULL else 4))
def test_conv_transpose_layers_channels_last_equal_channels_first(seed):
    nd, c_in, c_out, k, kw, x, batched = _conv_config(100 + seed, transpose=True)
    first = CONV_T[nd](c_in, c_out, k, **kw)
    last = CONV_T[nd](c_in, c_out, k, **kw, layout=LAST[nd])
    _compare(first, last, x, batched)


def test_channels_last_weight_is_torch_draw_transposed():
    """The stored shapes (HWIO, (kh, kw, C_out // g, C_in)) and values from one key."""
    x = jnp.ones((1, 5, 5, 4))
    conv = jnn.Conv2d(4, 6, (3, 2), groups=2, layout="NHWC").init(jax.random.key(1), x)
    ref = jnn.Conv2d(4, 6, (3, 2), groups=2).init(jax.random.key(1), jnp.ones((1, 4, 5, 5)))
    assert conv["params"]["weight"].shape == (3, 2, 2, 6)
    np.testing.assert_array_equal(
        conv["params"]["weight"], channels_last_kernel(ref["params"]["weight"])
    )
    convt = jnn.ConvTranspose2d(4, 6, 3, groups=2, layout="NHWC").init(jax.random.key(1), x)
    assert convt["params"]["weight"].shape == (3, 3, 3, 4)


def test_conv_transpose_output_size_channels_last():
    """A whole-shape ``output_size`` is in the layer's layout; spatial sizes alone as torch."""
    first = jnn.ConvTranspose2d(3, 2, 3, stride=2)
    last = jnn.ConvTranspose2d(3, 2, 3, stride=2, layout="NHWC")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3, 4, 5)), jnp.float32)
    v = first.init(jax.random.key(0), x)
    vl = _params_to_last(last, dict(v))
    want = first.apply(v, x, output_size=(10, 12))
    assert want.shape == (2, 2, 10, 12)
    for size in ((10, 12), (2, 10, 12, 2)):
        _close(last.apply(vl, to_last(x), output_size=size), to_last(want))
    with pytest.raises(ValueError, match="output_size"):
        last.apply(vl, to_last(x), output_size=(2, 2, 10, 12))  # channels-first whole shape


# --------------------------------------------------------------------------- batch norm

BN = {1: jnn.BatchNorm1d, 2: jnn.BatchNorm2d, 3: jnn.BatchNorm3d}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("train", [True, False])
def test_batchnorm_channels_last_equals_channels_first(seed, train):
    rng = np.random.default_rng(200 + seed)
    nd = int(rng.integers(1, 4))
    c = int(rng.integers(1, 5))
    kw = dict(
        momentum=None if seed % 3 == 0 else 0.1,
        affine=bool(seed % 2),
        track_running_stats=seed != 3,
    )
    x = _input(rng, 3, c, tuple(int(v) for v in rng.integers(2, 5, nd)), True) * 2 + 0.5
    mutable = train and kw["track_running_stats"]
    _compare(
        BN[nd](c, **kw), BN[nd](c, **kw, layout=LAST[nd]), x, True, train=train, mutable=mutable
    )


def test_batchnorm1d_two_dims_is_the_same_in_both_layouts():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((5, 3)), jnp.float32)
    first, last = jnn.BatchNorm1d(3), jnn.BatchNorm1d(3, layout="NLC")
    v = first.init(jax.random.key(0), x)
    a, ua = first.apply(v, x, train=True, mutable=["batch_stats"])
    b, ub = last.apply(v, x, train=True, mutable=["batch_stats"])
    np.testing.assert_array_equal(a, b)
    for p, q in zip(jax.tree.leaves(ua), jax.tree.leaves(ub), strict=True):
        np.testing.assert_array_equal(p, q)


# --------------------------------------------------------------------------- pooling


def _pool_case(seed: int):
    """A random pooling layer pair (channels first, channels last) and its input."""
    rng = np.random.default_rng(300 + seed)
    nd = int(rng.integers(1, 4))
    kind = ["max", "avg", "lp", "adaptive_avg", "adaptive_max"][seed % 5]
    k = tuple(int(v) for v in rng.integers(1, 4, nd))
    s = tuple(int(v) for v in rng.integers(1, 3, nd))
    size = tuple(ki + int(rng.integers(1, 5)) for ki in k)
    batched = bool(rng.integers(0, 2))
    x = _input(rng, 2, int(rng.integers(1, 4)), size, batched)
    pad = tuple(int(rng.integers(0, ki // 2 + 1)) for ki in k)
    ceil = bool(rng.integers(0, 2))
    name = {1: "1d", 2: "2d", 3: "3d"}[nd]
    if kind == "max":
        cls, kw = getattr(jnn, f"MaxPool{name}"), dict(kernel_size=k, stride=s, padding=pad)
        kw.update(dilation=1 + int(rng.integers(0, 2)), ceil_mode=ceil)
        kw["padding"] = tuple(min(p, ki // 2) for p, ki in zip(pad, k, strict=True))
        if any(
            kw["dilation"] * (ki - 1) + 1 > n + 2 * p for ki, n, p in zip(k, size, pad, strict=True)
        ):
            kw["dilation"] = 1
    elif kind == "avg":
        cls = getattr(jnn, f"AvgPool{name}")
        kw = dict(kernel_size=k, stride=s, padding=pad, ceil_mode=ceil)
        kw["count_include_pad"] = bool(rng.integers(0, 2))
        if nd > 1 and seed % 2:
            kw["divisor_override"] = 3
    elif kind == "lp":
        cls = getattr(jnn, f"LPPool{name}")
        kw = dict(norm_type=float(rng.choice([1.0, 2.0, 3.0])), kernel_size=k, stride=s)
        x = jnp.abs(x) + 0.1  # torch's lp pool of odd powers: positive inputs keep it real
    elif kind == "adaptive_avg":
        cls = getattr(jnn, f"AdaptiveAvgPool{name}")
        kw = dict(output_size=tuple(int(rng.integers(1, n + 1)) for n in size))
    else:
        cls = getattr(jnn, f"AdaptiveMaxPool{name}")
        kw = dict(output_size=tuple(int(rng.integers(1, n + 1)) for n in size))
    return cls(**kw), cls(**kw, layout=LAST[nd]), x, batched


@pytest.mark.parametrize("seed", range(10 if FULL else 6))  # 0-4: each kind of pooling
def test_pooling_layers_channels_last_equal_channels_first(seed):
    first, last, x, batched = _pool_case(seed)
    _compare(first, last, x, batched)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_indices_and_unpooling_channels_last(nd):
    """Indices are flat per channel plane in both layouts (the same numbers, channels moved
    last); unpooling with them gives the channels-first result, channels last."""
    name = f"{nd}d"
    x = _input(np.random.default_rng(nd), 2, 3, (6,) * nd, True)
    pool_f = getattr(jnn, f"MaxPool{name}")(2, return_indices=True)
    pool_l = getattr(jnn, f"MaxPool{name}")(2, return_indices=True, layout=LAST[nd])
    unpool_f = getattr(jnn, f"MaxUnpool{name}")(2)
    unpool_l = getattr(jnn, f"MaxUnpool{name}")(2, layout=LAST[nd])
    y, idx = pool_f.apply({}, x)
    yl, idxl = pool_l.apply({}, to_last(x))
    np.testing.assert_array_equal(yl, to_last(y))
    np.testing.assert_array_equal(idxl, to_last(idx))
    np.testing.assert_array_equal(unpool_l.apply({}, yl, idxl), to_last(unpool_f.apply({}, y, idx)))
    adaptive_f = getattr(jnn, f"AdaptiveMaxPool{name}")(3, return_indices=True)
    adaptive_l = getattr(jnn, f"AdaptiveMaxPool{name}")(3, return_indices=True, layout=LAST[nd])
    (a, ia), (b, ib) = adaptive_f.apply({}, x), adaptive_l.apply({}, to_last(x))
    np.testing.assert_array_equal(b, to_last(a))
    np.testing.assert_array_equal(ib, to_last(ia))


# --------------------------------------------------------------------------- flatten


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("start_end", [(1, -1), (0, -1), (2, -1), (1, 2)])
def test_flatten_channels_last_gives_torch_order(nd, start_end):
    """Channels-last Flatten equals Flatten of the channels-first array (torch's C-major
    order), batched and unbatched."""
    start, end = start_end
    x = _input(np.random.default_rng(nd), 2, 3, tuple(range(2, 2 + nd)), True)
    first, last = jnn.Flatten(start, end), jnn.Flatten(start, end, layout=LAST[nd])
    np.testing.assert_array_equal(last.apply({}, to_last(x)), first.apply({}, x))
    if start == 0:  # unbatched: axis 0 is the channels
        np.testing.assert_array_equal(last.apply({}, to_last(x[0], False)), first.apply({}, x[0]))


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "make",
    [
        lambda: jnn.Conv2d(2, 3, 3, layout="CHWN"),
        lambda: jnn.Conv1d(2, 3, 3, layout="NHWC"),
        lambda: jnn.ConvTranspose3d(2, 3, 3, layout="NLC"),
        lambda: jnn.BatchNorm2d(3, layout="nhwc"),
        lambda: jnn.BatchNorm1d(3, layout="NCHW"),
        lambda: jnn.MaxPool2d(2, layout="NDHWC"),
        lambda: jnn.AvgPool3d(2, layout="NHWC"),
        lambda: jnn.LPPool1d(2.0, 2, layout=None),
        lambda: jnn.AdaptiveAvgPool2d(1, layout="CHWN"),
        lambda: jnn.AdaptiveMaxPool1d(1, layout="NCHW"),
        lambda: jnn.MaxUnpool2d(2, layout="NLC"),
        lambda: jnn.Flatten(layout="HWC"),
    ],
)
def test_bad_layout_is_refused_at_construction(make):
    with pytest.raises(ValueError, match="layout must be one of"):
        make()


def test_channels_last_input_of_wrong_shape():
    with pytest.raises(ValueError, match="num_features"):
        jnn.BatchNorm2d(3, layout="NHWC").init(jax.random.key(0), jnp.ones((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="rank"):
        jnn.Flatten(layout="NHWC").apply({}, jnp.ones((2, 3)))
