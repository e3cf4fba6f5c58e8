"""impl="depthwise" (jaxconv/kernels/depthwise.py): conv1d/2d/3d with groups == in_channels as
a sum over kernel taps. A seeded sweep over ranks, layouts (CHWN too), channel multipliers,
strides, dilations, padding forms and batched/unbatched input against the float64 NumPy
reference and PyTorch, every case jitted and a quarter also eager (``JAXCONV_TEST_FULL=1``:
all); reverse- and forward-mode derivatives against lax's;
the batch-chunked weight gradient; low-precision dtypes; the fallback and the auto choice; and
the impl names each rank refuses."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    assert_forward_mode_like_lax,
    assert_gradients_like_lax,
    assert_nonfinite_like,
    assert_scan_vmap_like_lax,
    case_arrays,
    case_geometry,
)
from conftest import FULL, with_variants
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference
from jaxconv.geometry import conv_geometry
from jaxconv.kernels import depthwise
from jaxconv.kernels.dispatch import select_impl

CONVS = {1: jaxconv.conv1d, 2: jaxconv.conv2d, 3: jaxconv.conv3d}
REFS = {1: reference.conv1d, 2: reference.conv2d, 3: reference.conv3d}
CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


def _make_case(i: int) -> dict:
    """One seeded depthwise geometry: rank, layout, channels, multiplier, kernel, stride,
    dilation, a padding form, batch (None: unbatched) and bias."""
    r = np.random.default_rng(2000 + i)
    n = (1, 2, 3)[i % 3]
    layouts = ["first", "last"] + (["CHWN"] if n == 2 else [])
    layout = layouts[(i // 3) % len(layouts)]
    c, m = int(r.integers(1, 5)), int(r.choice([1, 1, 2, 3]))
    k = tuple(int(v) for v in r.integers(1, 4, n))
    d = tuple(int(v) for v in r.integers(1, 3, n))
    form = ["int", "list", "sides", "same", "valid"][i % 5]
    stride = tuple(int(v) for v in r.integers(1, 4, n))
    if form == "int":
        padding = int(r.integers(0, 3))
    elif form == "list":
        padding = [int(v) for v in r.integers(0, 3, n)]
    elif form == "sides":
        padding = [tuple(int(v) for v in r.integers(0, 3, 2)) for _ in range(n)]
    else:
        padding = form
    if form == "same":
        stride = (1,) * n
    pads = reference.conv._conv_padding(padding, k, d)
    size = tuple(
        max(1, int(d[a] * (k[a] - 1) + 1 - sum(pads[a]) + r.integers(0, 4))) for a in range(n)
    )
    batch = 2 if layout == "CHWN" else [None, 1, 3][i % 3 if n != 1 else (i // 3) % 3]
    return dict(
        i=i, n=n, layout=layout, c=c, m=m, o=c * m, groups=c, k=k, size=size, stride=stride,
        padding=padding, dilation=d, batch=batch, bias=bool(i % 4),
    )  # fmt: skip


CASES = [_make_case(i) for i in range(24)]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-{c['n']}d-{c['layout']}-c{c['c']}m{c['m']}-p{c['padding']!s:.10}-"
        f"{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


_arrays = case_arrays
_geometry = case_geometry


def _in_layout(c: dict, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Channels-first arrays moved to the case's layout, with the layout's name."""
    n = c["n"]
    if c["layout"] == "first":
        return x, w, {1: "NCL", 2: "NCHW", 3: "NCDHW"}[n]
    w_last = w.transpose(*range(2, n + 2), 1, 0)  # (*k, 1, O)
    if c["layout"] == "CHWN":
        return x.transpose(1, 2, 3, 0), w_last, "CHWN"
    return np.moveaxis(x, -n - 1, -1), w_last, CHANNELS_LAST[n]


def _out_to_layout(c: dict, y: np.ndarray) -> np.ndarray:
    """A channels-first output in the case's layout."""
    if c["layout"] == "first":
        return y
    if c["layout"] == "CHWN":
        return y.transpose(1, 2, 3, 0)
    return np.moveaxis(y, -c["n"] - 1, -1)


