"""conv3d(impl="plane_patches") (jaxconv/kernels/plane_patches.py): a 3-D conv's values as patch
matrices of chunks of output rows, one matrix product each, with the depth-planes path's
derivatives. A seeded sweep over kernels, strides, dilations, padding forms (incl. "same"), both
layouts, odd sizes and batched/unbatched input against the float64 NumPy reference and PyTorch,
every case jitted and a quarter also eager (``JAXCONV_TEST_FULL=1``: more cases, all eager
too); chunks split along
every axis; reverse- and forward-mode derivatives against lax's; the chunk shapes; the auto
choice; and the fallback elsewhere."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    assert_forward_mode_like_lax,
    assert_gradients_like_lax,
    assert_scan_vmap_like_lax,
    case_arrays,
    case_geometry,
    draw_3d_geometry,
)
from conftest import FULL, with_variants

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import plane_patches
from jaxconv.kernels.dispatch import select_impl


def _make_case(i: int) -> dict:
    """One seeded groups-1 3-D geometry: channels, kernel, stride, dilation, a padding form,
    layout, batch (None: unbatched), bias and the chunk size (None: the default)."""
    r = np.random.default_rng(7000 + i)
    geometry = draw_3d_geometry(r, i, max_stride=3, spread=6)
    return dict(
        i=i, **geometry, groups=1, c=int(r.integers(1, 6)), o=int(r.integers(1, 6)),
        batch=[None, 1, 3][i % 3], bias=bool(i % 4), last=bool((i // 2) % 2),
        rows=[None, 1, None, 7][i % 4],
    )  # fmt: skip


CASES = [_make_case(i) for i in range(20)]
#: The cases the value sweep runs: padding form (i % 6), batch (i % 3), bias and chunk size
#: (i % 4) and layout ((i // 2) % 2) repeat every 12 cases, so the first 12 hold every
#: combination of them that the 20 do; ``JAXCONV_TEST_FULL=1``: all 20.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-k{''.join(map(str, c['k']))}-s{''.join(map(str, c['stride']))}-"
        f"p{c['padding']!s:.10}-{'last' if c['last'] else 'first'}-"
        f"{'unb' if c['batch'] is None else c['batch']}-r{c['rows']}"
    ).replace(" ", "")


def _in_layout(c: dict, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    if not c["last"]:
        return x, w, "NCDHW"
    return np.moveaxis(x, -4, -1), w.transpose(2, 3, 4, 1, 0), "NDHWC"


def _out_to_layout(c: dict, y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -4, -1) if c["last"] else y


def _torch_out(torch, c: dict, x, w, b) -> np.ndarray:
    """PyTorch's NCDHW output; per-side padding goes through F.pad first."""
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    tx, pad = t(x), c["padding"]
    if isinstance(pad, list) and isinstance(pad[0], tuple):
        flat = [p for side in reversed(pad) for p in side]  # F.pad: last axis first
        tx, pad = torch.nn.functional.pad(tx, flat), 0
    geometry = case_geometry(c) | {"padding": pad}
    return torch.nn.functional.conv3d(tx, t(w), t(b), **geometry).numpy()


def _apply(c: dict, impl: str, x, w, b):
    layout = "NDHWC" if c["last"] else "NCDHW"
    return jaxconv.conv3d(x, w, b, **case_geometry(c), layout=layout, impl=impl)


def _chunked(c: dict, x, w):
    """The values with the case's chunk size (batched input, no bias)."""
    layout = "NDHWC" if c["last"] else "NCDHW"
    geom = conv_geometry(x.shape, w.shape, **case_geometry(c), layout=layout)
    return plane_patches.chunked_forward(x, w, geom, None, rows=c["rows"])


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize(("c", "variant"), with_variants(SWEEP, _case_id))
def test_plane_patches_match_reference_and_torch(c, variant, torch):
    x, w, b = case_arrays(c)
    want = reference.conv3d(x, w, b, **case_geometry(c))
    np.testing.assert_allclose(_torch_out(torch, c, x, w, b), want, rtol=1e-10, atol=1e-10)
    xl, wl, _ = _in_layout(c, x, w)
    want = _out_to_layout(c, want)
    with jax.enable_x64(True):
        f = lambda x, w, b: _apply(c, "plane_patches", x, w, b)  # noqa: E731
        got = variant(f)(xl, wl, b)
        assert got.dtype == jnp.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("c", [c for c in CASES if c["rows"] is not None][:6], ids=_case_id)
