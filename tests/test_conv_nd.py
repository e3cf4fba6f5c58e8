"""conv1d / conv2d / conv3d: torch's signature and argument forms, a seeded sweep over 1, 2
and 3 spatial axes against the float64 NumPy oracle and PyTorch (values and gradients, eager and
jitted, every layout, batched and unbatched), low-precision dtypes, NaN/inf, and the errors.

The 2-D speed paths are tested in test_conv.py; here conv2d is the N-D entry point."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    DTYPE_TOL,
    assert_grads_match_torch,
    assert_low_precision,
    assert_matches_in_both_layouts,
    assert_nonfinite_like,
    case_arrays,
    case_geometry,
    jax_shape,
    to_last,
    to_torch,
    torch_op,
    torch_shape,
)
from conftest import FULL
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import jaxconv
from jaxconv import reference

CONVS = {1: jaxconv.conv1d, 2: jaxconv.conv2d, 3: jaxconv.conv3d}
REFS = {1: reference.conv1d, 2: reference.conv2d, 3: reference.conv3d}


def _make_case(i: int) -> dict:
    """One seeded geometry over 1, 2 or 3 spatial axes, with every argument form."""
    r = np.random.default_rng(1000 + i)
    n = (1, 2, 3)[i % 3]
    groups = int(r.choice([1, 1, 2, 3]))
    cg, og = int(r.integers(1, 3)), int(r.integers(1, 3))
    k = tuple(int(v) for v in r.integers(1, 4, n))
    d = tuple(int(v) for v in r.integers(1, 3, n))
    form = ["int", "1-tuple", "list", "sides", "same", "valid"][i % 6]
    stride = tuple(int(v) for v in r.integers(1, 4, n))
    if form == "int":
        padding, stride_arg = int(r.integers(0, 3)), stride[0]
    elif form == "1-tuple":
        padding, stride_arg = (int(r.integers(0, 3)),), (stride[0],)
    elif form == "list":
        padding, stride_arg = [int(v) for v in r.integers(0, 3, n)], list(stride)
    elif form == "sides":  # jaxconv's per-side extension; torch gets it as an explicit pad
        padding, stride_arg = [tuple(int(v) for v in r.integers(0, 3, 2)) for _ in range(n)], stride
    else:
        padding, stride_arg = form, (1,) * n if form == "same" else stride
    pads = reference.conv._conv_padding(padding, k, d)
    size = tuple(int(d[a] * (k[a] - 1) + 1 - sum(pads[a]) + r.integers(0, 5)) for a in range(n))
    size = tuple(max(s, 1) for s in size)
    return dict(
        i=i, n=n, groups=groups, c=cg * groups, o=og * groups, k=k, size=size,
        stride=stride_arg, padding=padding, dilation=d if i % 2 else list(d),
        batch=[None, 1, 2][i % 3 if n != 1 else (i // 3) % 3], bias=bool(i % 4),
        last=bool((i // 2) % 2),
    )  # fmt: skip


CASES = [_make_case(i) for i in range(24)]
#: The cases the value sweep runs: rank (i % 3), padding form (i % 6), bias (i % 4), layout
#: ((i // 2) % 2) and dilation spelling (i % 2) repeat every 12 cases, and the batch kinds
#: (set by the rank, and in 1-D by i // 3) all occur in the first 12, so those hold every
#: combination the 24 do; ``JAXCONV_TEST_FULL=1``: all 24.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-{c['n']}d-g{c['groups']}-p{c['padding']!s:.12}-"
        f"{'last' if c['last'] else 'first'}-{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


_arrays = case_arrays
_geometry = case_geometry


def _torch_out(torch, c: dict, x, w, b) -> np.ndarray:
    """PyTorch's output; per-side padding is applied by F.pad first (torch has no such form)."""
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    tx, pad = t(x), c["padding"]
    if isinstance(pad, list) and isinstance(pad[0], tuple):
        flat = [p for side in reversed(pad) for p in side]  # F.pad: last axis first
        tx, pad = torch.nn.functional.pad(tx, flat), 0
    g = _geometry(c) | {"padding": pad}
    return torch_op(torch, "conv", c["n"])(tx, t(w), t(b), **g).numpy()


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")  # torch's, on speed
@pytest.mark.parametrize("c", SWEEP, ids=_case_id)
def test_conv_nd_sweep_matches_reference_and_torch(c, torch):
    arrays = _arrays(c)
    n, g = c["n"], _geometry(c)
    assert_matches_in_both_layouts(
        n, c["last"], arrays, _torch_out(torch, c, *arrays),
        lambda x, w, b, **layout: REFS[n](x, w, b, **g, **layout),
        lambda x, w, b, **layout: CONVS[n](x, w, b, **g, **layout),
    )  # fmt: skip


