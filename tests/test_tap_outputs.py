"""conv1d(impl="tap_outputs") (jaxconv/kernels/tap_outputs.py): a channels-first 1-D conv's values
as one matrix product per batch item with the taps stacked on the output rows, with XLA's conv's
derivatives. A seeded sweep over kernels, strides, dilations, padding forms (incl. "same" and
per-side), groups (which fall back to lax), both layouts (NLC falls back to lax), odd lengths and
batched/unbatched input against the float64 NumPy reference and PyTorch, every case jitted and
a quarter also eager (``JAXCONV_TEST_FULL=1``: twice the cases, all eager too); reverse- and
forward-mode derivatives against lax's; the auto choice; and the fallbacks."""

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
)
from conftest import FULL, with_variants

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import tap_outputs
from jaxconv.kernels.dispatch import select_impl


def _make_case(i: int) -> dict:
    """One seeded 1-D geometry: groups, channels, kernel, stride, dilation, a padding form,
    layout, batch (None: unbatched) and bias."""
    r = np.random.default_rng(8000 + i)
    groups = [1, 1, 1, 2, 1, 3][i % 6]
    cg, og = int(r.integers(1, 5)), int(r.integers(1, 5))
    k, d = int(r.integers(1, 8)), int(r.integers(1, 4))
    form = ["int", "same", "sides", "valid", "tuple", "int", "sides"][i % 7]
    stride = int(r.choice([1, 1, 2, 3]))
    if form == "int":
        padding = int(r.integers(0, 4))
    elif form == "tuple":
        padding = (int(r.integers(0, 4)),)
    elif form == "sides":
        padding = [(int(r.integers(0, 4)), int(r.integers(0, 4)))]
    else:
        padding = form
    if form == "same":
        stride = 1
    pads = reference.conv._conv_padding(padding, (k,), (d,))
    size = (max(1, d * (k - 1) + 1 - sum(pads[0]) + int(r.integers(0, 40))),)
    return dict(
        i=i, groups=groups, c=cg * groups, o=og * groups, k=(k,), size=size, stride=stride,
        padding=padding, dilation=d, batch=[None, 1, 3][i % 3], bias=bool(i % 4),
        last=i % 5 == 4,
    )  # fmt: skip


CASES = [_make_case(i) for i in range(24)]
#: The cases the value sweep runs: the first 12 hold every padding form (i % 7), groups
#: (i % 6), batch (i % 3), bias (i % 4) and both layouts (NLC at i % 5 == 4);
#: ``JAXCONV_TEST_FULL=1``: all 24.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-g{c['groups']}-k{c['k'][0]}-s{c['stride']}-d{c['dilation']}-"
        f"p{c['padding']!s:.10}-{'last' if c['last'] else 'first'}-"
        f"{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


def _in_layout(c: dict, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.moveaxis(x, -2, -1), w.transpose(2, 1, 0)) if c["last"] else (x, w)


def _out_to_layout(c: dict, y: np.ndarray) -> np.ndarray:
    return np.moveaxis(y, -2, -1) if c["last"] else y


def _torch_out(torch, c: dict, x, w, b) -> np.ndarray:
    """PyTorch's NCL output; per-side padding goes through F.pad first."""
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    tx, pad = t(x), c["padding"]
    if isinstance(pad, list):
        tx, pad = torch.nn.functional.pad(tx, list(pad[0])), 0
    geometry = case_geometry(c) | {"padding": pad}
    return torch.nn.functional.conv1d(tx, t(w), t(b), **geometry).numpy()


def _apply(c: dict, impl: str, x, w, b):
    layout = "NLC" if c["last"] else "NCL"
    return jaxconv.conv1d(x, w, b, **case_geometry(c), layout=layout, impl=impl)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize(("c", "variant"), with_variants(SWEEP, _case_id))
def test_tap_outputs_match_reference_and_torch(c, variant, torch):
    x, w, b = case_arrays(c)
    want = reference.conv1d(x, w, b, **case_geometry(c))
    np.testing.assert_allclose(_torch_out(torch, c, x, w, b), want, rtol=1e-10, atol=1e-10)
    xl, wl = _in_layout(c, x, w)
    want = _out_to_layout(c, want)
    with jax.enable_x64(True):
        f = lambda x, w, b: _apply(c, "tap_outputs", x, w, b)  # noqa: E731
        got = variant(f)(xl, wl, b)
        assert got.dtype == jnp.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    ("c", "variant"), with_variants([c for c in CASES if c["i"] % 3 == 1], _case_id)
)
def test_tap_outputs_gradients_match_lax_eager_and_jitted(c, variant):
    """tap_outputs' gradients (under ``variant``) against lax's (jitted)."""
    x, w, b = case_arrays(c)
    xl, wl = _in_layout(c, x, w)
    argnums = ((0, 1, 2) if b is not None else (0, 1)) if c["i"] % 2 else (0,)
    assert_gradients_like_lax(
        functools.partial(_apply, c), "tap_outputs", (xl, wl, b), variant, argnums, 100 + c["i"]
    )