def test_chunks_split_along_every_axis_match_reference(c):
    """Chunks of 1 or 7 output positions (split batch, planes and rows) give the same
    values (jitted; eager == jit is the public function's test above)."""
    x, w, _ = case_arrays(c)
    x = x if c["batch"] is not None else x[None]
    xl, wl, _ = _in_layout(c, x, w)
    want = _out_to_layout(c, reference.conv3d(x, w, None, **case_geometry(c)))
    with jax.enable_x64(True):
        f = lambda x, w: _chunked(c, x, w)  # noqa: E731
        np.testing.assert_allclose(jax.jit(f)(xl, wl), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("c", "variant"), with_variants([c for c in CASES if c["i"] % 3 == 1][:5], _case_id)
)
def test_plane_patches_gradients_match_lax_eager_and_jitted(c, variant):
    """plane_patches' gradients (under ``variant``) against lax's (jitted)."""
    x, w, b = case_arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    argnums = ((0, 1, 2) if b is not None else (0, 1)) if c["i"] % 2 else (1,)
    assert_gradients_like_lax(
        functools.partial(_apply, c), "plane_patches", (xl, wl, b), variant, argnums, 100 + c["i"]
    )


@pytest.mark.parametrize("c", [c for c in CASES if c["i"] % 5 == 2][:3], ids=_case_id)
def test_plane_patches_forward_mode_matches_lax(c):
    x, w, b = case_arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    assert_forward_mode_like_lax(
        functools.partial(_apply, c), "plane_patches", (xl, wl, b), 200 + c["i"], alone=0
    )


def test_chunk_shape_divides_and_fills_rows_then_planes_then_batch():
    assert plane_patches.chunk_shape(4, (30, 30, 30), 900) == (1, 1, 30)  # one plane
    assert plane_patches.chunk_shape(4, (30, 30, 30), 2000) == (1, 2, 30)  # 2 planes divide 30
    assert plane_patches.chunk_shape(4, (30, 30, 30), 450) == (1, 1, 15)  # half a plane
    assert plane_patches.chunk_shape(4, (30, 30, 30), 10**9) == (4, 30, 30)  # everything
    assert plane_patches.chunk_shape(6, (2, 3, 5), 70) == (2, 2, 3)  # 60 of 70
    assert plane_patches.chunk_shape(3, (7, 7, 7), 1) == (1, 1, 1)  # one row at least
    assert plane_patches.chunk_shape(2, (5, 13, 4), 40) == (1, 1, 1)  # 13 is prime: rows of 4
    # 27 taps x 16 float32 channels: 1728 bytes a row, a 2 MiB chunk is 1213 rows
    assert plane_patches.chunk_rows(27 * 16 * 4) == 1213
    assert plane_patches.chunk_rows(27 * 512 * 4) == plane_patches.MIN_ROWS


def _geom(c: int, size: int, o: int, k: Any, layout: str = "NCDHW", **kw):
    k = (k,) * 3 if isinstance(k, int) else k
    x_shape = (2, c, size, size, size) if layout == "NCDHW" else (2, size, size, size, c)
    w_shape = (o, c, *k) if layout == "NCDHW" else (*k, c, o)
    return conv_geometry(x_shape, w_shape, layout=layout, **kw)


