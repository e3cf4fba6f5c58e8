"""The derivatives of conv3d(impl="plane_patches") (jaxconv/kernels/plane_patches.py): the
input's through the depth planes, the kernel's as chunked patch products whose transpose is
the chunked weight gradient (:func:`~jaxconv.kernels.plane_patches.kernel_tangent`).

A seeded sweep over kernels, strides, dilations, padding forms, both layouts, odd sizes and
batched/unbatched input, float64: reverse-mode gradients against PyTorch's autograd (float64)
and the weight gradient also against one built from the float64 NumPy reference; forward mode
against the reference (the conv is bilinear, so its tangent is ``conv(tx, w) + conv(x, tw)``
exactly); every case jitted and a quarter eager (``JAXCONV_TEST_FULL=1``: more cases,
all eager). The kernel tangent and its transpose with
chunks split along every axis; second-order derivatives against lax's.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    case_arrays,
    case_geometry,
    draw_3d_geometry,
)
from conftest import FULL, with_variants

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import plane_patches


def _make_case(i: int) -> dict:
    """One seeded groups-1 3-D geometry: channels, kernel, stride, dilation, a padding form,
    layout, batch (None: unbatched) and a chunk size for the kernel tangent alone."""
    r = np.random.default_rng(9100 + i)
    geometry = draw_3d_geometry(r, i, max_stride=3, spread=5)
    return dict(
        i=i, **geometry, groups=1, c=int(r.integers(1, 5)), o=int(r.integers(1, 5)),
        batch=[None, 1, 3][i % 3], bias=False,
        last=bool((i // 3) % 2), rows=[1, 5, 16][i % 3],
    )  # fmt: skip


CASES = [_make_case(i) for i in range(20)]
#: The cases the derivative sweep runs: padding form (i % 6), batch and chunk size (i % 3)
#: and layout ((i // 3) % 2) repeat every 6 cases, so the first 12 hold every combination
#: of them twice; ``JAXCONV_TEST_FULL=1``: all 20.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-k{''.join(map(str, c['k']))}-s{''.join(map(str, c['stride']))}-"
        f"d{''.join(map(str, c['dilation']))}-p{c['padding']!s:.10}-"
        f"{'last' if c['last'] else 'first'}-{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


def _layout(c: dict) -> str:
    return "NDHWC" if c["last"] else "NCDHW"


def _to_layout(c: dict, a: np.ndarray) -> np.ndarray:
    """A channels-first activation (batched or not) in the case's layout."""
    return np.moveaxis(a, -4, -1) if c["last"] else a


def _kernel_to_layout(c: dict, w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 4, 1, 0) if c["last"] else w


def _conv(c: dict, impl: str):
    return lambda x, w: jaxconv.conv3d(x, w, None, **case_geometry(c), layout=_layout(c), impl=impl)


def _torch_grads(torch, c: dict, x: np.ndarray, w: np.ndarray, ct: np.ndarray):
    """PyTorch float64 gradients of <conv3d(x, w), ct> (channels first; per-side padding
    through F.pad first)."""
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    px, pad = tx, c["padding"]
    if isinstance(pad, list) and isinstance(pad[0], tuple):
        flat = [p for side in reversed(pad) for p in side]  # F.pad: last axis first
        px, pad = torch.nn.functional.pad(tx, flat), 0
    geometry = case_geometry(c) | {"padding": pad}
    y = torch.nn.functional.conv3d(px, tw, **geometry)
    (y * torch.tensor(ct)).sum().backward()
    return tx.grad.numpy(), tw.grad.numpy()


def _reference_weight_grad(c: dict, x: np.ndarray, w: np.ndarray, ct: np.ndarray) -> np.ndarray:
    """d<conv3d(x, w), ct>/dw from the float64 NumPy reference: the conv is linear in w, so
    the entry (o, ci, a, b, e) is <conv3d(x, E), ct>[o] for the kernel E that is 1 at
    (every o, ci, a, b, e) and 0 elsewhere."""
    grad = np.zeros_like(w)
    batched = ct if c["batch"] is not None else ct[None]
    for ci, a, b, e in itertools.product(range(w.shape[1]), *(range(k) for k in w.shape[2:])):
        unit = np.zeros_like(w)
        unit[:, ci, a, b, e] = 1.0
        y = reference.conv3d(x, unit, None, **case_geometry(c))
        y = y if c["batch"] is not None else y[None]
        grad[:, ci, a, b, e] = np.sum(y * batched, axis=(0, 2, 3, 4))
    return grad