# --- torch's signature: positional ports, keyword names, argument forms ---------------------


def test_torch_positional_calls_port_unchanged(torch):
    """``F.convNd(x, w, b, stride, padding, dilation, groups)`` == ``jaxconv.convNd(...)``."""
    r = np.random.default_rng(3)
    F = torch.nn.functional
    x2, w2, b2 = (
        r.standard_normal((2, 4, 7, 6)),
        r.standard_normal((6, 4, 3, 3)),
        r.standard_normal(6),
    )
    t = torch.tensor
    with jax.enable_x64(True):
        np.testing.assert_allclose(
            jaxconv.conv2d(x2, w2, b2, 2, 1), F.conv2d(t(x2), t(w2), t(b2), 2, 1), rtol=1e-10
        )
        x1, w1 = r.standard_normal((2, 4, 11)), r.standard_normal((6, 2, 3))
        np.testing.assert_allclose(
            jaxconv.conv1d(x1, w1, None, 2, 2, 3, 2),
            F.conv1d(t(x1), t(w1), None, 2, 2, 3, 2),
            rtol=1e-10,
        )
        x3, w3 = r.standard_normal((1, 2, 5, 6, 4)), r.standard_normal((4, 2, 2, 3, 1))
        np.testing.assert_allclose(
            jaxconv.conv3d(x3, w3, None, (1, 2, 1), 1, (2, 1, 1)),
            F.conv3d(t(x3), t(w3), None, (1, 2, 1), 1, (2, 1, 1)),
            rtol=1e-10,
        )
        kw = dict(input=x2, weight=w2, bias=b2, stride=2, padding=1, dilation=1, groups=1)
        np.testing.assert_allclose(
            jaxconv.conv2d(**kw),
            F.conv2d(**{k: t(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}),
            rtol=1e-10,
        )


@pytest.mark.parametrize(
    "forms",
    [
        dict(stride=(2,), padding=(1,), dilation=(2,)),
        dict(stride=[2], padding=[1], dilation=[2]),
        dict(stride=[2, 2], padding=[1, 1], dilation=(2, 2)),
    ],
    ids=["1-tuples", "1-lists", "n-lists"],
)
def test_one_element_sequences_and_lists_mean_every_axis(forms, torch):
    r = np.random.default_rng(4)
    x, w = r.standard_normal((1, 2, 9, 8)), r.standard_normal((3, 2, 3, 2))
    want = torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, **forms).numpy()
    with jax.enable_x64(True):
        got = jaxconv.conv2d(x, w, None, **forms)
        np.testing.assert_allclose(got, want, rtol=1e-10)
        np.testing.assert_allclose(jaxconv.conv2d(x, w, None, 2, 1, 2), want, rtol=1e-10)


@pytest.mark.parametrize("n", [1, 3])
def test_impl_auto_and_lax_agree_and_the_2d_paths_are_refused(n):
    r = np.random.default_rng(5)
    x = r.standard_normal((2, 3) + (5,) * n).astype(np.float32)
    w = r.standard_normal((4, 3) + (2,) * n).astype(np.float32)
    # 3-D auto runs the depth planes on CPU: the same sums in another order
    np.testing.assert_allclose(
        CONVS[n](x, w, impl="auto"), CONVS[n](x, w, impl="lax"), rtol=1e-5, atol=1e-5
    )
    for impl in ("patches", "vjp"):
        with pytest.raises(
            ValueError,
            match=rf"^impl must be one of \('auto', 'lax', 'depthwise'.*\) for conv{n}d .*2-D only",
        ):
            CONVS[n](x, w, impl=impl)