def _torch_out(torch, c: dict, x, w, b) -> np.ndarray:
    """PyTorch's channels-first output; per-side padding goes through F.pad first."""
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    tx, pad = t(x), c["padding"]
    if isinstance(pad, list) and isinstance(pad[0], tuple):
        flat = [p for side in reversed(pad) for p in side]  # F.pad: last axis first
        tx, pad = torch.nn.functional.pad(tx, flat), 0
    conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
            3: torch.nn.functional.conv3d}[c["n"]]  # fmt: skip
    return conv(tx, t(w), t(b), **(_geometry(c) | {"padding": pad})).numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize(("c", "variant"), with_variants(CASES, _case_id))
def test_depthwise_matches_reference_and_torch(c, variant, torch):
    x, w, b = _arrays(c)
    want = REFS[c["n"]](x, w, b, **_geometry(c))
    np.testing.assert_allclose(_torch_out(torch, c, x, w, b), want, rtol=1e-10, atol=1e-10)
    xl, wl, layout = _in_layout(c, x, w)
    want = _out_to_layout(c, want)
    conv = CONVS[c["n"]]
    with jax.enable_x64(True):
        f = lambda x, w, b: conv(x, w, b, **_geometry(c), layout=layout, impl="depthwise")  # noqa: E731
        got = variant(f)(xl, wl, b)
        assert got.dtype == jnp.float64 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def _apply(c: dict, impl: str, x, w, b):
    """The case's conv of arrays in its layout."""
    layout = _in_layout(c, *_arrays(c)[:2])[2]
    return CONVS[c["n"]](x, w, b, **_geometry(c), layout=layout, impl=impl)


#: Gradient cases: every 4th of the sweep (``JAXCONV_TEST_FULL=1``); by default without the
#: last (3-D channels first with an int padding, as cases 8 and 0), so every rank, layout and
#: padding form stays, and the eager quarter is the same two cases.
GRAD_CASES = [c for c in CASES if c["i"] % 4 == 0 and (FULL or c["i"] != 20)]


@pytest.mark.parametrize(("c", "variant"), with_variants(GRAD_CASES, _case_id))
def test_depthwise_gradients_match_lax_eager_and_jitted(c, variant):
    """depthwise's gradients (under ``variant``) against lax's (jitted)."""
    x, w, b = _arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    argnums = (0, 1, 2) if b is not None else (0, 1)
    assert_gradients_like_lax(
        functools.partial(_apply, c), "depthwise", (xl, wl, b), variant, argnums, 100 + c["i"]
    )


@pytest.mark.parametrize("c", [c for c in CASES if c["i"] % 5 == 1], ids=_case_id)
def test_depthwise_forward_mode_matches_lax(c):
    x, w, b = _arrays(c)
    xl, wl, _ = _in_layout(c, x, w)
    assert_forward_mode_like_lax(
        functools.partial(_apply, c), "depthwise", (xl, wl, b), 200 + c["i"]
    )


def test_second_order_derivatives_in_both_modes():
    r = np.random.default_rng(7)
    x, w = r.standard_normal((1, 4, 4, 2)), r.standard_normal((2, 2, 1, 4))  # NHWC, m = 2
    with jax.enable_x64(True):
        f = lambda x, w: jaxconv.conv2d(
            x, w, None, (2, 1), 1, (1, 2), 2, layout="NHWC", impl="depthwise"
        )  # noqa: E731,E501
        check_grads(f, (x, w), order=2, modes=("fwd", "rev"))