def _cotangent(c: dict, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A seeded channels-first cotangent of the conv's output."""
    shape = reference.conv3d(x, w, None, **case_geometry(c)).shape
    return np.random.default_rng(300 + c["i"]).standard_normal(shape)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize(("c", "variant"), with_variants(SWEEP, _case_id))
def test_gradients_match_torch_and_the_reference(c, variant, torch):
    """Reverse mode (input and weight together, and the weight alone as when the input is
    data) against PyTorch and the reference's weight gradient; forward mode against the
    reference."""
    x, w, _ = case_arrays(c)
    ct = _cotangent(c, x, w)
    want_x, want_w = _torch_grads(torch, c, x, w, ct)
    np.testing.assert_allclose(want_w, _reference_weight_grad(c, x, w, ct), rtol=1e-9, atol=1e-9)
    r = np.random.default_rng(400 + c["i"])
    tx, tw = r.standard_normal(x.shape), r.standard_normal(w.shape)
    want_t = reference.conv3d(tx, w, None, **case_geometry(c))
    want_t = want_t + reference.conv3d(x, tw, None, **case_geometry(c))
    conv = _conv(c, "plane_patches")
    xl, wl, ctl = _to_layout(c, x), _kernel_to_layout(c, w), _to_layout(c, ct)
    txl, twl = _to_layout(c, tx), _kernel_to_layout(c, tw)

    def derivatives(x, w, ct, tx, tw):
        loss = lambda x, w: jnp.sum(conv(x, w) * ct)  # noqa: E731
        both = jax.grad(loss, argnums=(0, 1))(x, w)
        alone = jax.grad(loss, argnums=1)(x, w)
        return both, alone, jax.jvp(conv, (x, w), (tx, tw))[1]

    with jax.enable_x64(True):
        (gx, gw), gw_alone, t = variant(derivatives)(xl, wl, ctl, txl, twl)
    want_wl = _kernel_to_layout(c, want_w)
    np.testing.assert_allclose(gx, _to_layout(c, want_x), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gw, want_wl, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gw_alone, want_wl, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(t, _to_layout(c, want_t), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("c", CASES[::4], ids=_case_id)
def test_kernel_tangent_and_its_transpose_in_small_chunks(c, torch):
    """The kernel tangent with chunks of 1, 5 or 16 output positions (split batch, planes and
    rows) is conv(x, tw) (reference), and its transpose is PyTorch's weight gradient."""
    x, w, _ = case_arrays(c)
    ct = _cotangent(c, x, w)
    _, want_w = _torch_grads(torch, c, x, w, ct)
    want = reference.conv3d(x, w, None, **case_geometry(c))
    if c["batch"] is None:  # the kernel works on batched arrays
        x, ct, want = x[None], ct[None], want[None]
    xl, wl, ctl = _to_layout(c, x), _kernel_to_layout(c, w), _to_layout(c, ct)
    geom = conv_geometry(xl.shape, wl.shape, **case_geometry(c), layout=_layout(c))

    def tangent(x, w):
        return plane_patches.kernel_tangent(x, w, geom, None, rows=c["rows"])

    with jax.enable_x64(True):
        got = jax.jit(tangent)(xl, wl)
        (gw,) = jax.jit(lambda x, w, ct: jax.vjp(lambda w: tangent(x, w), w)[1](ct))(xl, wl, ctl)
    np.testing.assert_allclose(got, _to_layout(c, want), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gw, _kernel_to_layout(c, want_w), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("c", [CASES[i] for i in (4, 13)], ids=_case_id)
def test_second_order_matches_lax(c):
    """Reverse over reverse (the input gradient of the squared norm of the weight gradient)
    and forward over reverse (a Hessian-vector product in the weight), against lax's."""
    x, w, _ = case_arrays(c)
    xl, wl = _to_layout(c, x), _kernel_to_layout(c, w)
    ct = _to_layout(c, _cotangent(c, x, w))
    v = np.random.default_rng(500 + c["i"]).standard_normal(wl.shape)

    def second(impl):
        conv = _conv(c, impl)

        def weight_grad(x, w):
            return jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w)) * ct))(w)

        def f(x, w):
            rr = jax.grad(lambda x: jnp.sum(weight_grad(x, w) ** 2))(x)
            hvp = jax.jvp(lambda w: weight_grad(x, w), (w,), (v,))[1]
            return rr, hvp

        return jax.jit(f)(xl, wl)

    with jax.enable_x64(True):
        got, want = second("plane_patches"), second("lax")
    for g, h in zip(got, want, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-9, atol=1e-9)
