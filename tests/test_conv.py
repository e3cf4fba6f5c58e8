"""jaxconv.conv: the chapter's printed values, a seeded sweep against the float64 NumPy
reference and PyTorch (values and gradients), and one test per validation rule."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import with_variants
from jax.test_util import check_grads

from jaxconv import conv, reference
from jaxconv.conv import (
    conv1x1,
    conv2d,
    convolve2d,
    corr2d,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_vmap,
)
from jaxconv.kernels import batch_last
from jaxconv.shapes import conv_output_shape, conv_padding

#: conv1d's and conv3d's own paths, which conv2d accepts and runs as lax.
OTHER_RANKS = ("planes", "plane_patches", "tap_outputs")
IMPLS = tuple(i for i in conv.IMPLEMENTATIONS if i not in OTHER_RANKS)


def assert_close(actual, desired, terms: int = 1, rtol: float = 1e-5, err_msg: str = "") -> None:
    """float32 result vs float64 oracle; ``terms`` products are summed per output element."""
    desired = np.asarray(desired, dtype=np.float64)
    assert np.shape(actual) == desired.shape, err_msg
    np.testing.assert_allclose(
        np.asarray(actual, np.float64),
        desired,
        rtol=rtol,
        atol=rtol * np.sqrt(terms),
        err_msg=err_msg,
    )


def every_impl(fn):
    """``fn(impl, *arrays)`` for every impl of :data:`IMPLS` as ONE function of the arrays,
    returning ``{impl: fn(impl, *arrays)}``: under ``jax.jit`` one compile checks every path
    of a case (each path is traced on its own; the dict keeps them apart)."""
    return lambda *arrays: {impl: fn(impl, *arrays) for impl in IMPLS}


# --- the chapter's printed values -------------------------------------------------------------

CHAPTER_X = [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0], [6.0, 7.0, 8.0]]
CHAPTER_K = [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize("fn", [corr2d, corr2d_vmap], ids=["lax", "vmap"])
def test_corr2d_chapter(fn, variant):
    y = variant(fn)(jnp.array(CHAPTER_X), jnp.array(CHAPTER_K))
    np.testing.assert_array_equal(y, [[19.0, 25.0], [37.0, 43.0]])
    np.testing.assert_array_equal(y, reference.corr2d(CHAPTER_X, CHAPTER_K))


@pytest.mark.parametrize("fn", [corr2d, corr2d_vmap], ids=["lax", "vmap"])
def test_edge_detection_chapter(fn, variant):
    X = np.ones((6, 8), np.float32)
    X[:, 2:6] = 0
    K = np.array([[1.0, -1.0]], np.float32)
    expected = np.zeros((6, 7))
    expected[:, 1], expected[:, 5] = 1.0, -1.0  # white->black and black->white edges
    f = variant(fn)
    np.testing.assert_array_equal(f(X, K), expected)
    np.testing.assert_array_equal(f(X.T, K), np.zeros((8, 5)))  # horizontal edges: none


@pytest.mark.parametrize(
    ("kernel", "padding", "stride", "expected"),
    [
        (3, 1, 1, (8, 8)),
        ((5, 3), (2, 1), 1, (8, 8)),
        (3, 1, 2, (4, 4)),
        ((3, 5), (0, 1), (3, 4), (2, 2)),
    ],
)
def test_padding_stride_chapter(kernel, padding, stride, expected, rng):
    # comp_conv2d: an 8x8 image as (1, 8, 8), one in and one out channel; every impl.
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    X = rng.random((1, 8, 8), dtype=np.float32)
    w = rng.standard_normal((1, 1, kh, kw), dtype=np.float32)
    ys = jax.jit(every_impl(lambda impl, X, w: conv2d(X, w, stride=stride, padding=padding,
                                                      impl=impl)))(X, w)  # fmt: skip
    want = reference.conv2d(X, w, stride=stride, padding=padding)
    for impl, y in ys.items():
        assert y.shape[1:] == expected == conv_output_shape(8, kernel, stride, padding), impl
        assert_close(y, want, terms=kh * kw, err_msg=impl)


CHAPTER_X2 = [CHAPTER_X, [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]]]
CHAPTER_K2 = [CHAPTER_K, [[1.0, 2.0], [3.0, 4.0]]]


@pytest.mark.parametrize("impl", ["lax", "vmap"])
def test_multi_in_chapter(impl, variant):
    f = variant(functools.partial(corr2d_multi_in, impl=impl))
    np.testing.assert_array_equal(
        f(jnp.array(CHAPTER_X2), jnp.array(CHAPTER_K2)), [[56.0, 72.0], [104.0, 120.0]]
    )


@pytest.mark.parametrize("impl", ["lax", "vmap"])
def test_multi_in_out_chapter(impl, variant):
    K = jnp.array(CHAPTER_K2)
    K3 = jnp.stack((K, K + 1, K + 2), 0)
    assert K3.shape == (3, 2, 2, 2)
    f = variant(functools.partial(corr2d_multi_in_out, impl=impl))
    np.testing.assert_array_equal(
        f(jnp.array(CHAPTER_X2), K3),
        [[[56, 72], [104, 120]], [[76, 100], [148, 172]], [[96, 128], [192, 224]]],
    )


def test_conv1x1_chapter(variant, rng):
    X = rng.standard_normal((3, 3, 3), dtype=np.float32)
    K = rng.standard_normal((2, 3, 1, 1), dtype=np.float32)
    y1 = variant(conv1x1)(X, K)
    assert y1.shape == (2, 3, 3)
    assert float(jnp.abs(y1 - corr2d_multi_in_out(X, K)).sum()) < 1e-6
    assert_close(y1, reference.conv1x1(X, K), terms=3)


def test_conv1x1_is_one_matmul_batched(variant, rng):
    X = rng.standard_normal((4, 5, 7, 6), dtype=np.float32)
    K = rng.standard_normal((3, 5, 1, 1), dtype=np.float32)
    y = variant(conv1x1)(X, K)
    assert_close(y, reference.conv1x1(X, K), terms=5)
    assert_close(y, conv2d(X, K), terms=5)
    # One dot_general, nothing else that does arithmetic.
    prims = [e.primitive.name for e in jax.make_jaxpr(conv1x1)(X, K).jaxpr.eqns]
    assert prims.count("dot_general") == 1 and "conv_general_dilated" not in prims


# --- the corr2d family on random shapes -------------------------------------------------------

CORR_SHAPES = [
    ((5, 7), (2, 3)),
    ((6, 4), (6, 1)),
    ((9, 9), (4, 4)),
    ((3, 8), (1, 8)),
    ((1, 1), (1, 1)),
    ((10, 6), (3, 2)),
]


@pytest.mark.parametrize(("xs", "ks"), CORR_SHAPES)
def test_corr2d_family_random(xs, ks, variant, rng):
    X = rng.standard_normal(xs, dtype=np.float32)
    K = rng.standard_normal(ks, dtype=np.float32)
    terms = ks[0] * ks[1]
    ref = reference.corr2d(X, K)
    # the three ops from one function: one compile under jit
    corr, corr_vmap, conv_ = variant(lambda X, K: (corr2d(X, K), corr2d_vmap(X, K),
                                                   convolve2d(X, K)))(X, K)  # fmt: skip
    assert_close(corr, ref, terms, err_msg="corr2d")
    assert_close(corr_vmap, ref, terms, err_msg="corr2d_vmap")
    conv_ref = reference.convolve2d(X, K)
    assert_close(conv_, conv_ref, terms, err_msg="convolve2d")
    np.testing.assert_array_equal(convolve2d(X, K), corr2d(X, np.flip(K)))
    if terms > 1 and not np.allclose(K, np.flip(K)):
        assert not np.allclose(conv_ref, ref)  # the flip matters for these kernels


@pytest.mark.parametrize(
    ("ci", "co", "xs", "ks"),
    [(3, 2, (6, 5), (3, 2)), (1, 4, (4, 4), (4, 1)), (5, 1, (7, 3), (2, 3))],
)
@pytest.mark.parametrize("impl", ["lax", "vmap"])
def test_corr2d_multi_random(ci, co, xs, ks, impl, variant, rng):
    X = rng.standard_normal((ci, *xs), dtype=np.float32)
    K = rng.standard_normal((co, ci, *ks), dtype=np.float32)
    terms = ci * ks[0] * ks[1]
    f_in = variant(functools.partial(corr2d_multi_in, impl=impl))
    f_out = variant(functools.partial(corr2d_multi_in_out, impl=impl))
    assert_close(f_in(X, K[0]), reference.corr2d_multi_in(X, K[0]), terms)
    assert_close(f_out(X, K), reference.corr2d_multi_in_out(X, K), terms)


# --- conv2d: seeded sweep against the reference and PyTorch ----------------------------------

PADDING_FORMS = ("int", "pair", "sides", "same", "valid")
BATCHES = (None, 2, 1, 3)  # None: unbatched (C, H, W)


def _make_case(i: int) -> dict:
    """Case ``i`` of the sweep: every (padding form, layout, batch) triple appears once."""
    r = np.random.default_rng(1000 + i)
    form = PADDING_FORMS[i % 5]
    layout = ("NCHW", "NHWC")[(i // 5) % 2]
    batch = BATCHES[(i // 10) % 4]
    groups = int(r.choice([1, 1, 2, 3]))
    cg, og = int(r.integers(1, 4)), int(r.integers(1, 3))
    k = tuple(int(v) for v in r.integers(1, 5, size=2))
    d = tuple(int(v) for v in r.choice([1, 1, 2], size=2))
    s = (1, 1) if form == "same" else tuple(int(v) for v in r.integers(1, 4, size=2))
    if form == "int":
        padding = int(r.integers(0, 3))
    elif form == "pair":
        padding = tuple(int(v) for v in r.integers(0, 3, size=2))
    elif form == "sides":
        padding = tuple(tuple(int(v) for v in r.integers(0, 4, size=2)) for _ in range(2))
    else:
        padding = form
    pads = conv_padding(padding, k, s, d)
    size = []
    for axis in range(2):
        keff = d[axis] * (k[axis] - 1) + 1
        # Smallest input the padded kernel fits on, up to a few more: kernel > input happens.
        size.append(int(r.integers(max(1, keff - sum(pads[axis])), keff + 7)))
    return dict(
        i=i,
        layout=layout,
        batch=batch,
        groups=groups,
        cg=cg,
        og=og,
        k=k,
        stride=s,
        dilation=d,
        padding=padding,
        size=tuple(size),
        bias=bool(r.integers(0, 2)),
    )


CASES = [_make_case(i) for i in range(40)]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-{c['layout']}-b{c['batch']}-g{c['groups']}-k{c['k'][0]}x{c['k'][1]}"
        f"-s{c['stride'][0]}{c['stride'][1]}-d{c['dilation'][0]}{c['dilation'][1]}"
        f"-p{c['padding']}".replace(" ", "")
    )


def _case_arrays(c: dict, dtype=np.float32) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """x, w, b in the case's layout (NCHW/OIHW or NHWC/HWIO), random normal."""
    r = np.random.default_rng(c["i"])
    C, n_out = c["cg"] * c["groups"], c["og"] * c["groups"]
    h, w_ = c["size"]
    x = r.standard_normal((c["batch"] or 1, C, h, w_)).astype(dtype)
    w = r.standard_normal((n_out, c["cg"], *c["k"])).astype(dtype)
    b = r.standard_normal(n_out).astype(dtype) if c["bias"] else None
    if c["layout"] == "NHWC":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    return (x if c["batch"] else x[0]), w, b