def test_auto_runs_plane_patches_where_it_beat_the_planes_on_cpu():
    """float32 on CPU: unpadded stride-1 layers, and strided layers with output planes of 16x16
    or more; padded stride-1 layers (narrower than test_plane_winograd.py's) and small strided
    planes stay on the depth planes."""
    chosen = [
        _geom(4, 8, 16, 3),
        _geom(64, 8, 32, 3, "NDHWC"),
        _geom(16, 9, 8, 2, stride=(2, 1, 1), dilation=(2, 1, 1)),  # depth is free
        _geom(16, 32, 32, 3, stride=2, padding=1),  # 16x16 output planes
        _geom(8, 33, 8, 3, "NDHWC", stride=(1, 2, 2)),
    ]
    for geom in chosen:
        assert select_impl(geom, jnp.float32, "cpu") == "plane_patches"
        assert select_impl(geom, jnp.float64, "cpu") == "planes"
        assert select_impl(geom, jnp.bfloat16, "cpu") == "lax"
        assert select_impl(geom, jnp.float32, "gpu") == "lax"
    planes = [
        _geom(16, 8, 16, 3, padding=1),
        _geom(8, 8, 32, 3, "NDHWC", padding=(0, 1, 0)),
        _geom(16, 9, 32, 3, dilation=(1, 2, 1)),
        _geom(16, 16, 32, 3, stride=2, padding=1),  # 8x8 output planes
        _geom(16, 8, 32, (3, 1, 3)),  # a 1-wide window: no pad-and-crop to save
    ]
    for geom in planes:
        assert select_impl(geom, jnp.float32, "cpu") == "planes"
    assert select_impl(_geom(16, 8, 32, 1), jnp.float32, "cpu") == "lax"
    grouped = conv_geometry((2, 4, 6, 6, 6), (8, 2, 3, 3, 3), groups=2, layout="NCDHW")
    assert select_impl(grouped, jnp.float32, "cpu") == "lax"
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 16, 5, 6, 7)).astype(np.float32)
    w = r.standard_normal((8, 16, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(jaxconv.conv3d(x, w), jaxconv.conv3d(x, w, impl="plane_patches"))


def test_plane_patches_outside_groups_1_3d_is_lax():
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 4, 5, 7, 6)).astype(np.float32)
    w = r.standard_normal((6, 2, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        jaxconv.conv3d(x, w, None, 2, 1, 1, 2, impl="plane_patches"),
        jaxconv.conv3d(x, w, None, 2, 1, 1, 2, impl="lax"),
    )
    np.testing.assert_array_equal(
        jaxconv.conv2d(x[:, :, 0], w[:, :, 0], None, 2, 1, 1, 2, impl="plane_patches"),
        jaxconv.conv2d(x[:, :, 0], w[:, :, 0], None, 2, 1, 1, 2, impl="lax"),
    )
    with pytest.raises(ValueError, match=r"^impl must be one of .* for conv1d"):
        jaxconv.conv1d(x[:, :, 0, 0], w[:, :, 0, 0], impl="plane_patches")


def test_inside_scan_and_vmap_matches_lax():
    """A two-step lax.scan of plane_patches convs, its gradient, and a vmap over an outer
    axis: the same as lax's."""
    r = np.random.default_rng(8)
    x, w = r.standard_normal((2, 1, 3, 4, 5, 4)), r.standard_normal((2, 3, 3, 3, 2, 2))

    assert_scan_vmap_like_lax(
        lambda h, wk, impl: jaxconv.conv3d(h, wk, None, 1, "same", impl=impl), "plane_patches", x, w
    )


def test_float32_values_and_gradients_match_torch(torch):
    """The dispatched float32 path on a layer it is chosen for, against PyTorch's values and
    gradients."""
    r = np.random.default_rng(9)
    x = r.standard_normal((2, 16, 6, 7, 5)).astype(np.float32)
    w = (0.1 * r.standard_normal((8, 16, 3, 3, 3))).astype(np.float32)
    ct = r.standard_normal((2, 8, 4, 5, 3)).astype(np.float32)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv3d(tx, tw)
    ty.backward(torch.tensor(ct))
    geom = conv_geometry(x.shape, w.shape, layout="NCDHW")
    assert select_impl(geom, jnp.float32, "cpu") == "plane_patches"

    def f(x, w):
        y = jaxconv.conv3d(x, w)
        return jnp.sum(y * ct), y

    (gx, gw), y = jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))(x, w)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("stride", [(1, 1, 1), (1, 2, 2)])
def test_a_differentiated_call_takes_the_chunked_values(stride):
    """Differentiated or not (here the weight alone, then both), the values are the chunked
    products' (the derivatives' own loops never replace them)."""
    r = np.random.default_rng(10)
    x = r.standard_normal((2, 4, 5, 9, 8)).astype(np.float32)
    w = r.standard_normal((3, 4, 3, 3, 3)).astype(np.float32)
    geom = conv_geometry(x.shape, w.shape, stride=stride, layout="NCDHW")
    chunks = jax.jit(plane_patches.chunked_forward, static_argnums=(2, 3))(x, w, geom, None)
    conv = lambda x, w, impl: jaxconv.conv3d(x, w, None, stride, impl=impl)  # noqa: E731
    np.testing.assert_array_equal(jax.jit(conv, static_argnums=2)(x, w, "plane_patches"), chunks)
    y, _ = jax.jit(lambda w: jax.vjp(lambda w: conv(x, w, "plane_patches"), w))(w)
    np.testing.assert_array_equal(y, chunks)
    y, _ = jax.jit(lambda x, w: jax.vjp(lambda x, w: conv(x, w, "plane_patches"), x, w))(x, w)
    np.testing.assert_array_equal(y, chunks)