# --- dtypes, NaN/inf ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_low_precision_dtypes_against_the_oracle(n, dtype):
    r = np.random.default_rng(6 + n)
    x = r.standard_normal((2, 4) + (6,) * n)
    w = r.standard_normal((4, 2) + (3,) * n) / 3
    b = r.standard_normal(4)
    assert_low_precision(
        lambda x, w, b: CONVS[n](x, w, b, 2, 1, 1, 2),
        lambda x, w, b: REFS[n](x, w, b, 2, 1, 1, 2),
        (x, w, b),
        dtype,
    )


@pytest.mark.parametrize("n", [1, 3])
def test_nan_and_inf_propagate_like_torch(n, torch):
    r = np.random.default_rng(8)
    x = r.standard_normal((1, 2) + (6,) * n)
    x[(0, 0) + (1,) * n] = np.nan
    x[(0, 1) + (4,) * n] = np.inf
    w = r.standard_normal((3, 2) + (2,) * n)
    want = torch_op(torch, "conv", n)(torch.tensor(x), torch.tensor(w), None, 1, 1).numpy()
    with jax.enable_x64(True):
        assert_nonfinite_like(CONVS[n](x, w, None, 1, 1), want)


# --- gradients ----------------------------------------------------------------------------


def _torch_expressible(c: dict) -> bool:
    return not (isinstance(c["padding"], list) and isinstance(c["padding"][0], tuple))


@pytest.mark.parametrize(
    "c", [c for c in CASES if c["n"] != 2 and _torch_expressible(c)][:4], ids=_case_id
)
def test_gradients_match_torch_autograd(c, torch):
    x, w, b = _arrays(c)
    b = np.random.default_rng(9).standard_normal(c["o"]) if b is None else b
    n, g = c["n"], _geometry(c)
    assert_grads_match_torch(
        torch,
        lambda x, w, b: torch_op(torch, "conv", n)(x, w, b, **g),
        lambda x, w, b: CONVS[n](x, w, b, **g),
        (x, w, b),
    )