def _kwargs(c: dict) -> dict:
    return dict(
        stride=c["stride"],
        padding=c["padding"],
        dilation=c["dilation"],
        groups=c["groups"],
        layout=c["layout"],
    )


def _torch_conv(torch, c: dict, x, w, b):
    """torch.nn.functional.conv2d on the case (torch tensors in, NCHW tensor out)."""
    F = torch.nn.functional
    if c["layout"] == "NHWC":
        x = x.movedim(-1, -3)
        w = w.permute(3, 2, 0, 1)
    padding = c["padding"]
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (t, bt), (lf, rt) = padding  # torch's conv takes symmetric padding: pad first
        x, padding = F.pad(x, (lf, rt, t, bt)), 0
    y = F.conv2d(
        x, w, b, stride=c["stride"], padding=padding, dilation=c["dilation"], groups=c["groups"]
    )
    return y.movedim(-3, -1) if c["layout"] == "NHWC" else y


@functools.cache
def _oracles(i: int) -> tuple[np.ndarray, np.ndarray]:
    """(float64 NumPy reference, float32 PyTorch) outputs of case ``i``, computed once."""
    import torch

    c = CASES[i]
    x, w, b = _case_arrays(c)
    ref = reference.conv2d(x, w, b, **_kwargs(c))
    tb = None if b is None else torch.from_numpy(b)
    with warnings.catch_warnings():  # torch: 'same' with an even kernel may copy the input
        warnings.simplefilter("ignore", UserWarning)
        out = _torch_conv(torch, c, torch.from_numpy(x), torch.from_numpy(w), tb).numpy()
    return ref, out


