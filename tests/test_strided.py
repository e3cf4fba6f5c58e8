"""conv2d(impl="phases") (jaxconv/kernels/strided.py): strided 2-D convs as sums of stride-1
convs over the input's stride phases. Values against the float64 NumPy reference over a seeded
sweep of strides, kernels (smaller and larger than the stride), per-side paddings (also past
the kernel) and the three layouts, per phase and stacked; float32 ResNet-like layers against
PyTorch; reverse, forward and second-order derivatives against lax's; inside lax.scan; the
compiled gradient holding stride-1 convolutions only; NaN and inf where lax puts them (per
phase) and the wider footprint of the stacked form; torch's conv2d OpInfo samples and error
inputs; and which layers the CPU dispatch sends here.

(test_conv.py runs its whole sweep, values and gradients, through ``impl="phases"`` too.)"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    assert_conv2d_opinfo,
    assert_derivatives_like_lax,
)

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import strided
from jaxconv.kernels.dispatch import select_impl

ON_CPU = jax.default_backend() == "cpu"


def _case(i: int) -> dict:
    """Seeded case ``i``: a layout, a stride with at least one axis > 1, a kernel of 1 to 7
    taps per axis and per-side paddings up to one past the kernel."""
    r = np.random.default_rng(100 + i)
    stride = tuple(int(s) for s in r.integers(1, 5, 2))
    if max(stride) == 1:
        stride = (1, 2) if i % 2 else (3, 1)
    k = tuple(int(v) for v in r.integers(1, 8, 2))
    pads = tuple((int(r.integers(0, kk + 2)), int(r.integers(0, kk + 2))) for kk in k)
    size = tuple(int(kk + r.integers(0, 9)) for kk in k)
    layout = ("NCHW", "NHWC", "CHWN")[i % 3]
    n, c, o = (int(v) for v in r.integers(1, 5, 3))
    return dict(i=i, layout=layout, stride=stride, k=k, pads=pads, size=size, n=n, c=c, o=o)


CASES = [_case(i) for i in range(36)]


def _arrays(c: dict) -> tuple[np.ndarray, np.ndarray]:
    """float64 NCHW input and OIHW weight of a case."""
    r = np.random.default_rng(c["i"])
    return r.standard_normal((c["n"], c["c"], *c["size"])), r.standard_normal(
        (c["o"], c["c"], *c["k"])
    )


def _in_layout(layout: str, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if layout == "NHWC":
        return x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    if layout == "CHWN":
        return x.transpose(1, 2, 3, 0), w.transpose(2, 3, 1, 0)
    return x, w


def _to_nchw(layout: str, y) -> np.ndarray:
    y = np.asarray(y)
    return {"NHWC": y.transpose(0, 3, 1, 2), "CHWN": y.transpose(3, 0, 1, 2)}.get(layout, y)


@pytest.fixture
def use_form(monkeypatch):
    """``use_form(form)`` makes every strided conv run ``form``: each phase's conv on its own
    ("per-phase") or all phases stacked on the channel axis as one conv ("stacked");
    :func:`~jaxconv.kernels.strided.stacks_phases` picks by the channel count otherwise."""

    def use(form: str) -> None:
        monkeypatch.setattr(strided, "STACK_CHANNELS", 0 if form == "per-phase" else 10**9)
        jax.clear_caches()  # conv2d's jitted inner function would keep the other form's trace

    yield use
    jax.clear_caches()  # no trace of the form set here outlives the test


@pytest.mark.parametrize("form", ["per-phase", "stacked"])
def test_sweep_equals_the_reference_in_float64(form, use_form):
    """Every case of the sweep in one jitted function (one compile), float64."""
    use_form(form)
    inputs = [_in_layout(c["layout"], *_arrays(c)) for c in CASES]

    def every_case(inputs):
        return [
            jaxconv.conv2d(x, w, None, c["stride"], c["pads"], layout=c["layout"], impl="phases")
            for c, (x, w) in zip(CASES, inputs, strict=True)
        ]

    with jax.enable_x64(True):
        got = jax.jit(every_case)(inputs)
    for c, y in zip(CASES, got, strict=True):
        x, w = _arrays(c)
        want = reference.conv2d(x, w, None, c["stride"], c["pads"])
        assert y.dtype == jnp.float64, c
        np.testing.assert_allclose(
            _to_nchw(c["layout"], y), want, rtol=1e-10, atol=1e-10, err_msg=str(c)
        )


#: ResNet-like float32 layers: (N, C, H, W), (O, C, kh, kw), stride, padding; the last has a
#: 3x3 phase (5x5 kernel at stride 2) wide enough for the stride-1 dispatch to take Winograd.
TORCH_LAYERS = [
    ((4, 16, 24, 24), (32, 16, 3, 3), 2, 1),
    ((4, 16, 24, 24), (32, 16, 1, 1), 2, 0),
    ((2, 3, 32, 32), (16, 3, 7, 7), 2, 3),
    ((4, 8, 17, 15), (8, 8, 3, 3), (3, 2), (1, 0)),
    ((2, 32, 28, 28), (32, 32, 5, 5), 2, 2),
]


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_float32_layers_equal_torch(layout):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(3)
    for x_shape, w_shape, stride, padding in TORCH_LAYERS:
        x, w = r.standard_normal(x_shape, np.float32), r.standard_normal(w_shape, np.float32)
        b = r.standard_normal(w_shape[0], np.float32)
        want = torch.nn.functional.conv2d(*map(torch.from_numpy, (x, w, b)), stride, padding)
        xl, wl = _in_layout(layout, x, w)
        got = _apply(layout, stride, padding, "phases", xl, wl, b)
        terms = np.prod(w_shape[1:])
        np.testing.assert_allclose(
            _to_nchw(layout, got), want.numpy(), rtol=1e-5, atol=1e-5 * np.sqrt(terms)
        )


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _apply(layout: str, stride, padding, impl: str, x, w, b):
    """The conv, jitted: the derivative checks below transform it, each into one program."""
    return jaxconv.conv2d(x, w, b, stride, padding, layout=layout, impl=impl)


@pytest.mark.parametrize(("layout", "form"), [("NCHW", "per-phase"), ("NHWC", "stacked")])
def test_derivatives_equal_lax(layout, form, use_form):
    """Reverse mode (x, w, b together, jitted, and x alone, un-jitted around the jitted
    conv), forward mode (both, each alone) and a second derivative in float64, against
    impl="lax", for a 3x3 stride-(2, 3) conv with uneven padding."""
    use_form(form)
    r = np.random.default_rng(13)
    x, w, b = (
        r.standard_normal((2, 4, 9, 10)),
        r.standard_normal((3, 4, 3, 4)),
        r.standard_normal(3),
    )
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    apply = functools.partial(_apply, layout, (2, 3), ((1, 2), (0, 1)))
    assert_derivatives_like_lax(apply, "phases", (x, w, b))


def _scanned_steps(impl: str, length: int = 3):
    """``length`` gradient steps of a 3x3 stride-2 NHWC conv inside lax.scan, jitted."""

    def step(carry, _):
        x, w = carry
        gx, gw = jax.grad(
            lambda x, w: jnp.sum(jnp.tanh(_apply("NHWC", 2, 1, impl, x, w, None))), (0, 1)
        )(x, w)
        return (x - 0.1 * gx, w - 0.1 * gw), None

    return jax.jit(lambda x, w: jax.lax.scan(step, (x, w), None, length=length)[0])


def test_inside_scan_equals_lax():
    """Three gradient steps inside lax.scan (as a training epoch runs them), float64."""
    r = np.random.default_rng(15)
    x, w = r.standard_normal((2, 9, 8, 3)), r.standard_normal((3, 3, 3, 3)) * 0.1
    with jax.enable_x64(True):
        for a, b in zip(_scanned_steps("phases")(x, w), _scanned_steps("lax")(x, w), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def test_the_scanned_gradient_holds_stride_1_convolutions_only():
    """The point of the path: inside lax.scan the compiled values and gradients hold no
    strided, dilated or transposed (lhs-dilated) convolution, where lax's do."""
    x = jax.ShapeDtypeStruct((2, 9, 8, 16), jnp.float32)
    w = jax.ShapeDtypeStruct((3, 3, 16, 16), jnp.float32)

    def conv_windows(impl):
        hlo = _scanned_steps(impl).lower(x, w).compile().as_text()
        return re.findall(r"convolution\(.*?window=\{([^}]*)\}", hlo)

    phases, lax_ = conv_windows("phases"), conv_windows("lax")
    assert phases and not any(re.search(r"stride|lhs_dilate|rhs_dilate", win) for win in phases)
    assert any(re.search(r"stride|lhs_dilate|rhs_dilate", win) for win in lax_)


