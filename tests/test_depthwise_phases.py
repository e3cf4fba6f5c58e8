"""The depthwise rule's derivatives (jaxconv/kernels/depthwise.py): the input tangent's taps cut
from stride phases (``windows.phase_taps``) and both tangents in one chunk loop.

``phase_taps`` (and the unpadded input's taps, 1-D max pooling's) against ``strided_taps``
(values and their transposes) over seeded N-D geometries with the spatial axes anywhere; then
depthwise gradients (input, weight, both; the batch chunked one image at a time, the path
large batches take) against PyTorch's float64 autograd, and forward mode against the float64
NumPy reference, over seeded geometries: ranks 1-3, channels first and last (and CHWN),
strides 1-3, dilation, padding, channel multipliers, odd sizes; eager and jitted."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import with_variants

import jaxconv
from jaxconv import reference
from jaxconv.geometry import WindowGeometry
from jaxconv.kernels import depthwise
from jaxconv.kernels.windows import map_boxes, phase_taps, strided_taps

CONVS = {1: jaxconv.conv1d, 2: jaxconv.conv2d, 3: jaxconv.conv3d}
REFS = {1: reference.conv1d, 2: reference.conv2d, 3: reference.conv3d}
LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


def _taps_case(i: int) -> dict:
    """A seeded array of rank 2-5 with 1-3 spatial axes at random positions, and a window
    geometry (kernel, stride, dilation, pads) with at least one output per axis."""
    r = np.random.default_rng(3000 + i)
    n = int(r.integers(1, 4))
    ndim = n + int(r.integers(1, 3))
    axes = tuple(sorted(int(a) for a in r.choice(ndim, n, replace=False)))
    k = [int(v) for v in r.integers(1, 5, n)]
    s = [int(v) for v in r.integers(1, 4, n)]
    d = [int(v) for v in r.integers(1, 4, n)]
    pads = [tuple(int(v) for v in r.integers(0, 4, 2)) for _ in range(n)]
    shape = [int(v) for v in r.integers(1, 4, ndim)]
    for a, kk, dd, (lo, hi) in zip(axes, k, d, pads, strict=True):
        shape[a] = max(1, dd * (kk - 1) + 1 - lo - hi + int(r.integers(0, 7)))
    out = [
        (shape[a] + lo + hi - dd * (kk - 1) - 1) // ss + 1
        for a, kk, ss, dd, (lo, hi) in zip(axes, k, s, d, pads, strict=True)
    ]
    x = r.standard_normal(shape)
    return dict(x=x, axes=axes, kernel=k, stride=s, dilation=d, pads=pads, out=out, r=r)


def _inside_taps(*args):
    return strided_taps(*args, pad_input=False)


@pytest.mark.parametrize("form", [phase_taps, _inside_taps], ids=["phase", "inside"])
@pytest.mark.parametrize("i", range(16))
def test_taps_equal_strided_taps_and_their_transposes(form, i):
    """The same taps, the padding filled with a non-zero value (taps lying wholly in the
    padding included: pads here may exceed half the window), and the same transposes."""
    c = _taps_case(i)
    args = (c["axes"], c["kernel"], c["pads"], c["out"], c["stride"], c["dilation"], 0.5)
    weights = c["r"].standard_normal(int(np.prod(c["kernel"])))

    def weighted(taps_fn):
        return lambda x: sum(t * wt for t, wt in zip(taps_fn(x, *args), weights, strict=True))

    with jax.enable_x64(True):
        x = jnp.asarray(c["x"])
        shape = jax.eval_shape(lambda x: strided_taps(x, *args)[0], x).shape
        ct = jnp.asarray(c["r"].standard_normal(shape))

        @jax.jit
        def run(x, ct):
            """Both taps and both transposes (for cotangent ct): one program."""
            taps = (form(x, *args), strided_taps(x, *args))
            grads = (jax.vjp(weighted(fn), x)[1](ct)[0] for fn in (form, strided_taps))
            return taps, tuple(grads)

        (got, want), (gx, hx) = run(x, ct)
        assert len(got) == len(want) == len(weights)
        for g, h in zip(got, want, strict=True):
            assert g.shape == h.shape
            np.testing.assert_array_equal(g, h)
        np.testing.assert_allclose(gx, hx, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("i", range(24))
def test_map_boxes_equals_the_function_of_the_padded_taps(i):
    """map_boxes (the output in interior and border boxes, the taps of each box sliced from
    the input) gives the values and the transpose of the same weighted tap sum over the
    padded input's taps, the padding filled with a non-zero value; boxes wholly in the
    padding, strides and dilations included, on any axes (the array's last axis too)."""
    c = _taps_case(i)
    args = (c["axes"], c["kernel"], c["pads"], c["out"], c["stride"], c["dilation"])
    weights = c["r"].standard_normal(int(np.prod(c["kernel"])))

    def f(taps):
        return sum(t * wt for t, wt in zip(taps, weights, strict=True))

    with jax.enable_x64(True):
        x = jnp.asarray(c["x"])
        want_fn = lambda x: f(strided_taps(x, *args, fill=0.5))  # noqa: E731
        geom = WindowGeometry(
            layout="", axes=c["axes"], in_size=tuple(c["x"].shape[a] for a in c["axes"]),
            kernel=tuple(c["kernel"]), stride=tuple(c["stride"]), padding=tuple(c["pads"]),
            dilation=tuple(c["dilation"]), out_size=tuple(c["out"]),
        )  # fmt: skip
        got_fn = lambda x: map_boxes(f, x, geom, fill=0.5)  # noqa: E731
        ct = jnp.asarray(c["r"].standard_normal(jax.eval_shape(want_fn, x).shape))

        @jax.jit
        def run(x, ct):
            """Both forms' values and transposes (for cotangent ct): one program."""
            return tuple((fn(x), jax.vjp(fn, x)[1](ct)[0]) for fn in (got_fn, want_fn))

        (got, got_x), (want, want_x) = run(x, ct)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got_x, want_x, rtol=1e-12, atol=1e-12)


