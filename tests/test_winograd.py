"""conv2d(impl="winograd") (jaxconv/kernels/winograd.py): 3x3 stride-1 convs by Winograd's
F(m x m, 3 x 3). The transform matrices' identity, exactly; the kernel for every tile size
against the float64 NumPy reference over a seeded sweep of shapes and per-side paddings; the
batch chunks; the float32 error against the float64 oracle next to XLA's own convolution's;
the public path in both layouts against the reference, PyTorch and torch's conv2d OpInfo
samples and error inputs, jitted (and eager); reverse, forward and second-order derivatives
against lax's; its input and weight gradients by Winograd against jax.vjp; inside lax.scan;
the footprint of a non-finite input; and which layers the CPU dispatch sends to it.

(test_conv.py runs its whole sweep through ``impl="winograd"`` too: every conv2d geometry, the
ones this path refuses falling back to lax.)"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    assert_conv2d_opinfo,
    assert_derivatives_like_lax,
)
from conftest import FULL

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import winograd
from jaxconv.kernels.dispatch import select_impl

ON_CPU = jax.default_backend() == "cpu"


@pytest.mark.parametrize("m", sorted(winograd.POINTS))
def test_transform_matrices_compute_the_correlation(m):
    """A^T ((G g) * (B^T d)) is the m outputs of correlating a (m + 2)-long d with a 3-tap g,
    for random d and g and for every unit d (so every column of B^T is checked)."""
    bt, g, at = winograd.winograd_matrices(m)
    assert bt.shape == (m + 2, m + 2) and g.shape == (m + 2, 3) and at.shape == (m, m + 2)
    r = np.random.default_rng(m)
    ds = [*np.eye(m + 2), *r.standard_normal((4, m + 2))]
    for d in ds:
        for k in [*np.eye(3), r.standard_normal(3)]:
            want = np.correlate(d, k, mode="valid")
            np.testing.assert_allclose(at @ ((g @ k) * (bt @ d)), want, rtol=1e-12, atol=1e-12)


def _case(i: int) -> dict:
    """A seeded NHWC geometry: batch, size, channels, per-side padding below 3 each."""
    r = np.random.default_rng(9100 + i)
    pads = tuple((int(r.integers(0, 3)), int(r.integers(0, 3))) for _ in range(2))
    h = int(r.integers(max(1, 3 - sum(pads[0])), 14))
    w = int(r.integers(max(1, 3 - sum(pads[1])), 14))
    ci, co = int(r.integers(1, 6)), int(r.integers(1, 6))
    return dict(n=int(r.integers(1, 4)), h=h, w=w, ci=ci, co=co, pads=pads)


CASES = [_case(i) for i in range(24 if FULL else 10)]


def _arrays(c: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(seed)
    x = r.standard_normal((c["n"], c["h"], c["w"], c["ci"]))
    return x, r.standard_normal((3, 3, c["ci"], c["co"]))


def _oracle(x: np.ndarray, w: np.ndarray, pads) -> np.ndarray:
    return reference.conv2d(x, w, None, 1, [list(p) for p in pads], layout="NHWC")


@pytest.mark.parametrize("c", CASES, ids=lambda c: f"{c['n']}x{c['h']}x{c['w']}-p{c['pads']}")
def test_every_tile_size_equals_the_reference_in_float64(c):
    x, w = _arrays(c, 1)
    want = _oracle(x, w, c["pads"])

    def every_tile(x, w):
        return [winograd.conv_winograd_nhwc(x, w, c["pads"], None, m) for m in winograd.POINTS]

    with jax.enable_x64(True):
        for got in jax.jit(every_tile)(x, w):
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_the_batch_goes_in_chunks_that_fit_and_divide_it():
    # 64 images of 24x24x64 (a ResNet-18 layer): 25 * 64 tiles * 64 channels * 4 bytes each
    per_image = 25 * 64 * 64 * 4
    b = winograd.batch_chunk((64, 24, 24, 64), ((1, 1), (1, 1)), 3)
    assert 64 % b == 0 and b * per_image <= winograd.CHUNK_BYTES < 2 * b * per_image
    assert winograd.batch_chunk((7, 24, 24, 64), ((1, 1), (1, 1)), 3) in (1, 7)
    assert winograd.batch_chunk((1, 200, 200, 512), ((1, 1), (1, 1)), 3) == 1


def test_several_chunks_give_the_values_of_one(monkeypatch):
    r = np.random.default_rng(5)
    x, w = r.standard_normal((6, 7, 8, 3)), r.standard_normal((3, 3, 3, 4))
    pads = ((1, 0), (2, 1))
    with jax.enable_x64(True):
        whole = winograd.winograd_nhwc(x, w, pads, None)
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)  # one image per chunk
        assert winograd.batch_chunk(x.shape, pads, winograd.TILE) == 1
        chunked = winograd.winograd_nhwc(x, w, pads, None)
    np.testing.assert_allclose(chunked, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole, _oracle(x, w, pads), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size,channels", [(24, 64), (12, 128)])
def test_float32_error_stays_near_a_direct_convolutions(size, channels):
    """Against the float64 oracle, F(3, 3)'s float32 error on ResNet-18 layers is at most a few
    times that of XLA's direct convolution (the transforms add rounding), and small relative to
    the outputs."""
    r = np.random.default_rng(size)
    x = r.standard_normal((4, size, size, channels))
    w = r.standard_normal((3, 3, channels, channels)) * 0.05
    pads = ((1, 1), (1, 1))
    want = _oracle(x, w, pads)
    x32, w32 = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    got = jax.jit(lambda x, w: winograd.winograd_nhwc(x, w, pads, None))(x32, w32)
    direct = jaxconv.conv2d(x32, w32, None, 1, 1, layout="NHWC", impl="lax")
    scale = np.abs(want).max()
    err, direct_err = (np.abs(np.asarray(a, np.float64) - want).max() for a in (got, direct))
    assert err / scale < 2e-5
    assert err < 10 * direct_err


@pytest.mark.parametrize(
    "layout,padding,eager",
    [("NCHW", 1, True), ("NHWC", ((0, 2), (1, 0)), True)]
    + [(layout, p, False) for layout in ("NCHW", "NHWC") for p in (0, 2, "same")],
)
def test_public_path_equals_reference(layout, padding, eager):
    """Jitted, and for one padding per layout also eager (op by op: slow to compile)."""
    r = np.random.default_rng(11)
    x, w = r.standard_normal((2, 5, 9, 7)), r.standard_normal((4, 5, 3, 3))
    b = r.standard_normal(4)
    want = reference.conv2d(x, w, b, 1, padding)
    if layout == "NHWC":
        x, w, want = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), want.transpose(0, 2, 3, 1)
    f = functools.partial(jaxconv.conv2d, stride=1, padding=padding, layout=layout, impl="winograd")
    with jax.enable_x64(True):
        np.testing.assert_allclose(jax.jit(f)(x, w, b), want, rtol=1e-10, atol=1e-10)
        if eager:
            np.testing.assert_allclose(f(x, w, b), want, rtol=1e-10, atol=1e-10)


def test_public_path_equals_torch():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(12)
    x, w, b = (
        r.standard_normal((3, 6, 10, 8)),
        r.standard_normal((5, 6, 3, 3)),
        r.standard_normal(5),
    )
    want = torch.nn.functional.conv2d(*map(torch.tensor, (x, w, b)), 1, 1).numpy()
    with jax.enable_x64(True):
        got = jax.jit(lambda x, w, b: jaxconv.conv2d(x, w, b, 1, 1, impl="winograd"))(x, w, b)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _apply(layout: str, padding, impl: str, x, w, b):
    """The conv, jitted: the derivative checks below transform it, each into one program."""
    return jaxconv.conv2d(x, w, b, 1, padding, layout=layout, impl=impl)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_derivatives_equal_lax(layout):
    """Reverse mode (x, w, b together, jitted, and x alone, un-jitted around the jitted
    conv), forward mode (both, each alone) and a second derivative in float64, against
    impl="lax"."""
    r = np.random.default_rng(13)
    x, w, b = r.standard_normal((2, 4, 7, 6)), r.standard_normal((3, 4, 3, 3)), r.standard_normal(3)
    padding = ((1, 2), (0, 1))  # a tuple: hashable, a static argument of _apply
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    apply = functools.partial(_apply, layout, padding)
    assert_derivatives_like_lax(apply, "winograd", (x, w, b))


@pytest.mark.parametrize("argnum", [0, 1], ids=["input", "weight"])
def test_gradients_by_winograd_are_the_vjp(monkeypatch, argnum):
    """input_gradient_nhwc and weight_gradient_nhwc against jax.vjp of lax's conv, over one
    chunk of the batch and over several (the weight gradient's scan carry sums them)."""
    r = np.random.default_rng(14 + argnum)
    x, w = r.standard_normal((4, 7, 8, 3)), r.standard_normal((3, 3, 3, 5))
    pads = ((2, 0), (1, 1)) if argnum == 0 else ((0, 2), (1, 1))

    def by_winograd(dy):
        if argnum == 0:
            return winograd.input_gradient_nhwc(dy, w, pads, None)
        return winograd.weight_gradient_nhwc(x, dy, pads, None)

    with jax.enable_x64(True):
        y, vjp = jax.vjp(lambda *xw: _oracle_jax(*xw, pads), x, w)
        dy = r.standard_normal(y.shape)
        want = vjp(dy)[argnum]
        np.testing.assert_allclose(by_winograd(dy), want, rtol=1e-10, atol=1e-10)
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
        np.testing.assert_allclose(by_winograd(dy), want, rtol=1e-10, atol=1e-10)


def _oracle_jax(x, w, pads):
    return jaxconv.conv2d(x, w, None, 1, pads, layout="NHWC", impl="lax")


def test_inside_scan_equals_lax():
    """Three gradient steps inside lax.scan (as a training epoch runs them), float64."""
    r = np.random.default_rng(15)
    x, w = r.standard_normal((2, 8, 8, 3)), r.standard_normal((3, 3, 3, 3)) * 0.1

    def run(impl):
        def step(carry, _):
            x, w = carry
            gx, gw = jax.grad(
                lambda x, w: jnp.sum(jnp.tanh(_apply("NHWC", 1, impl, x, w, None))), (0, 1)
            )(x, w)
            return (x - 0.1 * gx, w - 0.1 * gw), None

        return jax.jit(lambda x, w: jax.lax.scan(step, (x, w), None, length=3)[0])(x, w)

    with jax.enable_x64(True):
        for a, b in zip(run("winograd"), run("lax"), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)


def _geom(x_shape, w_shape, **kwargs):
    return conv_geometry(x_shape, w_shape, **kwargs)


@pytest.mark.skipif(not ON_CPU, reason="the dispatch sends layers here on CPU only")
def test_the_cpu_dispatch_takes_it_for_wide_3x3_stride_1_float32_layers():
    resnet = _geom((64, 64, 24, 24), (64, 64, 3, 3), padding=1)
    assert select_impl(resnet, jnp.float32) == "winograd"
    nhwc = _geom((64, 12, 12, 128), (3, 3, 128, 128), padding=1, layout="NHWC")
    assert select_impl(nhwc, jnp.float32) == "winograd"
    densenet = _geom((8, 96, 24, 24), (32, 96, 3, 3), padding=1)
    assert select_impl(densenet, jnp.float32) == "winograd"
    assert select_impl(resnet, jnp.float64) != "winograd"  # float64 keeps the direct paths
    not_here = [
        _geom((8, 16, 24, 24), (16, 16, 3, 3), padding=1),  # fewer channels
        _geom((8, 64, 24, 24), (16, 64, 3, 3), padding=1),
        _geom((8, 64, 3, 3), (64, 64, 3, 3), padding=1),  # 3x3 outputs
        _geom((8, 64, 24, 24), (64, 64, 3, 3), padding=1, stride=2),
        _geom((8, 64, 24, 24), (64, 64, 5, 5), padding=2),
        _geom((8, 64, 24, 24), (64, 64, 3, 3), padding=2, dilation=2),
        _geom((8, 64, 24, 24), (64, 32, 3, 3), padding=1, groups=2),
        _geom((8, 64, 24, 24), (64, 64, 3, 3), padding=3),
    ]
    for geom in not_here:
        assert select_impl(geom, jnp.float32) != "winograd", geom
    assert select_impl(resnet, jnp.float32, backend="gpu") != "winograd"


def test_geometries_it_refuses_fall_back_to_lax():
    r = np.random.default_rng(16)
    x, w = r.standard_normal((1, 3, 9, 9)), r.standard_normal((2, 3, 3, 3))
    with jax.enable_x64(True):
        for kwargs in (dict(stride=2), dict(dilation=2), dict(padding=3)):
            got = jaxconv.conv2d(x, w, impl="winograd", **kwargs)
            np.testing.assert_allclose(got, reference.conv2d(x, w, **kwargs), rtol=1e-10)


def test_a_non_finite_input_reaches_the_outputs_of_its_tiles():
    """As documented: a NaN input makes non-finite every output a direct conv makes
    non-finite, and more (the outputs of the tiles whose input tiles hold it), never an
    output farther than a tile from it."""
    x = np.ones((1, 12, 12, 2))
    x[0, 6, 5, 1] = np.nan
    w = np.ones((3, 3, 2, 2))
    direct = np.isnan(np.asarray(_oracle_jax(x, w, ((1, 1), (1, 1)))))
    got = np.isnan(np.asarray(winograd.winograd_nhwc(x, w, ((1, 1), (1, 1)), None)))
    assert (got >= direct).all() and got.sum() > direct.sum()
    rows, cols = np.nonzero(got[0, :, :, 0])
    assert (
        np.abs(rows - 6).max() <= 2 * winograd.TILE and np.abs(cols - 5).max() <= 2 * winograd.TILE
    )


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on its copy
def test_torchs_opinfo_samples_and_error_inputs():
    """Every float64 sample of torch's conv2d OpInfo through ``impl="winograd"`` (the 3x3
    stride-1 ones by Winograd, the rest by the fallback), jitted: values and the input and
    weight gradients equal torch's; every error input raises ValueError or TypeError."""

    def plain_3x3(w_shape, kwargs):
        stride, dilation = kwargs.get("stride", 1), kwargs.get("dilation", 1)
        plain = kwargs.get("groups", 1) == 1 and stride in (1, (1, 1)) and dilation in (1, (1, 1))
        return plain and tuple(w_shape[-2:]) == (3, 3)

    assert assert_conv2d_opinfo("winograd", plain_3x3) >= 2  # geometries this path computes