@pytest.mark.parametrize(("c", "variant"), with_variants(CASES, _case_id))
def test_conv2d_sweep(c, variant, torch):
    """Every impl of :data:`IMPLS` on the case, from one function (jitted: one compile)."""
    x, w, b = _case_arrays(c)
    ys = variant(every_impl(lambda impl, x, w, b: conv2d(x, w, b, impl=impl, **_kwargs(c))))(
        x, w, b
    )
    ref, torch_out = _oracles(c["i"])
    spatial = x.shape[-3:-1] if c["layout"] == "NHWC" else x.shape[-2:]
    out_hw = conv_output_shape(spatial, c["k"], c["stride"], c["padding"], c["dilation"])
    n_out = c["og"] * c["groups"]
    expected_shape = (n_out, *out_hw) if c["layout"] == "NCHW" else (*out_hw, n_out)
    terms = c["cg"] * c["k"][0] * c["k"][1]
    assert set(ys) == set(IMPLS)
    for impl, y in ys.items():
        assert y.shape == ((c["batch"],) if c["batch"] else ()) + expected_shape, impl
        assert y.dtype == jnp.float32, impl
        assert_close(y, ref, terms, err_msg=impl)
        assert_close(y, torch_out, terms, err_msg=impl)


def _to_chwn(c: dict, x: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A batched case's x and w as CHWN (C, H, W, N) and HWIO."""
    if c["layout"] == "NCHW":
        return x.transpose(1, 2, 3, 0), w.transpose(2, 3, 1, 0)
    return x.transpose(3, 1, 2, 0), w


def _from_chwn(c: dict, y) -> np.ndarray:
    """A CHWN (O, oh, ow, N) result in the case's own layout."""
    return np.asarray(y).transpose((3, 0, 1, 2) if c["layout"] == "NCHW" else (3, 1, 2, 0))


BATCHED_CASES = [c for c in CASES if c["batch"]]


@pytest.mark.parametrize(("c", "variant"), with_variants(BATCHED_CASES, _case_id))
def test_conv2d_sweep_chwn(c, variant, torch):
    """layout="CHWN" (batch last): the same sweep's values against the same two oracles,
    every impl from one function."""
    x, w, b = _case_arrays(c)
    xc, wc = _to_chwn(c, x, w)
    kw = {**_kwargs(c), "layout": "CHWN"}
    ys = variant(every_impl(lambda impl, x, w, b: conv2d(x, w, b, impl=impl, **kw)))(xc, wc, b)
    ref, torch_out = _oracles(c["i"])
    terms = c["cg"] * c["k"][0] * c["k"][1]
    assert set(ys) == set(IMPLS)
    for impl, y in ys.items():
        assert y.shape[3] == c["batch"] and y.dtype == jnp.float32, impl
        got = _from_chwn(c, y)
        assert_close(got, ref, terms, err_msg=impl)
        assert_close(got, torch_out, terms, err_msg=impl)


# --- gradients -----------------------------------------------------------------------------

GRAD_CASES = CASES[::5]  # 8 cases: every padding form, both layouts, all batch kinds


@pytest.mark.parametrize("c", GRAD_CASES, ids=_case_id)
def test_conv2d_grads_match_torch(c, torch):
    """Every impl's gradients of the case from one jitted function (one compile)."""
    x, w, b = _case_arrays(c)
    if b is None:
        b = np.random.default_rng(7).standard_normal(w.shape[0 if c["layout"] == "NCHW" else 3])
        b = b.astype(np.float32)
    y_shape = jax.eval_shape(lambda x, w, b: conv2d(x, w, b, **_kwargs(c)), x, w, b).shape
    ct = np.random.default_rng(c["i"] + 99).standard_normal(y_shape).astype(np.float32)

    def grads(impl, x, w, b):
        loss = lambda x, w, b: jnp.sum(conv2d(x, w, b, impl=impl, **_kwargs(c)) * ct)  # noqa: E731
        return jax.grad(loss, argnums=(0, 1, 2))(x, w, b)

    got = jax.jit(every_impl(grads))(x, w, b)
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    (_torch_conv(torch, c, tx, tw, tb) * torch.from_numpy(ct.astype(np.float64))).sum().backward()
    assert set(got) == set(IMPLS)
    for impl, impl_grads in got.items():
        for name, g, t in zip("xwb", impl_grads, (tx, tw, tb), strict=True):
            expected = t.grad.numpy()
            msg = f"{impl} {name}"
            assert g.shape == expected.shape, msg
            np.testing.assert_allclose(
                g, expected, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(expected).max()), err_msg=msg
            )


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stride=(2, 1), padding=((1, 0), (0, 2)), dilation=(1, 2), groups=2),
        dict(padding="same", dilation=2, layout="NHWC"),
    ],
    ids=["nchw-strided-grouped", "nhwc-same"],
)
def test_conv2d_check_grads_float64(kwargs):
    """Forward and reverse mode of every impl against finite differences: one jitted
    function returning each impl's output, so the check compiles once per transformation
    for all of them."""
    r = np.random.default_rng(5)
    nhwc = kwargs.get("layout") == "NHWC"
    with jax.enable_x64(True):
        x = jnp.asarray(r.standard_normal((2, 6, 5, 4) if nhwc else (2, 4, 6, 5)))
        w = jnp.asarray(r.standard_normal((3, 2, 4, 4) if nhwc else (4, 2, 3, 2)))
        b = jnp.asarray(r.standard_normal(4))
        assert x.dtype == jnp.float64
        f = jax.jit(every_impl(lambda impl, x, w, b: conv2d(x, w, b, impl=impl, **kwargs)))
        assert set(f(x, w, b)) == set(IMPLS)
        check_grads(f, (x, w, b), order=1, modes=("fwd", "rev"))