def _case(i: int) -> dict:
    """A seeded depthwise geometry for the gradient tests (batched, 2-3 images)."""
    r = np.random.default_rng(4000 + i)
    n = (1, 2, 3)[i % 3]
    layouts = ["first", "last"] + (["CHWN"] if n == 2 else [])
    layout = layouts[(i // 3) % len(layouts)]
    c, m = int(r.integers(2, 5)), int(r.choice([1, 2, 3]))
    k = tuple(int(v) for v in r.integers(1, 4, n))
    s = tuple(int(v) for v in r.integers(1, 4, n)) if i % 4 else (2,) * n
    d = tuple(int(v) for v in r.integers(1, 3, n))
    p = tuple(int(v) for v in r.integers(0, 3, n))
    size = tuple(max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a] + int(r.integers(0, 6))) for a in range(n))
    return dict(i=i, n=n, layout=layout, c=c, m=m, k=k, stride=s, dilation=d, padding=p,
                size=size, batch=int(r.integers(2, 4)), r=r)  # fmt: skip


CASES = [_case(i) for i in range(12)]


def _case_id(c: dict) -> str:
    return f"{c['i']}-{c['n']}d-{c['layout']}-m{c['m']}-s{''.join(map(str, c['stride']))}"


def _layout_name(c: dict) -> str:
    return {"first": {1: "NCL", 2: "NCHW", 3: "NCDHW"}[c["n"]], "last": LAST[c["n"]]}.get(
        c["layout"], c["layout"]
    )


