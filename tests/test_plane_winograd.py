"""conv3d's values by Winograd over depth planes (jaxconv/kernels/plane_winograd.py), which
``impl="plane_patches"`` computes for wide 3x3 (H, W) windows at stride 1 in float32. The
values in float64 against the float64 NumPy reference over a seeded sweep (depth kernels,
strides, dilations and paddings, (H, W) paddings per side, both layouts), jitted and eager;
the float32 error against the oracle next to XLA's direct convolution's; the dispatched path
in float32 against PyTorch, values and gradients, and its reverse- and forward-mode
derivatives against lax's; the footprint of a non-finite input; which layers the CPU
dispatch sends to it; and the geometries it refuses."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import plane_patches, winograd
from jaxconv.kernels.dispatch import select_impl
from jaxconv.kernels.plane_winograd import (
    plane_winograd_applies,
    plane_winograd_values,
    plane_winograd_wins,
)


def _case(i: int) -> dict:
    """A seeded geometry the values apply to: depth kernel 1-3, stride 1-2, dilation 1-2 and
    padding 0-2 per side; (H, W) padding 0-2 per side; channels 1-5; both layouts."""
    r = np.random.default_rng(8100 + i)
    kd, sd, dd = int(r.integers(1, 4)), int(r.integers(1, 3)), int(r.integers(1, 3))
    pads = tuple(tuple(int(p) for p in r.integers(0, 3, 2)) for _ in range(3))
    d = (kd - 1) * dd + 1 + int(r.integers(0, 4)) - sum(pads[0])
    size = (max(d, (kd - 1) * dd + 1), *(int(s) for s in r.integers(3, 9, 2)))
    return dict(
        i=i, n=int(r.integers(1, 3)), c=int(r.integers(1, 6)), o=int(r.integers(1, 6)),
        kd=kd, stride=(sd, 1, 1), dilation=(dd, 1, 1), padding=pads, size=size,
        layout=["NCDHW", "NDHWC"][i % 2],
    )  # fmt: skip


CASES = [_case(i) for i in range(12)]


def _arrays(c: dict, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, D, H, W) and w (O, C, kd, 3, 3), channels first."""
    r = np.random.default_rng(c["i"])
    x = r.standard_normal((c["n"], c["c"], *c["size"])).astype(dtype)
    w = r.standard_normal((c["o"], c["c"], c["kd"], 3, 3)).astype(dtype)
    return x, w