# --- jit, vmap, dtypes ---------------------------------------------------------------------


def test_jit_static_argnames_and_no_retrace(rng):
    x = rng.standard_normal((2, 3, 9, 8), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 2), dtype=np.float32)
    static = ("stride", "padding", "dilation", "groups", "layout", "impl", "precision")
    jitted = jax.jit(conv2d, static_argnames=static)
    kw = dict(stride=2, padding=((1, 0), (2, 1)), dilation=(1, 2))
    expected = reference.conv2d(x, w, **kw)
    assert_close(jitted(x, w, **kw), expected, terms=18)
    assert_close(jax.jit(functools.partial(conv2d, **kw))(x, w), expected, terms=18)
    assert_close(jax.jit(lambda x, w: conv2d(x, w, **kw))(x, w), expected, terms=18)

    traces = []

    @jax.jit
    def f(x, w):
        traces.append(1)  # runs once per trace
        return conv2d(x, w, stride=2, impl="patches")

    f(x, w)
    f(x + 1, w - 1)
    assert len(traces) == 1


@pytest.mark.parametrize("impl", OTHER_RANKS)
def test_other_ranks_paths_run_lax_in_conv2d(impl, rng):
    x = rng.standard_normal((2, 3, 9, 8), dtype=np.float32)
    w = rng.standard_normal((4, 3, 3, 2), dtype=np.float32)
    kw = dict(stride=(1, 2), padding=1, dilation=(2, 1))
    got = jax.jit(lambda x, w: conv2d(x, w, impl=impl, **kw))(x, w)
    np.testing.assert_array_equal(got, jax.jit(lambda x, w: conv2d(x, w, impl="lax", **kw))(x, w))


def test_vmap_of_unbatched_equals_batched(rng):
    x = rng.standard_normal((3, 2, 7, 7), dtype=np.float32)
    w = rng.standard_normal((5, 2, 3, 3), dtype=np.float32)
    b = rng.standard_normal(5, dtype=np.float32)
    for impl in IMPLS:
        f = functools.partial(conv2d, stride=2, padding=1, impl=impl)
        np.testing.assert_allclose(
            jax.vmap(f, in_axes=(0, None, None))(x, w, b), f(x, w, b), rtol=1e-6, atol=1e-6
        )


def test_dtype_promotion_and_lists():
    x = np.ones((1, 3, 3), np.float32)
    w = jnp.ones((1, 1, 2, 2), jnp.bfloat16)
    assert conv2d(x, w).dtype == jnp.float32
    assert conv2d(x.astype(jnp.bfloat16), w).dtype == jnp.bfloat16
    y = corr2d(CHAPTER_X, CHAPTER_K)  # nested Python lists of floats are arrays too
    np.testing.assert_array_equal(y, [[19.0, 25.0], [37.0, 43.0]])


# --- validation: one test per rule ---------------------------------------------------------

X4 = np.zeros((2, 4, 8, 8), np.float32)  # NCHW, 4 channels
W4 = np.zeros((6, 4, 3, 3), np.float32)  # OIHW

