"""conv_transpose1d/2d/3d: a seeded sweep against the float64 scatter-add oracle and PyTorch
(groups, dilation and output_padding together; stride larger than the kernel; padding larger
than d*(k-1); every layout; batched and unbatched; eager and jitted), the identity with the
gradient of the forward conv, gradients against torch autograd and check_grads (both modes,
second order), dtypes, NaN/inf, and the errors torch raises."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _conv_helpers import (
    CHANNELS_LAST,
    DTYPE_TOL,
    assert_grads_match_torch,
    assert_low_precision,
    assert_matches_in_both_layouts,
    assert_nonfinite_like,
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

CONVT = {1: jaxconv.conv_transpose1d, 2: jaxconv.conv_transpose2d, 3: jaxconv.conv_transpose3d}
REFT = {
    1: reference.conv_transpose1d,
    2: reference.conv_transpose2d,
    3: reference.conv_transpose3d,
}
CONVS = {1: jaxconv.conv1d, 2: jaxconv.conv2d, 3: jaxconv.conv3d}


def _make_case(i: int) -> dict:
    """One seeded transposed-conv geometry; the first cases of each kind force the geometry
    torch's own samples leave out."""
    r = np.random.default_rng(2000 + i)
    n = (1, 2, 3)[i % 3]
    groups = int(r.choice([1, 2, 3]))
    k = tuple(int(v) for v in r.integers(1, 4, n))
    s = tuple(int(v) for v in r.integers(1, 4, n))
    d = tuple(int(v) for v in r.integers(1, 4, n))
    kind = ["all-together", "stride>kernel", "padding>d(k-1)", "random"][(i // 3) % 4]
    if kind == "stride>kernel":
        s = tuple(kk + int(r.integers(1, 3)) for kk in k)
    p = [int(r.integers(0, dd * (kk - 1) + 1)) for kk, dd in zip(k, d, strict=True)]
    if kind == "padding>d(k-1)":  # crops past the kernel's reach: negative lax padding
        s = tuple(max(v, 2) for v in s)
        p = [dd * (kk - 1) + int(r.integers(1, 3)) for kk, dd in zip(k, d, strict=True)]
    op = [int(r.integers(0, max(ss, dd))) for ss, dd in zip(s, d, strict=True)]
    if kind == "all-together":
        groups, d = max(groups, 2), tuple(max(v, 2) for v in d)
        op = [max(ss, dd) - 1 for ss, dd in zip(s, d, strict=True)]
    # input big enough that the output is non-empty
    size = tuple(
        max(int(r.integers(1, 5)), -(-(2 * pp - dd * (kk - 1) - oo) // ss) + 1)
        for pp, dd, kk, oo, ss in zip(p, d, k, op, s, strict=True)
    )
    form = i % 3  # int when all axes agree, 1-tuple, list
    stride = s[0] if form == 0 and len(set(s)) == 1 else (list(s) if form == 2 else s)
    return dict(
        i=i, n=n, kind=kind, groups=groups, cin=groups * int(r.integers(1, 3)),
        cout=groups * int(r.integers(1, 3)), k=k, size=size, stride=stride, padding=p,
        output_padding=tuple(op), dilation=d, batch=[None, 1, 2][(i // 2) % 3],
        bias=bool(i % 4), last=bool((i // 4) % 2),
    )  # fmt: skip


CASES = [_make_case(i) for i in range(24)]
#: The cases the value sweep runs: the first 12 hold every kind ((i // 3) % 4) in every rank
#: (i % 3), each argument form, batch kind, bias and layout; ``JAXCONV_TEST_FULL=1``: all 24.
SWEEP = CASES if FULL else CASES[:12]


def _case_id(c: dict) -> str:
    return (
        f"{c['i']}-{c['n']}d-{c['kind']}-g{c['groups']}-s{c['stride']}-p{c['padding']}-"
        f"op{list(c['output_padding'])}-d{list(c['dilation'])}-"
        f"{'last' if c['last'] else 'first'}-{'unb' if c['batch'] is None else c['batch']}"
    ).replace(" ", "")


def _arrays(c: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    r = np.random.default_rng(c["i"])
    lead = () if c["batch"] is None else (c["batch"],)
    x = r.standard_normal(lead + (c["cin"],) + c["size"])
    w = r.standard_normal((c["cin"], c["cout"] // c["groups"]) + c["k"])
    b = r.standard_normal(c["cout"]) if c["bias"] else None
    return x, w, b


def _args(c: dict) -> tuple:
    """The positional arguments after (input, weight, bias), in torch's order."""
    return (c["stride"], c["padding"], c["output_padding"], c["groups"], c["dilation"])


def _torch(torch, c: dict, x, w, b) -> np.ndarray:
    t = lambda a: None if a is None else torch.tensor(a)  # noqa: E731
    return torch_op(torch, "conv_transpose", c["n"])(t(x), t(w), t(b), *_args(c)).detach().numpy()


def test_sweep_covers_the_geometry_torchs_samples_leave_out():
    together = [
        c for c in SWEEP
        if c["groups"] > 1 and max(c["dilation"]) > 1 and max(c["output_padding"]) > 0
    ]  # fmt: skip
    assert {c["n"] for c in together} == {1, 2, 3}
    assert any(min(np.array(_s(c)) > np.array(c["k"])) for c in SWEEP)
    assert any(
        p > d * (k - 1)
        for c in SWEEP
        for p, d, k in zip(c["padding"], c["dilation"], c["k"], strict=True)
    )
    assert {c["last"] for c in SWEEP} == {True, False}
    assert {c["batch"] for c in SWEEP} == {None, 1, 2}


def _s(c: dict) -> tuple[int, ...]:
    s = c["stride"]
    return (s,) * c["n"] if isinstance(s, int) else tuple(s)


@pytest.mark.parametrize("c", SWEEP, ids=_case_id)
def test_sweep_matches_oracle_and_torch(c, torch):
    arrays = _arrays(c)
    n, args = c["n"], _args(c)
    assert_matches_in_both_layouts(
        n, c["last"], arrays, _torch(torch, c, *arrays),
        lambda x, w, b, **layout: REFT[n](x, w, b, *args, **layout),
        lambda x, w, b, **layout: CONVT[n](x, w, b, *args, **layout),
    )  # fmt: skip


def test_keywords_and_argument_forms(torch):
    r = np.random.default_rng(1)
    x, w, b = r.standard_normal((2, 4, 5, 3)), r.standard_normal((4, 3, 3, 2)), None
    want = torch.nn.functional.conv_transpose2d(
        torch.tensor(x), torch.tensor(w), None, stride=2, padding=1, output_padding=1,
        groups=1, dilation=1,
    ).numpy()  # fmt: skip
    with jax.enable_x64(True):
        for forms in (
            dict(stride=2, padding=1, output_padding=1),
            dict(stride=(2,), padding=(1,), output_padding=(1,)),
            dict(stride=[2, 2], padding=[1, 1], output_padding=[1, 1], dilation=[1]),
        ):
            got = jaxconv.conv_transpose2d(input=x, weight=w, bias=b, groups=1, **forms)
            np.testing.assert_allclose(got, want, rtol=1e-10)


def test_chwn_equals_nchw():
    r = np.random.default_rng(2)
    x, w = r.standard_normal((2, 4, 5, 3)), r.standard_normal((4, 3, 3, 2))
    args = (None, (2, 1), 1, (1, 0), 1, (1, 2))
    with jax.enable_x64(True):
        want = jaxconv.conv_transpose2d(x, w, *args)
        got = jaxconv.conv_transpose2d(
            x.transpose(1, 2, 3, 0), w.transpose(2, 3, 1, 0), *args, layout="CHWN"
        )
        np.testing.assert_allclose(got, np.asarray(want).transpose(1, 2, 3, 0), rtol=1e-12)


# --- the gradient identity ----------------------------------------------------------------


def _identity_cases(per_dim: int = 2) -> list[dict]:
    """The first sweep cases of each dimension with output_padding < stride on every axis."""
    fits = [c for c in CASES if all(o < s for o, s in zip(c["output_padding"], _s(c), strict=True))]
    return [c for n in (1, 2, 3) for c in [c for c in fits if c["n"] == n][:per_dim]]


@pytest.mark.parametrize("c", _identity_cases(), ids=_case_id)
def test_equals_the_vjp_of_the_forward_conv(c):
    """conv_transposeNd(y, w) is the input gradient of convNd(., w) at cotangent y, for the
    same w in every layout (output_padding < stride: then the forward conv of an input of the
    transposed output's size has exactly y's size)."""
    y, w, _ = _arrays(c)
    layout = {}
    if c["last"]:
        y, w = to_last(y, w)
        layout = {"layout": CHANNELS_LAST[c["n"]]}
    with jax.enable_x64(True):
        out = CONVT[c["n"]](y, w, None, *_args(c), **layout)
        conv = lambda x: CONVS[c["n"]](  # noqa: E731
            x, w, None, c["stride"], c["padding"], c["dilation"], c["groups"], **layout
        )
        fwd, vjp = jax.vjp(conv, jnp.zeros_like(out))
        assert fwd.shape == y.shape
        np.testing.assert_allclose(vjp(jnp.asarray(y))[0], out, rtol=1e-10, atol=1e-10)


# --- gradients ----------------------------------------------------------------------------


@pytest.mark.parametrize("c", CASES[:3], ids=_case_id)
def test_gradients_match_torch_autograd(c, torch):
    x, w, b = _arrays(c)
    b = np.random.default_rng(3).standard_normal(c["cout"]) if b is None else b
    n, args = c["n"], _args(c)
    assert_grads_match_torch(
        torch,
        lambda x, w, b: torch_op(torch, "conv_transpose", n)(x, w, b, *args),
        lambda x, w, b: CONVT[n](x, w, b, *args),
        (x, w, b),
    )


@pytest.mark.parametrize(
    ("n", "args", "layout"),
    [(1, (2, 1, 1, 2, 2), "NCL"),
     (2, ((3, 1), (2, 1), (1, 0), 1, (1, 2)), "NHWC"),  # padding 2 > d*(k-1) = 1
     (3, ((2, 1, 1), (2, 0, 0), (1, 0, 0), 2, 1), "NCDHW")],
    ids=["1d-grouped-dilated", "2d-channels-last-crop", "3d-grouped"],
)  # fmt: skip
def test_check_grads_both_modes_second_order(n, args, layout):
    r = np.random.default_rng(5)
    groups = args[3]
    with jax.enable_x64(True):
        x = r.standard_normal((1, 2) + (2,) * n)
        w = r.standard_normal((2, 4 // groups) + (2,) * n)
        if layout == CHANNELS_LAST.get(n):
            x, w = to_last(x, w)
        b = r.standard_normal(4)
        f = jax.jit(lambda x, w, b: CONVT[n](x, w, b, *args, layout=layout))
        check_grads(f, (x, w, b), order=2, modes=("fwd", "rev"))


# --- dtypes, NaN/inf ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", list(DTYPE_TOL), ids=lambda d: jnp.dtype(d).name)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_low_precision_dtypes_against_the_oracle(n, dtype):
    r = np.random.default_rng(6 + n)
    x = r.standard_normal((2, 4) + (4,) * n)
    w = r.standard_normal((4, 2) + (3,) * n) / 3
    b = r.standard_normal(4)
    args = (2, 1, 1, 2, 1)
    assert_low_precision(
        lambda x, w, b: CONVT[n](x, w, b, *args),
        lambda x, w, b: REFT[n](x, w, b, *args),
        (x, w, b),
        dtype,
    )


@pytest.mark.parametrize("where", ["input", "weight"])
def test_nan_and_inf_propagate_like_torch(where, torch):
    """The stride's inserted zeros never meet the weights: an inf weight stays inf (not NaN)
    where no input element reaches, as in torch."""
    r = np.random.default_rng(8)
    x, w = r.standard_normal((1, 2, 4, 3)), r.standard_normal((2, 3, 3, 2))
    a = x if where == "input" else w
    a[0, 0, 1, 1], a[0, 1, 2, 0] = np.nan, np.inf
    args = (None, 2, 1, 1, 1, (1, 2))
    want = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(w), *args).numpy()
    with jax.enable_x64(True):
        assert_nonfinite_like(jaxconv.conv_transpose2d(x, w, *args), want)


# --- errors: what torch refuses, refused before tracing -----------------------------------

X2, W2 = np.zeros((1, 4, 5, 5), np.float32), np.zeros((4, 2, 3, 3), np.float32)

BAD = {
    "op-ge-stride": (dict(stride=2, output_padding=2), ValueError,
                     r"^output_padding must be smaller than either stride or dilation"),
    "op-eq-dilation": (dict(dilation=2, output_padding=(0, 2)), ValueError,
                       r"^output_padding must be smaller"),
    "op-neg": (dict(output_padding=-1), ValueError, r"^output_padding must be non-negative"),
    "padding-neg": (dict(padding=-1), ValueError, r"^padding must be non-negative"),
    "padding-same": (dict(padding="same"), TypeError, r"^padding must be .*'same'/'valid'"),
    "padding-valid": (dict(padding="valid"), TypeError, r"^padding must be"),
    "padding-sides": (dict(padding=((1, 0), (0, 1))), TypeError, r"^padding\[0\] must be an int"),
    "output-empty": (dict(padding=(4, 0)), ValueError, r"^padding is too large for input"),
    "groups": (dict(groups=3), ValueError, r"in_channels \(4.*must be divisible by groups"),
    "groups-0": (dict(groups=0), ValueError, r"^groups must be positive"),
    "stride-0": (dict(stride=0), ValueError, r"^stride must be positive"),
    "dilation-0": (dict(dilation=0), ValueError, r"^dilation must be positive"),
    "stride-3": (dict(stride=(1, 2, 3)), TypeError, r"^stride must be"),
    "stride-empty": (dict(stride=()), TypeError, r"^stride must be"),
    "stride-float": (dict(stride=1.5), TypeError, r"^stride must be an int"),
    "channels": (dict(weight=np.zeros((3, 2, 3, 3), np.float32)), ValueError,
                 r"^input has 4 channels but weight expects 3"),
    "bias": (dict(bias=np.zeros(3, np.float32)), ValueError, r"^bias must have shape .*\(2,\)"),
    "rank": (dict(input=np.zeros((4, 5), np.float32)), ValueError, r"^input must have rank 3"),
    "w-rank": (dict(weight=W2[0]), ValueError, r"^weight must have rank 4"),
    "w-empty": (dict(weight=np.zeros((4, 0, 3, 3), np.float32)), ValueError,
                r"^weight must have no empty"),
    "int": (dict(input=X2.astype(np.int32)), TypeError, r"^input must have a real float"),
    "spatial-empty": (dict(input=np.zeros((1, 4, 0, 5), np.float32)), ValueError,
                      r"^input must have non-empty spatial"),
    "layout": (dict(layout="NCL"), ValueError, r"^layout must be one of \('NCHW', 'NHWC'"),
}  # fmt: skip


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_refuses_what_torch_refuses(case, variant, torch):
    kwargs, exc, match = case
    args = dict(input=X2, weight=W2) | kwargs
    x, w = args.pop("input"), args.pop("weight")
    f = variant(lambda x, w: jaxconv.conv_transpose2d(x, w, **args))
    with pytest.raises(exc, match=match):
        f(x, w)
    if "layout" in kwargs:
        return  # torch has no layout argument
    with pytest.raises((RuntimeError, TypeError, ValueError, NotImplementedError)):
        torch.nn.functional.conv_transpose2d(
            torch.tensor(x), torch.tensor(w), **to_torch(torch, args)
        )


# --- property: the output shape is torch's, or both refuse --------------------------------


@st.composite
def _geometries(draw) -> dict:
    n = draw(st.integers(1, 3))
    ints = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(n))  # noqa: E731
    groups = draw(st.integers(1, 3))
    return dict(
        n=n, size=ints(1, 5), k=ints(1, 3), stride=ints(1, 3), padding=ints(0, 4),
        output_padding=ints(0, 3), dilation=ints(1, 3), groups=groups,
        cin=groups * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1])),
        cout_g=draw(st.integers(1, 2)),
    )  # fmt: skip


@settings(max_examples=80, deadline=None)
@given(_geometries())
def test_output_shape_is_torchs_or_both_refuse(g):
    torch = pytest.importorskip("torch")
    x_shape, w_shape = (1, g["cin"], *g["size"]), (g["cin"], g["cout_g"], *g["k"])
    args = (g["stride"], g["padding"], g["output_padding"], g["groups"], g["dilation"])
    want = torch_shape(torch, torch_op(torch, "conv_transpose", g["n"]), x_shape, w_shape, args)
    got = jax_shape(CONVT[g["n"]], x_shape, w_shape, args)
    if got is None and want is not None and 0 in want[2:]:
        return  # an empty output: torch refuses it on some backends, jaxconv on all
    assert got == want, (g, got, want)