def _to_layout(layout: str, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if layout == "NCDHW":
        return x, w
    return x.transpose(0, 2, 3, 4, 1), w.transpose(2, 3, 4, 1, 0)


def _out(layout: str, y: np.ndarray) -> np.ndarray:
    return y if layout == "NCDHW" else np.moveaxis(y, 1, -1)


def _kwargs(c: dict) -> dict:
    return dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"])


def _geometry(c: dict, x: np.ndarray, w: np.ndarray):
    return conv_geometry(x.shape, w.shape, **_kwargs(c), layout=c["layout"])


def _id(c: dict) -> str:
    return f"{c['i']}-k{c['kd']}-s{c['stride'][0]}-d{c['dilation'][0]}-{c['layout']}"


@pytest.mark.parametrize("c", CASES, ids=_id)
def test_values_equal_the_reference_in_float64(c):
    x, w = _arrays(c)
    want = _out(c["layout"], reference.conv3d(x, w, None, **_kwargs(c)))
    xl, wl = _to_layout(c["layout"], x, w)
    geom = _geometry(c, xl, wl)
    assert plane_winograd_applies(geom)
    with jax.enable_x64(True):
        f = lambda x, w: plane_winograd_values(x, w, geom, None)  # noqa: E731
        got = jax.jit(f)(xl, wl)
        assert got.dtype == jnp.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        if c["i"] % 4 == 0:
            np.testing.assert_allclose(f(xl, wl), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
def test_float32_error_stays_near_a_direct_convolutions(layout):
    """Against the float64 oracle, the float32 error on a family-sized layer is at most a few
    times that of XLA's direct 3-D convolution, and small relative to the outputs."""
    r = np.random.default_rng(11)
    x = r.standard_normal((2, 16, 12, 14, 13))
    w = r.standard_normal((32, 16, 3, 3, 3)) * 0.05
    kwargs = dict(stride=1, padding=((0, 0), (1, 1), (0, 2)), dilation=1)
    want = _out(layout, reference.conv3d(x, w, None, **kwargs))
    xl, wl = (jnp.asarray(a, jnp.float32) for a in _to_layout(layout, x, w))
    geom = conv_geometry(xl.shape, wl.shape, **kwargs, layout=layout)
    got = jax.jit(lambda x, w: plane_winograd_values(x, w, geom, None))(xl, wl)
    direct = jaxconv.conv3d(xl, wl, None, **kwargs, layout=layout, impl="lax")
    scale = np.abs(want).max()
    err, direct_err = (np.abs(np.asarray(a, np.float64) - want).max() for a in (got, direct))
    assert err / scale < 2e-5
    assert err < 10 * direct_err


def _wide_layer(layout: str, padding) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """A float32 layer the CPU dispatch sends to these values: 16 -> 32 channels, k3, 8x10x9
    input; channels first arrays, and the conv3d keywords."""
    r = np.random.default_rng(12)
    x = r.standard_normal((2, 16, 8, 10, 9)).astype(np.float32)
    w = (0.1 * r.standard_normal((32, 16, 3, 3, 3))).astype(np.float32)
    kwargs = dict(stride=1, padding=padding, dilation=1)
    out = conv_geometry(x.shape, w.shape, **kwargs, layout="NCDHW").out_size
    ct = r.standard_normal((2, 32, *out)).astype(np.float32)
    return x, w, ct, kwargs


@pytest.mark.parametrize(("layout", "padding"), [("NCDHW", 0), ("NDHWC", 1), ("NCDHW", (1, 2, 0))])
def test_the_dispatched_path_equals_torch_values_and_gradients(layout, padding, torch):
    x, w, ct, kwargs = _wide_layer(layout, padding)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv3d(tx, tw, None, **kwargs)
    ty.backward(torch.tensor(ct))
    xl, wl = _to_layout(layout, x, w)
    geom = conv_geometry(xl.shape, wl.shape, **kwargs, layout=layout)
    assert plane_winograd_wins(geom)
    assert select_impl(geom, jnp.float32, "cpu") == "plane_patches"

    def f(x, w):
        y = jaxconv.conv3d(x, w, None, **kwargs, layout=layout)
        return jnp.sum(y * _out(layout, ct)), y

    (gx, gw), y = jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))(xl, wl)
    want_x, want_w = _to_layout(layout, tx.grad.numpy(), tw.grad.numpy())
    np.testing.assert_allclose(y, _out(layout, ty.detach().numpy()), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, want_w, rtol=1e-4, atol=1e-3)
    eager = jaxconv.conv3d(xl, wl, None, **kwargs, layout=layout)
    np.testing.assert_allclose(eager, y, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
def test_derivatives_equal_lax(layout):
    """float32, a layer whose values come from Winograd: reverse mode (jitted and eager),
    forward mode and a second derivative against lax's."""
    x, w, ct, kwargs = _wide_layer(layout, 1)
    xl, wl = _to_layout(layout, x, w)
    ct = _out(layout, ct)

    def apply(impl, x, w):
        return jaxconv.conv3d(x, w, None, **kwargs, layout=layout, impl=impl)

    def grads(impl, jit=True):
        f = jax.grad(lambda x, w: jnp.sum(apply(impl, x, w) * ct), argnums=(0, 1))
        return (jax.jit(f) if jit else f)(xl, wl)

    def jvp(impl):
        r = np.random.default_rng(14)
        tx, tw = r.standard_normal(xl.shape), r.standard_normal(wl.shape)
        primals = (jnp.asarray(xl), jnp.asarray(wl))
        tangents = (jnp.asarray(tx, jnp.float32), jnp.asarray(tw, jnp.float32))
        return jax.jit(lambda p, t: jax.jvp(lambda x, w: apply(impl, x, w), p, t))(
            primals, tangents
        )

    def second(impl):
        inner = jax.grad(lambda x: jnp.sum(apply(impl, x, wl) ** 2))
        return jax.jit(jax.grad(lambda x: jnp.vdot(inner(x), x)))(xl)

    want = grads("lax")
    for got in (grads("plane_patches"), grads("plane_patches", jit=False)):
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-3)
    for a, b in zip(jvp("plane_patches"), jvp("lax"), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-3)
    np.testing.assert_allclose(second("plane_patches"), second("lax"), rtol=1e-4, atol=1e-1)