BAD_CONV2D = {
    "x-rank": (dict(x=np.zeros((4, 8), np.float32)), ValueError, r"^input must have rank 3"),
    "x-rank5": (
        dict(x=np.zeros((1, 2, 4, 8, 8), np.float32)),
        ValueError,
        r"^input must have rank",
    ),
    "w-rank": (dict(w=np.zeros((6, 4, 3), np.float32)), ValueError, r"^weight must have rank 4"),
    "w-empty": (
        dict(w=np.zeros((0, 4, 3, 3), np.float32)),
        ValueError,
        r"^weight must have no empty",
    ),
    "channels": (dict(w=np.zeros((6, 3, 3, 3), np.float32)), ValueError, r"input has 4 channels"),
    "channels-groups": (
        dict(groups=2),
        ValueError,
        r"input has 4 channels but weight expects 4 \* groups",
    ),
    "out-groups": (
        dict(w=np.zeros((5, 2, 3, 3), np.float32), groups=2),
        ValueError,
        r"out_channels \(5\) must be divisible by groups",
    ),
    "in-groups": (
        dict(w=np.zeros((6, 1, 3, 3), np.float32), groups=3),
        ValueError,
        r"in_channels \(4\) must be divisible by groups",
    ),
    "groups-zero": (dict(groups=0), ValueError, r"^groups must be positive"),
    "groups-float": (dict(groups=1.0), TypeError, r"^groups must be an int"),
    "stride-zero": (dict(stride=0), ValueError, r"^stride must be positive"),
    "stride-neg": (dict(stride=(1, -2)), ValueError, r"^stride must be positive"),
    "stride-float": (dict(stride=1.5), TypeError, r"^stride must be an int"),
    "dilation-zero": (dict(dilation=(0, 1)), ValueError, r"^dilation must be positive"),
    "padding-neg": (dict(padding=-1), ValueError, r"^padding must be non-negative"),
    "padding-side-neg": (dict(padding=((0, 1), (-1, 0))), ValueError, r"^padding must be non-neg"),
    "padding-type": (dict(padding=(1, 2, 3)), TypeError, r"^padding must be an int"),
    "padding-string": (dict(padding="full"), ValueError, r"^padding string must be 'same'"),
    "same-stride": (dict(padding="same", stride=2), ValueError, r"padding='same' needs stride 1"),
    "kernel-too-large": (
        dict(w=np.zeros((6, 4, 9, 3), np.float32)),
        ValueError,
        r"^weight is too large for input .*kernel_size",
    ),
    "dilated-too-large": (dict(dilation=4), ValueError, r"^weight is too large for input"),
    "layout": (dict(layout="NWHC"), ValueError, r"^layout must be one of"),
    "impl": (dict(impl="fft"), ValueError, r"^impl must be one of \('lax', 'patches'"),
    "x-int": (
        dict(x=np.zeros((2, 4, 8, 8), np.int32)),
        TypeError,
        r"^input must have a real float",
    ),
    "x-complex": (
        dict(x=np.zeros((2, 4, 8, 8), np.complex64)),
        TypeError,
        r"^input must have a real",
    ),
    "w-int": (
        dict(w=np.zeros((6, 4, 3, 3), np.int8)),
        TypeError,
        r"^weight must have a real float",
    ),
    "b-int": (dict(b=np.zeros(6, np.int32)), TypeError, r"^bias must have a real float"),
    "b-shape": (dict(b=np.zeros(4, np.float32)), ValueError, r"^bias must have shape .*\(6,\)"),
    "b-rank": (dict(b=np.zeros((6, 1), np.float32)), ValueError, r"^bias must have shape"),
    "nhwc-channels": (dict(layout="NHWC"), ValueError, r"input has 8 channels"),
}


@pytest.mark.parametrize("case", BAD_CONV2D.values(), ids=BAD_CONV2D.keys())
def test_conv2d_rejects(case, variant):
    kwargs, exc, match = case
    args = dict(x=X4, w=W4, b=None) | kwargs
    x, w, b = args.pop("x"), args.pop("w"), args.pop("b")
    f = variant(lambda x, w, b: conv2d(x, w, b, **args))
    with pytest.raises(exc, match=match):
        f(x, w, b)


F2 = np.zeros((4, 4), np.float32)
BAD_CORR = {
    "corr2d-X-rank": (
        corr2d,
        (np.zeros((1, 4, 4), np.float32), F2[:2, :2]),
        ValueError,
        r"^X must have rank 2",
    ),
    "corr2d-K-rank": (corr2d, (F2, np.zeros(2, np.float32)), ValueError, r"^K must have rank 2"),
    "corr2d-K-large": (
        corr2d,
        (F2, np.zeros((5, 2), np.float32)),
        ValueError,
        r"^K of spatial size \(5, 2\) is larger than X",
    ),
    "corr2d-int": (corr2d, (F2.astype(int), F2[:2, :2]), TypeError, r"^X must have a real"),
    "vmap-K-large": (
        corr2d_vmap,
        (F2, np.zeros((2, 5), np.float32)),
        ValueError,
        r"^K of spatial size",
    ),
    "vmap-K-int": (corr2d_vmap, (F2, np.zeros((2, 2), int)), TypeError, r"^K must have a real"),
    "convolve-K-large": (
        convolve2d,
        (F2, np.zeros((5, 5), np.float32)),
        ValueError,
        r"^K of spatial size",
    ),
    "multi-in-channels": (
        corr2d_multi_in,
        (np.zeros((3, 4, 4), np.float32), np.zeros((2, 2, 2), np.float32)),
        ValueError,
        r"^X has 3 input channels but K expects 2 \(K.shape\[0\]",
    ),
    "multi-in-out-channels": (
        corr2d_multi_in_out,
        (np.zeros((3, 4, 4), np.float32), np.zeros((1, 2, 2, 2), np.float32)),
        ValueError,
        r"^X has 3 input channels but K expects 2",
    ),
    "multi-in-out-rank": (
        corr2d_multi_in_out,
        (np.zeros((3, 4, 4), np.float32), np.zeros((3, 2, 2), np.float32)),
        ValueError,
        r"^K must have rank 4",
    ),
    "multi-impl": (
        functools.partial(corr2d_multi_in, impl="loop"),
        (np.zeros((3, 4, 4), np.float32), np.zeros((3, 2, 2), np.float32)),
        ValueError,
        r"^impl must be one of",
    ),
    "1x1-kernel": (
        conv1x1,
        (np.zeros((3, 4, 4), np.float32), np.zeros((2, 3, 2, 1), np.float32)),
        ValueError,
        r"^K must be a 1x1 kernel",
    ),
    "1x1-channels": (
        conv1x1,
        (np.zeros((3, 4, 4), np.float32), np.zeros((2, 4, 1, 1), np.float32)),
        ValueError,
        r"^X has 3 input channels but K expects 4",
    ),
}