@pytest.mark.parametrize("c", [c for c in CASES if c["i"] % 4 == 2], ids=_case_id)
def test_tap_outputs_forward_mode_matches_lax(c):
    x, w, b = case_arrays(c)
    xl, wl = _in_layout(c, x, w)
    assert_forward_mode_like_lax(
        functools.partial(_apply, c), "tap_outputs", (xl, wl, b), 200 + c["i"], alone=1
    )


def test_auto_runs_tap_outputs_for_float32_ncl_stride_1_on_cpu():
    chosen = [
        conv_geometry((32, 64, 4000), (64, 64, 9), layout="NCL"),
        conv_geometry((2, 1, 50), (16, 1, 9), padding="same", dilation=2, layout="NCL"),
    ]
    for geom in chosen:
        assert select_impl(geom, jnp.float32, "cpu") == "tap_outputs"
        assert select_impl(geom, jnp.float64, "cpu") == "lax"
        assert select_impl(geom, jnp.bfloat16, "cpu") == "lax"
        assert select_impl(geom, jnp.float32, "gpu") == "lax"
    others = [
        conv_geometry((32, 64, 4000), (64, 64, 9), stride=2, layout="NCL"),  # strided
        conv_geometry((2, 50, 8), (9, 8, 16), layout="NLC"),  # channels last
        conv_geometry((2, 8, 50), (16, 8, 1), layout="NCL"),  # pointwise
        conv_geometry((2, 8, 50), (16, 4, 3), groups=2, layout="NCL"),  # grouped
        conv_geometry((1, 64, 2**20), (64, 64, 9), layout="NCL"),  # Z over MAX_Z_BYTES
    ]
    for geom in others:
        assert select_impl(geom, jnp.float32, "cpu") == "lax"
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 16, 37)).astype(np.float32)
    w = r.standard_normal((8, 16, 5)).astype(np.float32)
    np.testing.assert_array_equal(jaxconv.conv1d(x, w), jaxconv.conv1d(x, w, impl="tap_outputs"))


def test_tap_outputs_outside_its_geometries_is_lax():
    r = np.random.default_rng(6)
    x = r.standard_normal((2, 4, 33)).astype(np.float32)
    w = r.standard_normal((6, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(
        jaxconv.conv1d(x, w, None, 1, 1, 1, 2, impl="tap_outputs"),
        jaxconv.conv1d(x, w, None, 1, 1, 1, 2, impl="lax"),
    )
    geom = conv_geometry((1, 64, 2**20), (64, 64, 9), layout="NCL")
    assert not tap_outputs.tap_outputs_apply(geom)
    assert tap_outputs.tap_outputs_apply(geom, itemsize=1) is False  # 9*64*2**20 bytes
    assert tap_outputs.tap_outputs_apply(conv_geometry((1, 64, 2**14), (64, 64, 9), layout="NCL"))
    with pytest.raises(ValueError, match=r"^impl must be one of .* for conv3d"):
        jaxconv.conv3d(x[..., None, None], w[..., None, None], impl="tap_outputs")


def test_inside_scan_and_vmap_matches_lax():
    """A two-step lax.scan of tap_outputs convs, its gradient, and a vmap over an outer axis:
    the same as lax's."""
    r = np.random.default_rng(8)
    x, w = r.standard_normal((2, 2, 3, 17)), r.standard_normal((2, 3, 3, 4))

    assert_scan_vmap_like_lax(
        lambda h, wk, impl: jaxconv.conv1d(h, wk, None, 1, "same", impl=impl), "tap_outputs", x, w
    )


def test_float32_values_and_gradients_match_torch(torch):
    """The dispatched float32 path against PyTorch's values and gradients."""
    r = np.random.default_rng(9)
    x = r.standard_normal((3, 16, 101)).astype(np.float32)
    w = (0.1 * r.standard_normal((8, 16, 9))).astype(np.float32)
    ct = r.standard_normal((3, 8, 97)).astype(np.float32)
    geom = conv_geometry(x.shape, w.shape, padding=2, dilation=1, layout="NCL")
    assert select_impl(geom, jnp.float32, "cpu") == "tap_outputs"
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv1d(tx, tw, None, 1, 2)
    ty.backward(torch.tensor(ct))

    def f(x, w):
        y = jaxconv.conv1d(x, w, None, 1, 2)
        return jnp.sum(y * ct), y

    (gx, gw), y = jax.jit(jax.grad(f, argnums=(0, 1), has_aux=True))(x, w)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)