def test_chunked_weight_gradient_matches_lax(monkeypatch):
    """With a chunk budget of one image, the weight gradient loops over the batch one image
    at a time (the path large batches take); values and gradients still equal lax's."""
    monkeypatch.setattr(depthwise, "CHUNK_BYTES", 1)
    r = np.random.default_rng(8)
    x, w = r.standard_normal((3, 2, 5, 6)), r.standard_normal((4, 1, 3, 3))
    ct = r.standard_normal((3, 4, 3, 6))
    geom = dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)

    def loss(impl: str):
        return lambda x, w: jnp.sum(jaxconv.conv2d(x, w, **geom, impl=impl) * ct)

    with jax.enable_x64(True):
        assert depthwise.batch_chunk(jnp.asarray(x), conv_geometry(x.shape, w.shape, **geom)) == 1
        want = jax.jit(jax.grad(loss("lax"), argnums=(0, 1)))(x, w)  # the oracle: jitted
        for f in (loss("depthwise"), jax.jit(loss("depthwise"))):
            got = jax.grad(f, argnums=(0, 1))(x, w)
            for g, h in zip(got, want, strict=True):
                np.testing.assert_allclose(g, h, rtol=1e-10, atol=1e-10)


def _values_and_jvp_values(f, x, w, tx, tw) -> tuple:
    """``f(x, w)``, and the values of its jvp in both arguments, in x alone and in w alone."""
    return (
        f(x, w),
        jax.jvp(f, (x, w), (tx, tw))[0],
        jax.jvp(lambda x: f(x, w), (x,), (tx,))[0],
        jax.jvp(lambda w: f(x, w), (w,), (tw,))[0],
    )


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunked"])
@pytest.mark.parametrize("layout", ["first", "last"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_nan_and_inf_reach_the_outputs_they_reach_in_torch(n, layout, chunked, monkeypatch, torch):
    """NaN and inf in the input, and an inf weight (whose products with the zero padding are
    NaN), give PyTorch's pattern in the plain values (taps of the unpadded input) and in the
    values of ``jax.jvp`` in x, in w and in both (the padded input's taps, or the unpadded
    ones where the tangents run in one chunk loop: ``chunked``), at stride 1 and 2; all four
    in one jitted program."""
    if chunked:
        monkeypatch.setattr(depthwise, "CHUNK_BYTES", 1)
    r = np.random.default_rng(30 + n)
    x = r.standard_normal((2, 3) + (7,) * n)
    x[(0, 0) + (1,) * n], x[(1, 2) + (5,) * n], x[(0, 1) + (0,) * n] = np.nan, np.inf, -np.inf
    w = r.standard_normal((6, 1) + (3,) * n)
    w[(1, 0) + (0,) * n] = np.inf
    conv, tconv = CONVS[n], getattr(torch.nn.functional, f"conv{n}d")
    c = dict(n=n, layout=layout)
    xl, wl, name = _in_layout(c, x, w)
    tx, tw = r.standard_normal(xl.shape), r.standard_normal(wl.shape)
    with jax.enable_x64(True):
        for stride in (1, 2):
            want = _out_to_layout(
                c, tconv(torch.tensor(x), torch.tensor(w), None, stride, 1, 1, 3).numpy()
            )
            f = lambda x, w, s=stride: conv(x, w, None, s, 1, 1, 3, layout=name, impl="depthwise")  # noqa: E731
            for got in jax.jit(functools.partial(_values_and_jvp_values, f))(xl, wl, tx, tw):
                assert_nonfinite_like(got, want)


def test_batch_chunk_is_the_largest_divisor_that_fits(monkeypatch):
    x = jnp.zeros((12, 2, 4, 4), jnp.float32)  # padded 6x6 -> 2 * 36 * 4 = 288 bytes an image
    geom = conv_geometry(x.shape, (2, 1, 3, 3), padding=1, groups=2)
    for budget, want in ((288 * 12, 12), (288 * 5, 4), (288 * 4, 4), (100, 1)):
        monkeypatch.setattr(depthwise, "CHUNK_BYTES", budget)
        assert depthwise.batch_chunk(x, geom) == want
    chwn = conv_geometry((2, 4, 4, 12), (3, 3, 1, 2), padding=1, groups=2, layout="CHWN")
    assert depthwise.batch_chunk(jnp.zeros((2, 4, 4, 12)), chwn) == 12  # batch last: no chunks


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_sums_in_float32_and_returns_the_dtype(dtype):
    r = np.random.default_rng(9)
    x, w = r.standard_normal((2, 8, 12, 12)), r.standard_normal((16, 1, 3, 3))
    want = reference.conv2d(x, w, None, 1, 1, 1, 8)
    got = jaxconv.conv2d(x.astype(dtype), w.astype(dtype), None, 1, 1, 1, 8, impl="depthwise")
    assert got.dtype == dtype
    # the inputs' own rounding dominates: within a few ulps of the dtype at |y| ~ 3
    tol = 3 * float(jnp.finfo(dtype).eps) * np.abs(want).max()
    np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=tol)
    g = jax.grad(lambda w: jnp.sum(jaxconv.conv2d(x.astype(dtype), w, None, 1, 1, 1, 8,
                                                  impl="depthwise")))(w.astype(dtype))  # fmt: skip
    assert g.dtype == dtype


def test_other_groups_fall_back_to_lax():
    r = np.random.default_rng(10)
    x = r.standard_normal((2, 4, 7, 6)).astype(np.float32)
    for groups, cg in ((1, 4), (2, 2)):
        w = r.standard_normal((4, cg, 3, 3)).astype(np.float32)
        np.testing.assert_array_equal(
            jaxconv.conv2d(x, w, groups=groups, impl="depthwise"),
            jaxconv.conv2d(x, w, groups=groups, impl="lax"),
        )


def test_auto_runs_depthwise_on_cpu_for_every_float_dtype():
    g2 = conv_geometry((2, 8, 9, 9), (16, 1, 3, 3), padding=1, groups=8)
    g1 = conv_geometry((2, 8, 30), (8, 1, 5), stride=2, groups=8, layout="NCL")
    for g in (g2, g1):
        for dtype in (jnp.float16, jnp.bfloat16, jnp.float32, jnp.float64):
            assert select_impl(g, dtype, "cpu") == "depthwise"
        assert select_impl(g, jnp.float32, "gpu") == "lax"
    # one input channel (groups == C == 1) is an ordinary conv: the 2-D rules keep it
    lenet = conv_geometry((8, 28, 28, 1), (5, 5, 1, 6), padding=2, layout="NHWC")
    assert select_impl(lenet, jnp.float32, "cpu") == "vjp"
    x = np.random.default_rng(11).standard_normal((2, 8, 9, 9)).astype(np.float32)
    w = np.random.default_rng(12).standard_normal((16, 1, 3, 3)).astype(np.float32)
    want = jaxconv.conv2d(x, w, None, 1, 1, 1, 8, impl=select_impl(g2, jnp.float32))
    np.testing.assert_array_equal(jaxconv.conv2d(x, w, None, 1, 1, 1, 8), want)


@pytest.mark.parametrize(
    ("n", "impl"),
    [
        (1, "vjp"),
        (1, "patches"),
        (1, "planes"),
        (3, "vjp"),
        (3, "patches"),
        (2, "Depthwise"),
        (1, "depth"),
        (3, None),
    ],  # fmt: skip
)
def test_bad_impl_names_are_refused(n, impl):
    x = np.ones((1, 2) + (5,) * n, np.float32)
    w = np.ones((2, 1) + (3,) * n, np.float32)
    with pytest.raises(ValueError, match=rf"^impl must be one of \(.*'depthwise'.* got {impl!r}"):
        CONVS[n](x, w, groups=2, impl=impl)


def test_inside_scan_and_vmap_matches_lax():
    """A two-step lax.scan of depthwise convs (as a training epoch runs them), its gradient,
    and a vmap over an outer axis: the same as lax's."""
    r = np.random.default_rng(13)
    x, w = r.standard_normal((3, 2, 4, 6, 6)), r.standard_normal((2, 4, 1, 3, 3))

    assert_scan_vmap_like_lax(
        lambda h, wk, impl: jaxconv.conv2d(h, wk, None, 1, 1, 1, 4, impl=impl), "depthwise", x, w
    )