def _non_finite_case(c: int):
    """All-ones NHWC input with a NaN and an inf, a 3x3 kernel of ones, ``c`` channels."""
    x = np.ones((1, 11, 10, c))
    x[0, 4, 3, 0], x[0, 7, 8, 1] = np.nan, np.inf
    return x, np.ones((3, 3, c, 2))


def test_non_finite_values_where_lax_puts_them_and_nan_weights_on_padding_too():
    """Per phase, at strides 2, 3 and (2, 1) with padding: a NaN and an inf in the input
    reach exactly lax's outputs; a NaN weight also reaches the outputs where its tap lands
    on zero padding (the phases' padding is explicit; XLA's convolution skipped it here)."""
    x, w = _non_finite_case(9)
    w_nan = w.copy()
    w_nan[0, 2, 1, 0] = np.nan
    for stride in (2, 3, (2, 1)):
        geom = conv_geometry(x.shape, w.shape, stride=stride, layout="NHWC")
        assert not strided.stacks_phases(geom)
        got = _apply("NHWC", stride, 1, "phases", x, w, None)
        want = _apply("NHWC", stride, 1, "lax", x, w, None)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        assert np.isfinite(want).any() and not np.isfinite(want).all()
        got = np.isnan(_apply("NHWC", stride, 1, "phases", np.ones_like(x), w_nan, None))
        want = np.isnan(_apply("NHWC", stride, 1, "lax", np.ones_like(x), w_nan, None))
        assert got[..., 0].all() and not got[..., 1].any() and want[..., 0].any()