@pytest.mark.parametrize(
    ("n", "kwargs"),
    [(1, dict(stride=2, padding=1, dilation=2, groups=2, layout="NLC")),
     (3, dict(stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1), groups=2))],
    ids=["1d-strided-dilated-grouped-channels-last", "3d-strided-dilated-grouped"],
)  # fmt: skip
def test_check_grads_both_modes_second_order(n, kwargs):
    r = np.random.default_rng(11)
    last = kwargs.get("layout", "").endswith("C")
    with jax.enable_x64(True):
        x = r.standard_normal((1, 4) + (3,) * n)
        w = r.standard_normal((2, 4 // kwargs.get("groups", 1)) + (2,) * n)
        if last:
            x, w = to_last(x, w)
        b = r.standard_normal(2)
        f = jax.jit(lambda x, w, b: CONVS[n](x, w, b, **kwargs))
        check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


# --- errors: what torch refuses, refused before tracing -----------------------------------

X1, W1 = np.zeros((2, 4, 8), np.float32), np.zeros((6, 4, 3), np.float32)
X3, W3 = np.zeros((1, 4, 5, 5, 5), np.float32), np.zeros((6, 2, 3, 3, 3), np.float32)

BAD = {
    "1d-rank": (1, dict(input=np.zeros(8, np.float32)), ValueError, r"^input must have rank 2"),
    "1d-w-rank": (1, dict(weight=W1[..., None]), ValueError, r"^weight must have rank 3"),
    "1d-2-padding": (1, dict(padding=(1, 1)), TypeError, r"^padding must be"),
    "1d-2-stride": (1, dict(stride=(1, 1)), TypeError, r"^stride must be"),
    "1d-empty-stride": (1, dict(stride=()), TypeError, r"^stride must be"),
    "1d-same-strided": (1, dict(padding="same", stride=(2,)), ValueError, r"padding='same' needs"),
    "1d-layout": (1, dict(layout="NCHW"), ValueError, r"^layout must be one of \('NCL', 'NLC'\)"),
    "1d-channels": (1, dict(weight=W1[:, :3]), ValueError, r"^input has 4 channels"),
    "1d-stride-0": (1, dict(stride=0), ValueError, r"^stride must be positive"),
    "1d-dilation-0": (1, dict(dilation=[0]), ValueError, r"^dilation must be positive"),
    "1d-padding-neg": (1, dict(padding=-1), ValueError, r"^padding must be non-negative"),
    "1d-too-large": (1, dict(weight=np.zeros((6, 4, 9), np.float32)), ValueError,
                     r"^weight is too large for input"),
    "1d-bias": (1, dict(bias=np.zeros(5, np.float32)), ValueError, r"^bias must have shape"),
    "1d-int": (1, dict(input=X1.astype(np.int32)), TypeError, r"^input must have a real float"),
    "1d-empty-length": (1, dict(input=np.zeros((2, 4, 0), np.float32)), ValueError,
                        r"^input must have non-empty spatial"),
    "3d-groups": (3, dict(groups=3), ValueError, r"in_channels \(4\) must be divisible by groups"),
    "3d-out-groups": (3, dict(weight=np.zeros((5, 2, 3, 3, 3), np.float32), groups=2),
                      ValueError, r"out_channels \(5\) must be divisible"),
    "3d-groups-0": (3, dict(groups=0), ValueError, r"^groups must be positive"),
    "3d-stride-float": (3, dict(stride=1.5), TypeError, r"^stride must be an int"),
    "3d-padding-2": (3, dict(padding=(1, 1)), TypeError, r"^padding must be"),
    "3d-layout": (3, dict(layout="NDHWC"), ValueError, r"in_channels \(5\) must be divisible"),
    "3d-padding-string": (3, dict(padding="full"), ValueError, r"^padding string must be"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_convnd_refuses_what_torch_refuses(case, torch):
    n, kwargs, exc, match = case
    args = {1: dict(input=X1, weight=W1), 3: dict(input=X3, weight=W3, groups=2)}[n] | kwargs
    with pytest.raises(exc, match=match):
        CONVS[n](**args)
    if "layout" in kwargs:
        return  # torch has no layout argument
    with pytest.raises((RuntimeError, TypeError, ValueError)):
        torch_op(torch, "conv", n)(**to_torch(torch, args))


# --- property: the output shape is torch's, or both refuse --------------------------------


@st.composite
def _geometries(draw) -> dict:
    n = draw(st.integers(1, 3))
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(n))  # noqa: E731
    groups = draw(st.integers(1, 3))
    stride = ints(1, 3)
    return dict(
        n=n, size=ints(1, 6), k=ints(1, 4), stride=stride, dilation=ints(1, 3), groups=groups,
        padding=draw(st.sampled_from(["same", "valid", ints(0, 3), ints(0, 3)])),
        cin=groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1])),
        cout=groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1])),
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@settings(max_examples=80, deadline=None)
@given(_geometries())
def test_output_shape_is_torchs_or_both_refuse(g):
    torch = pytest.importorskip("torch")
    x_shape = (1, g["cin"], *g["size"])
    w_shape = (g["cout"], max(g["cin"] // g["groups"], 1), *g["k"])
    args = (g["stride"], g["padding"], g["dilation"], g["groups"])
    want = torch_shape(torch, torch_op(torch, "conv", g["n"]), x_shape, w_shape, args)
    got = jax_shape(CONVS[g["n"]], x_shape, w_shape, args)
    assert got == want, (g, got, want)
