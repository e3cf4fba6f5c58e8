"""conv3d(impl="planes") (jaxconv/kernels/planes.py): a 3-D conv as ONE 2-D conv over the depth
taps stacked on the channel axis. A seeded sweep over groups, kernels, strides, dilations,
padding forms (incl. "same"), both layouts and batched/unbatched input against the float64 NumPy
reference and PyTorch, every case jitted and a quarter also eager (``JAXCONV_TEST_FULL=1``:
twice the cases, all eager too); reverse- and forward-mode derivatives against lax's; the
stacking's channel order; the auto choice; and the fallback elsewhere."""

from __future__ import annotations

import functools

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
from jaxconv.kernels import planes
from jaxconv.kernels.dispatch import select_impl


def _make_case(i: int) -> dict:
    """One seeded 3-D geometry: groups, channels, kernel, stride, dilation, a padding form,
    layout, batch (None: unbatched) and bias."""
    r = np.random.default_rng(3000 + i)
    groups = int(r.choice([1, 1, 2, 3]))
    cg, og = int(r.integers(1, 3)), int(r.integers(1, 3))
    geometry = draw_3d_geometry(r, i, max_stride=2, spread=4)
    return dict(
        i=i, **geometry, groups=groups, c=cg * groups, o=og * groups,
        batch=[None, 1, 2][i % 3], bias=bool(i % 4), last=bool((i // 2) % 2),
    )  # fmt: skip


CASES = [_make_case(i) for i in range(24)]
#: The cases the tests run: padding form (i % 6), batch (i % 3), bias (i % 4) and layout
#: ((i // 2) % 2) repeat every 12 cases, so the first 12 hold every combination of them that
#: the 24 do; ``JAXCONV_TEST_FULL=1``: all 24.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-g{c['groups']}-k{''.join(map(str, c['k']))}-p{c['padding']!s:.10}-"
        f"{'last' if c['last'] else 'first'}-{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


_arrays = case_arrays
_geometry = case_geometry


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
    return torch.nn.functional.conv3d(tx, t(w), t(b), **(_geometry(c) | {"padding": pad})).numpy()


def _apply(c: dict, impl: str, x, w, b):
    layout = "NDHWC" if c["last"] else "NCDHW"
    return jaxconv.conv3d(x, w, b, **_geometry(c), layout=layout, impl=impl)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize(("c", "variant"), with_variants(SWEEP, _case_id))
def test_planes_match_reference_and_torch(c, variant, torch):
    x, w, b = _arrays(c)
    want = reference.conv3d(x, w, b, **_geometry(c))
    np.testing.assert_allclose(_torch_out(torch, c, x, w, b), want, rtol=1e-10, atol=1e-10)
    xl, wl, _ = _in_layout(c, x, w)
    want = _out_to_layout(c, want)
    with jax.enable_x64(True):
        f = lambda x, w, b: _apply(c, "planes", x, w, b)  # noqa: E731
        got = variant(f)(xl, wl, b)
        assert got.dtype == jnp.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("c", "variant"), with_variants([c for c in SWEEP if c["i"] % 3 == 1], _case_id)
)
def test_planes_gradients_match_lax_eager_and_jitted(c, variant):
    """planes' gradients (under ``variant``) against lax's (jitted)."""
    x, w, b = _arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    argnums = (0, 1, 2) if b is not None else (0, 1)
    assert_gradients_like_lax(
        functools.partial(_apply, c), "planes", (xl, wl, b), variant, argnums, 100 + c["i"]
    )


@pytest.mark.parametrize("c", [c for c in SWEEP if c["i"] % 4 == 2], ids=_case_id)
def test_planes_forward_mode_matches_lax(c):
    x, w, b = _arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    assert_forward_mode_like_lax(functools.partial(_apply, c), "planes", (xl, wl, b), 200 + c["i"])


@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
def test_stacked_channels_are_ordered_groups_then_depth_taps(layout):
    """Channel ``(g*kd + a)*C/G + j`` of the stacked input is depth tap ``a`` of input channel
    ``g*C/G + j``, and the stacked kernel pairs each with the same (a, j) weight."""
    n, c, d, h, w, groups, kd = 2, 6, 5, 3, 4, 2, 3
    x = np.arange(n * c * d * h * w, dtype=np.float64).reshape(n, c, d, h, w)
    wt = np.arange(4 * (c // groups) * kd * 2 * 2, dtype=np.float64).reshape(
        4, c // groups, kd, 2, 2
    )
    xl, wl = (x, wt) if layout == "NCDHW" else (np.moveaxis(x, 1, -1), wt.transpose(2, 3, 4, 1, 0))
    geom = conv_geometry(xl.shape, wl.shape, stride=(2, 1, 1), padding=(1, 0, 0), groups=groups,
                         layout=layout)  # fmt: skip
    od = geom.out_size[0]  # (5 + 2 - 3) // 2 + 1 = 3
    with jax.enable_x64(True):
        stacked = np.asarray(planes.stacked_input(jnp.asarray(xl), geom))
        kernel = np.asarray(planes.stacked_kernel(jnp.asarray(wl), geom))
    assert stacked.shape == (n * od, h, w, kd * c) and kernel.shape == (2, 2, kd * c // groups, 4)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0), (0, 0)))
    cg = c // groups
    for g, a, j, z in np.ndindex(groups, kd, cg, od):
        channel = (g * kd + a) * cg + j
        want = padded[:, g * cg + j, z * 2 + a]  # (N, H, W)
        np.testing.assert_array_equal(stacked[z::od, :, :, channel], want)
        np.testing.assert_array_equal(kernel[:, :, a * cg + j, :], wt[:, j, a].transpose(1, 2, 0))


def test_auto_runs_planes_on_cpu_for_3d_float_convs_with_groups_1():
    g = conv_geometry((2, 4, 6, 6, 6), (8, 4, 3, 3, 3), padding=1, layout="NCDHW")
    last = conv_geometry((2, 6, 6, 6, 4), (1, 3, 3, 4, 8), stride=2, layout="NDHWC")
    for geom in (g, last):
        assert select_impl(geom, jnp.float32, "cpu") == "planes"
        assert select_impl(geom, jnp.float64, "cpu") == "planes"
        assert select_impl(geom, jnp.bfloat16, "cpu") == "lax"
        assert select_impl(geom, jnp.float32, "gpu") == "lax"
    pointwise = conv_geometry((2, 4, 6, 6, 6), (8, 4, 1, 1, 1), layout="NCDHW")
    grouped = conv_geometry((2, 4, 6, 6, 6), (8, 2, 3, 3, 3), groups=2, layout="NCDHW")
    for geom in (pointwise, grouped):
        assert select_impl(geom, jnp.float32, "cpu") == "lax"
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 4, 6, 6, 6)).astype(np.float32)
    w = r.standard_normal((8, 4, 3, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        jaxconv.conv3d(x, w, padding=1), jaxconv.conv3d(x, w, padding=1, impl="planes")
    )


def test_planes_outside_3d_is_lax():
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = r.standard_normal((6, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        jaxconv.conv2d(x, w, None, 2, 1, 1, 2, impl="planes"),
        jaxconv.conv2d(x, w, None, 2, 1, 1, 2, impl="lax"),
    )
    with pytest.raises(ValueError, match=r"^impl must be one of .* for conv1d .*'planes' 3-D"):
        jaxconv.conv1d(x[0], w[:, :, 0], impl="planes")


def test_planes_keeps_low_precision_dtypes():
    r = np.random.default_rng(7)
    x, w = r.standard_normal((1, 2, 5, 5, 5)), r.standard_normal((3, 2, 2, 3, 2))
    want = reference.conv3d(x, w, None, 1, 1)
    got = jaxconv.conv3d(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), None, 1, 1, impl="planes")
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=0.1 * np.abs(want).max())


def test_inside_scan_and_vmap_matches_lax():
    """A two-step lax.scan of planes convs, its gradient, and a vmap over an outer axis: the
    same as lax's."""
    r = np.random.default_rng(8)
    x, w = r.standard_normal((2, 1, 3, 4, 4, 4)), r.standard_normal((2, 3, 3, 3, 2, 2))

    assert_scan_vmap_like_lax(
        lambda h, wk, impl: jaxconv.conv3d(h, wk, None, 1, "same", impl=impl), "planes", x, w
    )


@pytest.mark.parametrize("layout", ["NCDHW", "NDHWC"])
def test_unpadded_plane_convs_run_padded_and_cropped(layout, torch):
    """An unpadded stride-1 conv takes the pad-by-one-and-crop 2-D conv: values against the
    reference and torch, gradients against lax."""
    r = np.random.default_rng(9)
    x, w = r.standard_normal((2, 3, 5, 6, 7)), r.standard_normal((4, 3, 2, 3, 2))
    want = reference.conv3d(x, w, None, (2, 1, 1), 0, (2, 1, 1))
    t = torch.nn.functional.conv3d(torch.tensor(x), torch.tensor(w), None, (2, 1, 1), 0, (2, 1, 1))
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-10, atol=1e-10)
    xl, wl = (x, w) if layout == "NCDHW" else (np.moveaxis(x, 1, -1), w.transpose(2, 3, 4, 1, 0))
    want = want if layout == "NCDHW" else np.moveaxis(want, 1, -1)
    geom = conv_geometry(xl.shape, wl.shape, stride=(2, 1, 1), dilation=(2, 1, 1), layout=layout)
    x2 = planes.stacked_input(jnp.asarray(xl), geom)
    w2 = planes.stacked_kernel(jnp.asarray(wl), geom)
    assert planes.pads_and_crops(planes.plane_geometry(x2.shape, w2.shape, geom))
    ct = r.standard_normal(want.shape)

    def loss(impl):
        def f(x, w):
            y = jaxconv.conv3d(x, w, None, (2, 1, 1), 0, (2, 1, 1), layout=layout, impl=impl)
            return jnp.sum(y * ct), y

        return jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))

    with jax.enable_x64(True):
        (gx, gw), y = loss("planes")(xl, wl)
        np.testing.assert_allclose(y, want, rtol=1e-10, atol=1e-10)
        (wx, ww), _ = loss("lax")(xl, wl)
        np.testing.assert_allclose(gx, wx, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(gw, ww, rtol=1e-10, atol=1e-10)