def test_stacked_phases_spread_a_non_finite_input_to_the_window_rounded_up_to_the_stride():
    """As documented: stacked, the zero taps that pad a 3x3 kernel to 4x4 multiply the input,
    so a NaN (or inf) input reaches every output lax's does, and more, but only outputs whose
    4x4 window holds it."""
    x, w = _non_finite_case(2)
    assert strided.stacks_phases(conv_geometry(x.shape, w.shape, stride=2, layout="NHWC"))
    got = ~np.isfinite(np.asarray(_apply("NHWC", 2, 1, "phases", x, w, None)))[0, :, :, 0]
    want = ~np.isfinite(np.asarray(_apply("NHWC", 2, 1, "lax", x, w, None)))[0, :, :, 0]
    w4 = np.ones((4, 4, 2, 2))  # the padded kernel, run as a direct conv
    wider = ~np.isfinite(np.asarray(_apply("NHWC", 2, ((1, 2), (1, 2)), "lax", x, w4, None)))
    assert (got >= want).all() and got.sum() > want.sum()
    np.testing.assert_array_equal(got, wider[0, : got.shape[0], : got.shape[1], 0])


def _strided_plain(w_shape: tuple, kwargs: dict) -> bool:
    stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
    strided = max(np.atleast_1d(stride)) > 1
    return strided and kwargs.get("groups", 1) == 1 and dilation in (1, (1, 1))


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on its copy
def test_torchs_opinfo_samples_and_error_inputs():
    """Every float64 sample of torch's conv2d OpInfo through ``impl="phases"`` (the strided
    ones by phases, the rest by the fallback), jitted: values and the input and weight
    gradients equal torch's; every error input raises ValueError or TypeError."""
    assert assert_conv2d_opinfo("phases", _strided_plain) >= 2


def test_geometries_it_refuses_fall_back_to_lax():
    r = np.random.default_rng(16)
    x, w = r.standard_normal((1, 4, 9, 9)), r.standard_normal((2, 2, 3, 3))
    with jax.enable_x64(True):
        for kwargs in (dict(stride=1), dict(stride=2, dilation=2), dict(stride=2, groups=2)):
            ww = w if "groups" in kwargs else np.concatenate([w, w], axis=1)
            got = jaxconv.conv2d(x, ww, impl="phases", **kwargs)
            np.testing.assert_allclose(got, reference.conv2d(x, ww, **kwargs), rtol=1e-10)


@pytest.mark.skipif(not ON_CPU, reason="the dispatch sends layers here on CPU only")
def test_the_cpu_dispatch_takes_it_for_strided_float_layers():
    resnet = [
        conv_geometry((64, 64, 24, 24), (128, 64, 3, 3), stride=2, padding=1),
        conv_geometry((64, 24, 24, 64), (1, 1, 64, 128), stride=2, layout="NHWC"),
        conv_geometry((64, 96, 96, 1), (7, 7, 1, 64), stride=2, padding=3, layout="NHWC"),
        conv_geometry((1, 9, 9, 64), (3, 3, 1, 8), stride=(1, 2), layout="CHWN"),
    ]
    for geom in resnet:
        assert select_impl(geom, jnp.float32) == "phases", geom
        assert select_impl(geom, jnp.float64) == "phases", geom
        assert select_impl(geom, jnp.bfloat16) == "lax", geom
        assert select_impl(geom, jnp.float32, backend="gpu") == "lax", geom
    not_here = [
        conv_geometry((8, 64, 24, 24), (64, 64, 3, 3), padding=1),  # stride 1
        conv_geometry((8, 64, 24, 24), (64, 64, 3, 3), stride=2, dilation=2),
        conv_geometry((8, 64, 24, 24), (64, 32, 3, 3), stride=2, groups=2),
        conv_geometry((8, 64, 24, 24), (64, 1, 3, 3), stride=2, groups=64),  # depthwise
    ]
    for geom in not_here:
        assert select_impl(geom, jnp.float32) != "phases", geom