def test_a_non_finite_input_reaches_the_outputs_of_its_tiles():
    """As documented: a NaN input makes non-finite every output a direct conv makes
    non-finite, and more (those of the tiles whose input tiles hold it), never an output
    farther than a tile from it in (H, W), nor outside the depth planes that read it."""
    x = np.ones((1, 2, 5, 12, 12))
    x[0, 1, 2, 6, 5] = np.nan
    w = np.ones((2, 2, 3, 3, 3))
    geom = conv_geometry(x.shape, w.shape, padding=1, layout="NCDHW")
    direct = np.isnan(reference.conv3d(x, w, None, padding=1))
    got = np.isnan(np.asarray(plane_winograd_values(x, w, geom, None)))
    assert (got >= direct).all() and got.sum() > direct.sum()
    planes, rows, cols = np.nonzero(got[0, 0])
    assert set(planes) == {1, 2, 3}
    assert np.abs(rows - 6).max() <= 2 * winograd.TILE
    assert np.abs(cols - 5).max() <= 2 * winograd.TILE


def _geom(c: int, size: int, o: int, k=3, layout: str = "NCDHW", **kwargs):
    k = (k,) * 3 if isinstance(k, int) else k
    x_shape = (2, c, size, size, size) if layout == "NCDHW" else (2, size, size, size, c)
    w_shape = (o, c, *k) if layout == "NCDHW" else (*k, c, o)
    return conv_geometry(x_shape, w_shape, layout=layout, **kwargs)


def test_the_cpu_dispatch_takes_it_for_wide_3x3_stride_1_float32_layers():
    """kd*C and O at least 32, (H, W) window 3x3 at stride 1, planes of 6x6 outputs or more:
    padded or not, any depth stride; the values under plane_patches are Winograd's there,
    the chunked products' elsewhere."""
    chosen = [
        _geom(16, 32, 32),
        _geom(16, 8, 32, padding=1),
        _geom(16, 8, 32, layout="NDHWC", padding=(0, 1, 0)),
        _geom(32, 8, 32, k=(1, 3, 3), padding=(0, 1, 1)),
        _geom(16, 9, 40, stride=(2, 1, 1), dilation=(2, 1, 1)),
    ]
    for geom in chosen:
        assert plane_winograd_wins(geom)
        assert select_impl(geom, jnp.float32, "cpu") == "plane_patches"
        assert select_impl(geom, jnp.float64, "cpu") == "planes"
        assert select_impl(geom, jnp.float32, "gpu") == "lax"
    refused = [
        _geom(8, 8, 32),  # 24 stacked channels
        _geom(16, 8, 16),  # 16 outputs
        _geom(16, 6, 32),  # 4x4 output planes
        _geom(16, 8, 32, stride=(1, 2, 2)),
        _geom(16, 9, 32, dilation=(1, 2, 1)),
        _geom(16, 8, 32, k=(3, 3, 2)),
        _geom(16, 8, 32, padding=(0, 3, 0)),
    ]
    for geom in refused:
        assert not plane_winograd_wins(geom)
    r = np.random.default_rng(13)
    x = r.standard_normal((1, 16, 5, 8, 8)).astype(np.float32)
    w = r.standard_normal((32, 16, 3, 3, 3)).astype(np.float32)
    geom = conv_geometry(x.shape, w.shape, layout="NCDHW")
    np.testing.assert_array_equal(
        jaxconv.conv3d(x, w), jax.jit(plane_patches.values, static_argnums=(2, 3))(x, w, geom, None)
    )
    by_winograd = jax.jit(plane_winograd_values, static_argnums=(2, 3))
    np.testing.assert_array_equal(jaxconv.conv3d(x, w), by_winograd(x, w, geom, None))


def test_geometries_it_refuses_raise():
    x, w = np.ones((1, 2, 5, 8, 8)), np.ones((2, 2, 3, 3, 3))
    geom = conv_geometry(x.shape, w.shape, stride=(1, 2, 1), layout="NCDHW")
    with pytest.raises(ValueError, match="3x3 .*windows at stride 1"):
        plane_winograd_values(x, w, geom, None)