def _to_layout(c: dict, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Channels-first x (N, C, *s) and OI* weight in the case's layout."""
    n = c["n"]
    if c["layout"] == "first":
        return x, w
    w = w.transpose(*range(2, n + 2), 1, 0)  # *k, I, O
    if c["layout"] == "CHWN":
        return x.transpose(1, 2, 3, 0), w
    return np.moveaxis(x, 1, -1), w


def _from_layout(c: dict, a: np.ndarray, weight: bool = False) -> np.ndarray:
    """An array in the case's layout (input-like, or with ``weight`` a kernel) back to
    channels first / OI*."""
    n = c["n"]
    if c["layout"] == "first":
        return a
    if weight:
        return a.transpose(n + 1, n, *range(n))
    if c["layout"] == "CHWN":
        return a.transpose(3, 0, 1, 2)
    return np.moveaxis(a, -1, 1)


def _conv(c: dict):
    layout = _layout_name(c)
    geom = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"], groups=c["c"])
    return lambda x, w: CONVS[c["n"]](x, w, None, **geom, layout=layout, impl="depthwise")


def _arrays(c: dict) -> tuple[np.ndarray, np.ndarray]:
    r = np.random.default_rng(5000 + c["i"])
    x = r.standard_normal((c["batch"], c["c"], *c["size"]))
    w = r.standard_normal((c["c"] * c["m"], 1, *c["k"]))
    return x, w


def _torch_grads(torch, c: dict, x: np.ndarray, w: np.ndarray, ct: np.ndarray) -> tuple:
    """PyTorch's float64 gradients of <conv(x, w), ct> w.r.t. x and w (channels first)."""
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    op = getattr(torch.nn.functional, f"conv{c['n']}d")
    y = op(xt, wt, None, c["stride"], c["padding"], c["dilation"], c["c"])
    y.backward(torch.tensor(ct))
    return y.detach().numpy(), xt.grad.numpy(), wt.grad.numpy()


@pytest.mark.parametrize(("c", "variant"), with_variants(CASES, _case_id))
def test_chunked_gradients_match_torch(c, variant, torch, monkeypatch):
    """Gradients of the input, the weight and both at once (one chunk loop for both where
    :func:`~jaxconv.kernels.depthwise.joint_wins`), one image per chunk."""
    monkeypatch.setattr(depthwise, "CHUNK_BYTES", 1)
    x, w = _arrays(c)
    r = np.random.default_rng(6000 + c["i"])
    y = REFS[c["n"]](x, w, None, c["stride"], c["padding"], c["dilation"], c["c"])
    ct = r.standard_normal(y.shape)
    y_t, gx_t, gw_t = _torch_grads(torch, c, x, w, ct)
    np.testing.assert_allclose(y_t, y, rtol=1e-10, atol=1e-10)
    xl, wl = _to_layout(c, x, w)
    ctl = _to_layout(c, ct, w)[0]
    conv = _conv(c)
    with jax.enable_x64(True):

        def loss(a, b):
            return jnp.sum(conv(a, b) * ctl)

        def grads(a, b):
            """Both gradients at once, and each alone: one program when jitted."""
            return tuple(jax.grad(loss, argnums=k)(a, b) for k in ((0, 1), 0, 1))

        both, only_x, only_w = variant(grads)(xl, wl)
    for gx in (both[0], only_x):
        np.testing.assert_allclose(_from_layout(c, np.asarray(gx)), gx_t, rtol=1e-10, atol=1e-10)
    for gw in (both[1], only_w):
        np.testing.assert_allclose(
            _from_layout(c, np.asarray(gw), weight=True), gw_t, rtol=1e-10, atol=1e-10
        )


@pytest.mark.parametrize("c", CASES[::3], ids=_case_id)
def test_forward_mode_matches_reference(c, monkeypatch):
    """jax.jvp with both tangents live: conv(tx, w) + conv(x, tw) by the float64 reference
    (the conv is bilinear), chunked one image at a time."""
    monkeypatch.setattr(depthwise, "CHUNK_BYTES", 1)
    x, w = _arrays(c)
    r = np.random.default_rng(7000 + c["i"])
    tx, tw = r.standard_normal(x.shape), r.standard_normal(w.shape)
    geom = (c["stride"], c["padding"], c["dilation"], c["c"])
    ref = REFS[c["n"]]
    want = ref(tx, w, None, *geom) + ref(x, tw, None, *geom)
    conv = _conv(c)
    with jax.enable_x64(True):
        args = [_to_layout(c, a, b) for a, b in ((x, w), (tx, tw))]
        _, got = jax.jit(lambda a, b, ta, tb: jax.jvp(conv, (a, b), (ta, tb)))(*args[0], *args[1])
    np.testing.assert_allclose(_from_layout(c, np.asarray(got)), want, rtol=1e-10, atol=1e-10)


def test_joint_loop_choice():
    """Both tangents share the chunk loop channels first, and channels last where strided
    with 2-3 spatial axes; 1-D channels last and stride-1 channels last keep them apart."""
    from jaxconv.geometry import conv_geometry

    def geom(x, w, s, layout):
        return conv_geometry(x, w, stride=s, padding=1, groups=4, layout=layout)

    wins = depthwise.joint_wins
    assert wins(geom((2, 4, 9, 9), (4, 1, 3, 3), 1, "NCHW"))
    assert wins(geom((2, 4, 9), (4, 1, 3), 2, "NCL"))
    assert wins(geom((2, 9, 9, 4), (3, 3, 1, 4), 2, "NHWC"))
    assert wins(geom((2, 5, 9, 9, 4), (3, 3, 3, 1, 4), 2, "NDHWC"))
    assert not wins(geom((2, 9, 9, 4), (3, 3, 1, 4), 1, "NHWC"))
    assert not wins(geom((2, 9, 4), (3, 1, 4), 2, "NLC"))