@pytest.mark.parametrize("case", BAD_CORR.values(), ids=BAD_CORR.keys())
def test_corr2d_family_rejects(case, variant):
    fn, args, exc, match = case
    with pytest.raises(exc, match=match):
        variant(fn)(*args)


def test_manual_paths_have_the_same_gradients(rng):
    X = rng.standard_normal((2, 7, 6), dtype=np.float32)
    K = rng.standard_normal((3, 2, 3, 2), dtype=np.float32)
    ct = rng.standard_normal((3, 5, 5), dtype=np.float32)

    def loss(f):
        return jax.jit(jax.grad(lambda X, K: jnp.sum(f(X, K) * ct), argnums=(0, 1)))

    want = loss(corr2d_multi_in_out)(X, K)
    got = loss(functools.partial(corr2d_multi_in_out, impl="vmap"))(X, K)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    got = loss(lambda X, K: corr2d_vmap(X[0], K[0, 0]))(X, K)
    want = loss(lambda X, K: corr2d(X[0], K[0, 0]))(X, K)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)
    assert np.abs(want[1]).max() > 0


# --- the custom-derivative path (impl="vjp") and impl="auto" ---------------------------------

VJP_CASES = [
    # (layout, batch, cin, cout, (kh, kw), padding, (h, w))
    ("NHWC", 3, 1, 6, (5, 5), 2, (9, 8)),  # LeNet conv1: tap-sum forward, tap-matmul dW
    ("NCHW", 2, 1, 4, (3, 2), ((2, 0), (1, 1)), (6, 7)),
    ("NHWC", 2, 3, 5, (3, 3), "same", (7, 6)),  # col2im dX, canonical-conv dW
    ("NCHW", None, 4, 3, (2, 3), "valid", (5, 6)),
    ("NHWC", 2, 20, 16, (3, 3), ((0, 2), (1, 0)), (6, 5)),  # wide: flipped-kernel dX conv
    ("NCHW", 1, 17, 16, (1, 3), (0, 1), (4, 6)),
]


def _vjp_arrays(case, dtype=np.float32):
    layout, n, ci, co, (kh, kw), _, (h, w_) = case
    r = np.random.default_rng(ci * 100 + co)
    x = r.standard_normal((n or 1, ci, h, w_)).astype(dtype)
    w = (r.standard_normal((co, ci, kh, kw)) / np.sqrt(ci * kh * kw)).astype(dtype)
    b = r.standard_normal(co).astype(dtype)
    if layout == "NHWC":
        x, w = x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0)
    return (x if n else x[0]), w, b


@pytest.mark.parametrize("case", VJP_CASES, ids=lambda c: f"{c[0]}-c{c[2]}-o{c[3]}-p{c[5]}")
def test_vjp_path_values_and_grads_match_torch(case, torch):
    layout, _, ci, _, k, padding, _ = case
    x, w, b = _vjp_arrays(case)
    kw = dict(padding=padding, layout=layout)
    y = jax.jit(lambda x, w, b: conv2d(x, w, b, impl="vjp", **kw))(x, w, b)
    assert_close(y, reference.conv2d(x, w, b, **kw), terms=ci * k[0] * k[1])
    ct = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)

    def loss(impl):
        return jax.jit(
            jax.grad(lambda *a: jnp.sum(conv2d(*a, impl=impl, **kw) * ct), argnums=(0, 1, 2))
        )

    got, lax_grads = loss("vjp")(x, w, b), loss("lax")(x, w, b)
    c = dict(stride=1, padding=padding, dilation=1, groups=1, layout=layout)
    tx, tw, tb = (torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, w, b))
    (_torch_conv(torch, c, tx, tw, tb) * torch.from_numpy(ct.astype(np.float64))).sum().backward()
    for name, g, g_lax, t in zip("xwb", got, lax_grads, (tx, tw, tb), strict=True):
        expected = t.grad.numpy()
        assert g.shape == expected.shape, name
        scale = max(1.0, np.abs(expected).max())
        np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(g, g_lax, rtol=1e-4, atol=1e-5 * scale, err_msg=name)


CHWN_CASES = [
    # (batch, cin, cout, (kh, kw), padding, (h, w)): LeNet's two layers, small, and others
    (3, 1, 6, (5, 5), 2, (9, 8)),  # one channel: tap sum undifferentiated, patch matrix in grad
    (4, 6, 16, (5, 5), 0, (9, 10)),  # patch-matrix forward, col2im dX, one-product dW
    (2, 3, 5, (3, 3), "same", (7, 6)),
    (1, 4, 3, (2, 3), ((2, 0), (1, 1)), (5, 6)),
    (2, 3, 4, (3, 3), 1, (6, 5), dict(stride=2)),  # strided: lax
    (2, 20, 16, (3, 3), ((0, 2), (1, 0)), (6, 5)),  # wide: the NHWC rule between transposes
]


def _chwn_arrays(case, dtype=np.float32):
    n, ci, co, (kh, kw), _, (h, w_), *_ = case
    r = np.random.default_rng(ci * 100 + co + n)
    x = r.standard_normal((ci, h, w_, n)).astype(dtype)
    w = (r.standard_normal((kh, kw, ci, co)) / np.sqrt(ci * kh * kw)).astype(dtype)
    b = r.standard_normal(co).astype(dtype)
    return x, w, b


@pytest.mark.parametrize("case", CHWN_CASES, ids=lambda c: f"c{c[1]}-o{c[2]}-p{c[4]}")
def test_chwn_values_and_grads_match_torch(case, torch):
    """CHWN against torch (on the NCHW transpose), values and float64 autograd gradients;
    every impl's values and gradients from one jitted function (one compile)."""
    x, w, b = _chwn_arrays(case)
    extra = case[6] if len(case) > 6 else {}
    kw = dict(padding=case[4], layout="CHWN", **extra)
    y_shape = jax.eval_shape(lambda x, w, b: conv2d(x, w, b, **kw), x, w, b).shape
    ct = np.random.default_rng(3).standard_normal(y_shape).astype(np.float32)

    def values_and_grads(impl, x, w, b):
        conv = lambda x, w, b: conv2d(x, w, b, impl=impl, **kw)  # noqa: E731
        loss = lambda x, w, b: jnp.sum(conv(x, w, b) * ct)  # noqa: E731
        return conv(x, w, b), jax.grad(loss, argnums=(0, 1, 2))(x, w, b)

    got = jax.jit(every_impl(values_and_grads))(x, w, b)
    c = dict(stride=extra.get("stride", 1), padding=case[4], dilation=1, groups=1,
             layout="NCHW")  # fmt: skip
    tx = torch.tensor(x.transpose(3, 0, 1, 2), dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(w.transpose(3, 2, 0, 1), dtype=torch.float64, requires_grad=True)
    tb = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    ty = _torch_conv(torch, c, tx, tw, tb)
    terms = case[1] * case[3][0] * case[3][1]
    want_y = ty.detach().numpy().transpose(1, 2, 3, 0)
    (ty * torch.from_numpy(ct.transpose(3, 0, 1, 2).astype(np.float64))).sum().backward()
    expected = (tx.grad.numpy().transpose(1, 2, 3, 0), tw.grad.numpy().transpose(2, 3, 1, 0),
                tb.grad.numpy())  # fmt: skip
    assert set(got) == set(IMPLS)
    for impl, (y, grads) in got.items():
        assert_close(y, want_y, terms=terms, err_msg=impl)
        for name, g, e in zip("xwb", grads, expected, strict=True):
            msg = f"{impl} {name}"
            assert g.shape == e.shape, msg
            scale = max(1.0, np.abs(e).max())
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5 * scale, err_msg=msg)


@pytest.mark.parametrize("case", CHWN_CASES[:2], ids=["one-channel", "lenet-conv2"])
def test_chwn_check_grads_float64(case):
    """The CHWN rule (a custom_vjp) in reverse mode to second order against finite
    differences; forward mode is refused with conv2d's TypeError, and works through lax."""
    with jax.enable_x64(True):
        x, w, b = (jnp.asarray(a) for a in _chwn_arrays(case, np.float64))
        kw = dict(padding=case[4], layout="CHWN")
        f = lambda x, w, b: conv2d(x, w, b, impl="vjp", **kw)
        check_grads(f, (x, w, b), order=2, modes=("rev",))
        with pytest.raises(TypeError, match="reverse mode only .* use impl='lax'"):
            jax.jvp(f, (x, w, b), (x, w, b))
        check_grads(lambda *a: conv2d(*a, impl="lax", **kw), (x, w, b), order=1, modes=("fwd",))


def test_chwn_large_patches_take_the_nhwc_path(monkeypatch):
    """Past ``CHWN_PATCH_BYTES`` the CHWN path runs through the NHWC rule (between
    transposes), as wide layers do: the same values and gradients."""
    x, w, b = _chwn_arrays(CHWN_CASES[1])

    def run():
        f = lambda x, w: jnp.sum(jnp.sin(conv2d(x, w, layout="CHWN", impl="vjp")))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))(x, w)

    small = run()
    monkeypatch.setattr(batch_last, "CHWN_PATCH_BYTES", 0)
    jax.clear_caches()
    hlo = jax.jit(lambda x, w: conv2d(x, w, layout="CHWN", impl="vjp")).lower(x, w).as_text()
    assert "convolution" in hlo  # the NHWC forward is lax's convolution; CHWN's a dot
    for a, e in zip(jax.tree.leaves(run()), jax.tree.leaves(small), strict=True):
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    jax.clear_caches()


def test_chwn_rank_and_channels_are_checked():
    with pytest.raises(ValueError, match=r"rank 4 \(batched CHWN"):
        conv2d(np.ones((3, 8, 8), np.float32), np.ones((3, 3, 3, 2), np.float32), layout="CHWN")
    with pytest.raises(ValueError, match="input has 3 channels but weight expects 2"):
        conv2d(np.ones((3, 8, 8, 2), np.float32), np.ones((3, 3, 2, 4), np.float32),
               layout="CHWN")  # fmt: skip


@pytest.mark.parametrize("case", [VJP_CASES[1], VJP_CASES[4]], ids=["one-channel", "wide"])
def test_vjp_path_check_grads_float64(case):
    """Forward and reverse mode, and second order, against finite differences."""
    with jax.enable_x64(True):
        x, w, b = (jnp.asarray(a) for a in _vjp_arrays(case, np.float64))
        f = lambda x, w, b: conv2d(x, w, b, padding=case[5], layout=case[0], impl="vjp")
        check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


def _scan_grad_dim_labels(impl: str, cin: int, cout: int) -> set[str]:
    """dim_labels of every convolution XLA compiles for a scan of gradient steps."""
    import re

    x = jnp.ones((2, 8, 8, cin))
    w = jnp.ones((3, 3, cin, cout))

    def step(w, _):
        g = jax.grad(lambda w: jnp.sum(conv2d(x, w, padding=1, layout="NHWC", impl=impl) ** 2))
        return w - 1e-3 * g(w), None

    hlo = jax.jit(lambda w: jax.lax.scan(step, w, None, length=2)[0]).lower(w).compile()
    return set(re.findall(r"dim_labels=([\w>-]+)", hlo.as_text()))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU property")
@pytest.mark.parametrize(("cin", "cout"), [(3, 4), (24, 16)], ids=["narrow", "wide"])
def test_vjp_path_keeps_scanned_gradients_canonical(cin, cout):
    """The reason for impl="vjp": inside lax.scan every conv XLA:CPU runs is NHWC/HWIO."""
    assert _scan_grad_dim_labels("vjp", cin, cout) <= {"b01f_01io->b01f"}
    # and the guard is meaningful: lax's own gradients are not canonical there
    assert _scan_grad_dim_labels("lax", cin, cout) - {"b01f_01io->b01f"}


def test_vjp_path_falls_back_to_lax_elsewhere(rng):
    x = rng.standard_normal((2, 4, 9, 8), dtype=np.float32)
    w = rng.standard_normal((6, 2, 3, 3), dtype=np.float32)
    for kw in (dict(stride=2), dict(dilation=2), dict(groups=2)):
        ww = w if "groups" in kw else np.concatenate([w, w], axis=1)
        got = conv2d(x, ww, impl="vjp", **kw)
        np.testing.assert_array_equal(got, conv2d(x, ww, impl="lax", **kw))


def test_auto_selection_rules():
    g = conv.conv_geometry((8, 28, 28, 1), (5, 5, 1, 6), padding=2, layout="NHWC")
    assert conv.select_impl(g, jnp.float32, "cpu") == "vjp"
    assert conv.select_impl(g, jnp.float64, "cpu") == "vjp"
    assert conv.select_impl(g, jnp.bfloat16, "cpu") == "lax"
    assert conv.select_impl(g, jnp.float32, "gpu") == "vjp"
    assert conv.select_impl(g, jnp.float32, "tpu") == "lax"
    for kw in (dict(dilation=2), dict(padding=5), dict(stride=2, dilation=2)):
        g = conv.conv_geometry((8, 28, 28, 1), (5, 5, 1, 6), layout="NHWC", **kw)
        assert conv.select_impl(g, jnp.float32, "cpu") == "lax", kw
    for layout, shape in (("NHWC", (8, 28, 28, 1)), ("NCHW", (8, 1, 28, 28))):
        w_shape = (5, 5, 1, 6) if layout == "NHWC" else (6, 1, 5, 5)
        g = conv.conv_geometry(shape, w_shape, stride=(2, 1), padding=5, layout=layout)
        assert conv.select_impl(g, jnp.float32, "cpu") == "phases", layout
        assert conv.select_impl(g, jnp.float64, "cpu") == "phases", layout
        assert conv.select_impl(g, jnp.bfloat16, "cpu") == "lax", layout
        assert conv.select_impl(g, jnp.float32, "gpu") == "lax", layout
    g = conv.conv_geometry((8, 4, 9, 9), (6, 2, 3, 3), groups=2)
    assert conv.select_impl(g, jnp.float32, "cpu") == "lax"
    # the default is "auto", which runs the selected path
    x = np.random.default_rng(0).standard_normal((2, 9, 9, 1)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((5, 5, 1, 3)).astype(np.float32)
    expected = conv2d(
        x,
        w,
        padding=2,
        layout="NHWC",
        impl=conv.select_impl(
            conv.conv_geometry(x.shape, w.shape, padding=2, layout="NHWC"), jnp.float32
        ),
    )
    np.testing.assert_array_equal(conv2d(x, w, padding=2, layout="NHWC"), expected)


@pytest.mark.parametrize("k", [(3, 2), (9, 8)], ids=["taps", "windows"])
def test_corr2d_vmap_gradients_both_forms(k, rng):
    """corr2d_vmap's own gradient rule: tap by tap for small kernels, window sums for large."""
    X = rng.standard_normal((12, 11), dtype=np.float32)
    K = rng.standard_normal(k, dtype=np.float32)
    ct = rng.standard_normal((12 - k[0] + 1, 11 - k[1] + 1), dtype=np.float32)

    def grads(f):
        return jax.jit(jax.grad(lambda X, K: jnp.vdot(f(X, K), ct), argnums=(0, 1)))(X, K)

    for g, e in zip(grads(corr2d_vmap), grads(corr2d), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-4)
