"""Property-based tests (hypothesis) over every public op of jaxconv.

Three families of properties, each over random geometries, layouts, dtypes and values:

* valid input: the op (jitted, or eager in a quarter of the examples: :func:`jit_flags`)
  agrees with the float64 NumPy
  oracle in :mod:`jaxconv.reference` within a rounding bound derived from the input
  (``(terms + 2) * eps * reference(|x|, |w|)``), and with PyTorch where it has the op;
* invalid input (a valid call with one argument broken: negative, zero, oversize, wrong
  rank, wrong type, int / bool / complex dtype, NaN or inf as a size): only ValueError or
  TypeError, and the message names the broken argument;
* non-finite values (NaN, +inf, -inf in inputs and kernels): the pattern of NaN / +inf /
  -inf / finite outputs is PyTorch's (CPU), exactly; max pooling is compared bit for bit.

Runs are deterministic (``derandomize=True``). Every executed example is counted; set
``JAXCONV_PROPERTY_COUNTS=<file>`` to get the counts as JSON, and
``JAXCONV_PROPERTY_SCALE=<factor>`` to multiply every property's number of examples
(the figures in docs/RELIABILITY.md come from both). The properties that run an op draw half
their examples unless ``JAXCONV_TEST_FULL=1`` (:func:`compiled_examples`).
"""

from __future__ import annotations

import collections
import functools
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import FULL
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import jaxconv
from jaxconv import reference as ref

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),  # torch perf. note
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),  # inf - inf
]
F = torch.nn.functional

SCALE = float(os.environ.get("JAXCONV_PROPERTY_SCALE", "1"))
BASE = settings(
    deadline=None,
    derandomize=True,  # CI is deterministic: the same examples every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def examples(n: int) -> settings:
    return settings(BASE, max_examples=max(1, round(n * SCALE)))


def compiled_examples(n: int) -> settings:
    """:func:`examples` for a property that runs the op (every example a new geometry, so a
    new compile, or eager a new primitive each): half of ``n`` by default (at least 1), all
    ``n`` with ``JAXCONV_TEST_FULL=1``. Shape and refusal properties trace nothing and keep
    their full counts."""
    return examples(n if FULL else math.ceil(n / 2))


# --------------------------------------------------------------------------- counting

CASES: collections.Counter[str] = collections.Counter()


def count(prop: str) -> None:
    """One executed example of ``prop`` ("<family>/<op>")."""
    CASES[prop] += 1


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    path = os.environ.get("JAXCONV_PROPERTY_COUNTS")
    if path:
        families = collections.Counter()
        for name, n in CASES.items():
            families[name.split("/")[0]] += n
        with open(path, "w") as f:
            json.dump({"scale": SCALE, "total": sum(CASES.values()),
                       "families": dict(families), "properties": dict(sorted(CASES.items()))},
                      f, indent=1)  # fmt: skip


# --------------------------------------------------------------------------- helpers

FLOAT_DTYPES = {"float32": jnp.float32, "float16": jnp.float16, "bfloat16": jnp.bfloat16}
dtypes = st.sampled_from(["float32", "float32", "float16", "bfloat16"])  # float32 twice as often
seeds = st.integers(0, 2**32 - 1)


def dt(name: str) -> np.dtype:
    return jnp.dtype(FLOAT_DTYPES[name])


def eps(name: str) -> float:
    return float(jnp.finfo(FLOAT_DTYPES[name]).eps)


def draw_array(seed: int, shape: tuple[int, ...], dtype: str = "float32") -> np.ndarray:
    """Standard-normal values, rounded to ``dtype`` (returned as a NumPy array of it)."""
    values = np.random.default_rng(seed).standard_normal(shape)
    return np.asarray(jnp.asarray(values, dtype=FLOAT_DTYPES[dtype]))


def f64(a: Any) -> np.ndarray:
    return np.asarray(jnp.asarray(a, jnp.float32), dtype=np.float64)


def jit_flags() -> st.SearchStrategy[bool]:
    """Whether an example runs jitted: three times in four (``JAXCONV_TEST_FULL=1``: half).
    Un-jitted JAX compiles every primitive of every new shape on its own, so eager examples
    cost most of a property's time; a quarter of them still runs each property eager."""
    return st.booleans() if FULL else st.sampled_from([True, True, True, False])


def maybe_jit(fn: Callable[..., Any], jitted: bool) -> Callable[..., Any]:
    """``fn`` over arrays only (geometry already bound), eager or under ``jax.jit``."""
    return jax.jit(fn) if jitted else fn


def assert_within(got: Any, want: np.ndarray, bound: np.ndarray, dtype: str) -> None:
    """Shape, dtype, and ``|got - want| <= bound`` elementwise (``want`` float64)."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
    assert got.dtype == dt(dtype), f"dtype {got.dtype} != {dt(dtype)}"
    got64 = got.astype(np.float64)
    err = np.where(got64 == want, 0.0, np.abs(got64 - want))  # equal infinities: no error
    tol = bound + 1e-30
    bad = ~(err <= tol)
    assert not bad.any(), (
        f"{int(bad.sum())} of {bad.size} elements off; worst error {err[bad].max():.3g} "
        f"where the bound is {tol[bad][np.argmax(err[bad])]:.3g}"
    )


def pair_or_int(lo: int, hi: int) -> st.SearchStrategy[Any]:
    """An int, a NumPy int, or an (h, w) tuple: every accepted spelling of a size."""
    one = st.integers(lo, hi)
    return st.one_of(one, one.map(np.int64), st.tuples(one, one))


def as_pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def padding_spelling(draw: Any, pads: tuple[tuple[int, int], tuple[int, int]]) -> Any:
    """The per-side padding ``pads`` in a spelling drawn among those that can express it."""
    (t, b), (left, r) = pads
    forms = [((t, b), (left, r))]
    if t == b and left == r:
        forms.append((t, left))
        if t == left:
            forms.append(t)
    return draw(st.sampled_from(forms))


NAN_INF = (np.nan, np.inf, -np.inf)


def sprinkle(draw: Any, a: np.ndarray, rate: float = 0.15) -> np.ndarray:
    """``a`` with NaN / +inf / -inf at random positions (at least one)."""
    a = np.array(a, dtype=np.float32)
    seed = draw(seeds)
    rng = np.random.default_rng(seed)
    hit = rng.random(a.shape) < rate
    hit.flat[rng.integers(a.size)] = True
    a[hit] = rng.choice(NAN_INF, size=int(hit.sum()))
    return a


def classes(a: Any) -> np.ndarray:
    """0 finite, 1 NaN, 2 +inf, 3 -inf."""
    a = np.asarray(a, dtype=np.float64)
    return np.select([np.isnan(a), a == np.inf, a == -np.inf], [1, 2, 3], 0)


def assert_same_nonfinite(got: Any, want: Any, what: str = "torch") -> None:
    c_got, c_want = classes(got), classes(want)
    assert c_got.shape == c_want.shape
    bad = c_got != c_want
    assert not bad.any(), (
        f"NaN/inf pattern differs from {what} at {np.argwhere(bad)[:5].tolist()}: "
        f"got {np.asarray(got)[bad][:5]}, {what} {np.asarray(want)[bad][:5]}"
    )


def torch_t(a: Any) -> Any:
    return torch.from_numpy(np.array(a, dtype=np.float32))


# --------------------------------------------------------------------------- strategies


@st.composite
def corr2d_cases(draw: Any, max_hw: int = 9) -> dict[str, Any]:
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    kh, kw = draw(st.integers(1, h)), draw(st.integers(1, w))
    return dict(h=h, w=w, kh=kh, kw=kw, dtype=draw(dtypes), seed=draw(seeds),
                jitted=draw(jit_flags()))  # fmt: skip


@st.composite
def conv2d_cases(draw: Any, torch_only: bool = False) -> dict[str, Any]:
    """A valid ``conv2d`` call: geometry, shapes, dtype. ``torch_only``: NCHW-expressible
    padding (no per-side pairs)."""
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    impl = draw(st.sampled_from(["lax", "patches"]))
    n = draw(st.sampled_from([None, 1, 2]))
    groups = draw(st.integers(1, 3))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride = draw(pair_or_int(1, 3))
    dilation = draw(pair_or_int(1, 3))
    (sh, sw), (dh, dw) = as_pair(stride), as_pair(dilation)
    eff = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    kind = draw(st.sampled_from(["numeric", "numeric", "valid"] + (["same"] if (sh, sw) == (1, 1)
                                                                   else [])))  # fmt: skip
    if kind == "same":
        padding, totals = "same", (eff[0] - 1, eff[1] - 1)
    elif kind == "valid":
        padding, totals = "valid", (0, 0)
    else:
        pads = tuple(
            (draw(st.integers(0, 3)), draw(st.integers(0, 3))) for _ in range(2)
        )  # ((top, bottom), (left, right))
        if torch_only:
            pads = ((pads[0][0],) * 2, (pads[1][0],) * 2)
        padding = padding_spelling(draw, pads)
        totals = (sum(pads[0]), sum(pads[1]))
    lo_h, lo_w = max(1, eff[0] - totals[0]), max(1, eff[1] - totals[1])
    h, w = draw(st.integers(lo_h, lo_h + 5)), draw(st.integers(lo_w, lo_w + 5))
    return dict(layout=layout, impl=impl, n=n, c=cg * groups, o=og * groups, groups=groups,
                cg=cg, kh=kh, kw=kw, h=h, w=w, stride=stride, dilation=dilation,
                padding=padding, bias=draw(st.booleans()), dtype=draw(dtypes),
                seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip


def conv2d_arrays(case: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    c, h, w, n = case["c"], case["h"], case["w"], case["n"]
    if case["layout"] == "NCHW":
        x_shape = (c, h, w)
        w_shape = (case["o"], case["cg"], case["kh"], case["kw"])
    else:
        x_shape = (h, w, c)
        w_shape = (case["kh"], case["kw"], case["cg"], case["o"])
    if n is not None:
        x_shape = (n, *x_shape)
    seed, dtype = case["seed"], case["dtype"]
    x = draw_array(seed, x_shape, dtype)
    k = draw_array(seed + 1, w_shape, dtype)
    b = draw_array(seed + 2, (case["o"],), dtype) if case["bias"] else None
    return x, k, b


def conv2d_geometry(case: dict[str, Any]) -> dict[str, Any]:
    return {k: case[k] for k in ("stride", "padding", "dilation", "groups", "layout")}


@st.composite
def pool_cases(draw: Any, kind: str, torch_only: bool = False) -> dict[str, Any]:
    """A valid ``max_pool2d`` (kind "max") or ``avg_pool2d`` ("avg") call."""
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    n = draw(st.sampled_from([None, 1, 2]))
    c = draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kernel_size = draw(st.sampled_from([(kh, kw)] + ([kh] if kh == kw else [])))
    stride = draw(st.one_of(st.none(), pair_or_int(1, 3)))
    dilation = draw(pair_or_int(1, 3)) if kind == "max" else 1
    (dh, dw) = as_pair(dilation)
    pads = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in (kh, kw))
    if torch_only:
        pads = ((pads[0][0],) * 2, (pads[1][0],) * 2)
    padding = padding_spelling(draw, pads)
    eff = (dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    lo_h, lo_w = max(1, eff[0] - sum(pads[0])), max(1, eff[1] - sum(pads[1]))
    h, w = draw(st.integers(lo_h, lo_h + 6)), draw(st.integers(lo_w, lo_w + 6))
    case = dict(layout=layout, n=n, c=c, h=h, w=w, kernel_size=kernel_size, stride=stride,
                padding=padding, ceil_mode=draw(st.booleans()), dtype=draw(dtypes),
                seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip
    if kind == "max":
        case.update(dilation=dilation, return_indices=draw(st.booleans()))
    else:
        case.update(
            count_include_pad=draw(st.booleans()),
            divisor_override=draw(st.one_of(st.none(), st.integers(-4, 9).filter(bool))),
        )
    return case


def pool_array(case: dict[str, Any]) -> np.ndarray:
    c, h, w = case["c"], case["h"], case["w"]
    shape = (c, h, w) if case["layout"] == "NCHW" else (h, w, c)
    if case["n"] is not None:
        shape = (case["n"], *shape)
    return draw_array(case["seed"], shape, case["dtype"])


POOL_ARGS = {
    "max": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "layout"),
    "avg": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
            "divisor_override", "layout"),
}  # fmt: skip


def to_nchw(a: np.ndarray, layout: str) -> np.ndarray:
    if layout == "NCHW":
        return a
    return np.moveaxis(a, -1, -3)


def torch_pool(kind: str, x: np.ndarray, case: dict[str, Any], **extra: Any) -> Any:
    """PyTorch's pooling of ``x`` (any layout) with ``case``'s symmetric geometry, NCHW out."""
    (pt, _), (pl, _) = _sides(case["padding"])
    stride = None if case["stride"] is None else as_pair(case["stride"])
    kwargs = dict(kernel_size=as_pair(case["kernel_size"]), stride=stride, padding=(pt, pl),
                  ceil_mode=case["ceil_mode"], **extra)  # fmt: skip
    if kind == "max":
        kwargs["dilation"] = case["dilation"]
    else:
        kwargs.update(count_include_pad=case["count_include_pad"],
                      divisor_override=case["divisor_override"])  # fmt: skip
    fn = F.max_pool2d if kind == "max" else F.avg_pool2d
    return fn(torch_t(to_nchw(x, case["layout"])), **kwargs)


def _sides(padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    if np.isscalar(padding):
        return ((int(padding),) * 2, (int(padding),) * 2)
    a, b = padding
    if np.isscalar(a):
        return ((int(a),) * 2, (int(b),) * 2)
    return (tuple(a), tuple(b))


# --------------------------------------------------------------------------- valid: chapter ops


@pytest.mark.parametrize("op", ["corr2d", "corr2d_vmap", "convolve2d"])
@compiled_examples(6)
@given(corr2d_cases())
def test_valid_2d_cross_correlations_match_reference(op, case):
    count(f"valid/{op}")
    X = draw_array(case["seed"], (case["h"], case["w"]), case["dtype"])
    K = draw_array(case["seed"] + 1, (case["kh"], case["kw"]), case["dtype"])
    got = maybe_jit(getattr(jaxconv, op), case["jitted"])(X, K)
    oracle = getattr(ref, op)
    bound = (
        (case["kh"] * case["kw"] + 2) * eps(case["dtype"]) * oracle(np.abs(f64(X)), np.abs(f64(K)))
    )
    assert_within(got, oracle(f64(X), f64(K)), bound, case["dtype"])


@pytest.mark.parametrize("op", ["corr2d_multi_in", "corr2d_multi_in_out"])
@compiled_examples(7)
@given(corr2d_cases(max_hw=7), st.integers(1, 3), st.integers(1, 3),
       st.sampled_from(["lax", "vmap"]))  # fmt: skip
def test_valid_multi_channel_correlations_match_reference(op, case, ci, co, impl):
    count(f"valid/{op}")
    X = draw_array(case["seed"], (ci, case["h"], case["w"]), case["dtype"])
    k_shape = (
        (ci, case["kh"], case["kw"])
        if op == "corr2d_multi_in"
        else (co, ci, case["kh"], case["kw"])
    )
    K = draw_array(case["seed"] + 1, k_shape, case["dtype"])
    got = maybe_jit(functools.partial(getattr(jaxconv, op), impl=impl), case["jitted"])(X, K)
    oracle = getattr(ref, op)
    bound = (
        (ci * case["kh"] * case["kw"] + 2)
        * eps(case["dtype"])
        * oracle(np.abs(f64(X)), np.abs(f64(K)))
    )
    assert_within(got, oracle(f64(X), f64(K)), bound, case["dtype"])


@compiled_examples(10)
@given(st.sampled_from([None, 1, 3]), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 6), st.integers(1, 6), dtypes, seeds, jit_flags())  # fmt: skip
def test_valid_conv1x1_matches_reference(n, ci, co, h, w, dtype, seed, jitted):
    count("valid/conv1x1")
    X = draw_array(seed, (ci, h, w) if n is None else (n, ci, h, w), dtype)
    K = draw_array(seed + 1, (co, ci, 1, 1), dtype)
    got = maybe_jit(jaxconv.conv1x1, jitted)(X, K)
    bound = (ci + 2) * eps(dtype) * ref.conv1x1(np.abs(f64(X)), np.abs(f64(K)))
    assert_within(got, ref.conv1x1(f64(X), f64(K)), bound, dtype)


@compiled_examples(10)
@given(corr2d_cases(), st.sampled_from(["max", "avg"]))
def test_valid_pool2d_matches_reference(case, mode):
    count("valid/pool2d")
    X = draw_array(case["seed"], (case["h"], case["w"]), case["dtype"])
    size = (case["kh"], case["kw"])
    got = maybe_jit(lambda X: jaxconv.pool2d(X, size, mode), case["jitted"])(X)
    want = ref.pool2d(f64(X), size, mode)
    if mode == "max":
        bound = np.zeros_like(want)  # a maximum is one of the inputs: exact
    else:
        bound = (
            (size[0] * size[1] + 2) * eps(case["dtype"]) * ref.pool2d(np.abs(f64(X)), size, "avg")
        )
    assert_within(got, want, bound, case["dtype"])


# --------------------------------------------------------------------------- valid: conv2d


@compiled_examples(40)
@given(conv2d_cases())
def test_valid_conv2d_matches_reference(case):
    count("valid/conv2d")
    event(f"{case['layout']} {case['impl']}")
    note(repr(case))
    x, k, b = conv2d_arrays(case)
    geometry = conv2d_geometry(case)
    fn = maybe_jit(
        lambda x, k, b: jaxconv.conv2d(x, k, b, impl=case["impl"], **geometry), case["jitted"]
    )
    got = fn(x, k, b)
    want = ref.conv2d(f64(x), f64(k), None if b is None else f64(b), **geometry)
    magnitude = ref.conv2d(np.abs(f64(x)), np.abs(f64(k)), None if b is None
                           else np.abs(f64(b)), **geometry)  # fmt: skip
    terms = case["cg"] * case["kh"] * case["kw"] + (b is not None)
    assert_within(got, want, (terms + 2) * eps(case["dtype"]) * magnitude, case["dtype"])


@examples(40)
@given(conv2d_cases(torch_only=True))
def test_valid_conv2d_output_shape_matches_torch(case):
    """The shape formula against PyTorch's actual output (symmetric padding spellings)."""
    count("valid/conv_output_shape")
    padding = case["padding"]
    if not isinstance(padding, str):
        padding = tuple(side[0] for side in _sides(padding))  # symmetric: one per axis
    got = jaxconv.conv_output_shape((case["h"], case["w"]), (case["kh"], case["kw"]),
                                    case["stride"], case["padding"], case["dilation"])  # fmt: skip
    out = F.conv2d(torch.zeros(1, 1, case["h"], case["w"]), torch.zeros(1, 1, case["kh"],
                   case["kw"]), stride=as_pair(case["stride"]), padding=padding,
                   dilation=as_pair(case["dilation"]))  # fmt: skip
    assert got == tuple(out.shape[2:])


@examples(100)
@given(st.integers(0, 12), st.integers(0, 12), st.integers(1, 7), st.integers(1, 7),
       st.integers(1, 4), st.integers(1, 4), st.integers(1, 3),
       st.one_of(st.integers(0, 4), st.sampled_from(["same", "valid"])))  # fmt: skip
def test_conv_output_shape_agrees_with_torch_or_both_refuse(h, w, kh, kw, s, d, dw, padding):
    """Random geometries, fitting or not: jaxconv returns torch's shape, or both refuse."""
    count("valid/conv_output_shape")
    try:
        torch_shape = tuple(
            F.conv2d(
                torch.zeros(1, 1, h, w),
                torch.zeros(1, 1, kh, kw),
                stride=s,
                padding=padding,
                dilation=(d, dw),
            ).shape[2:]  # fmt: skip
        )
    except (RuntimeError, ValueError):
        torch_shape = None
    try:
        got = jaxconv.conv_output_shape((h, w), (kh, kw), s, padding, (d, dw))
    except ValueError as err:
        got = None
        assert re.search(r"kernel_size|padding|input|stride", str(err)), str(err)
    if torch_shape is not None and got is not None:
        assert got == torch_shape
    elif min(h, w) > 0:  # torch refuses empty spatial input outright; see conv2d's test
        assert got == torch_shape, f"jaxconv {got}, torch {torch_shape}"


@examples(100)
@given(st.integers(1, 12), st.integers(1, 12), st.integers(1, 5), st.integers(1, 5),
       st.one_of(st.none(), st.integers(1, 4)), st.integers(0, 3), st.integers(0, 3),
       st.integers(1, 3), st.booleans())  # fmt: skip
def test_pool_output_shape_agrees_with_torch_or_both_refuse(h, w, kh, kw, s, ph, pw, d, ceil):
    count("valid/pool_output_shape")
    try:
        torch_shape = tuple(
            F.max_pool2d(torch.zeros(1, 1, h, w), (kh, kw), s, (ph, pw), d, ceil).shape[2:]
        )
    except (RuntimeError, ValueError):
        torch_shape = None
    try:
        got = jaxconv.pool_output_shape((h, w), (kh, kw), s, (ph, pw), d, ceil)
    except ValueError as err:
        got = None
        assert re.search(r"padding|kernel_size|empty", str(err)), str(err)
    assert got == torch_shape, f"jaxconv {got}, torch {torch_shape}"


def brute_force_field(ks: list[int], ss: list[int], ds: list[int]) -> int:
    """The input positions one output element depends on, found by walking back the layers."""
    reach = {0}
    for k, s, d in reversed(list(zip(ks, ss, ds, strict=True))):
        reach = {i * s + j * d for i in reach for j in range(k)}
    return max(reach) - min(reach) + 1


@examples(100)
@given(st.lists(st.tuples(pair_or_int(1, 5), pair_or_int(1, 3), pair_or_int(1, 3),
                          st.integers(1, 3)), max_size=5))  # fmt: skip
def test_receptive_field_matches_brute_force(layers):
    count("valid/receptive_field")
    # A bare int is a kernel size; a pair kernel must be wrapped: ((kh, kw),) or ((kh, kw), s).
    spec = [k if n == 1 and np.isscalar(k) else (k, s, d)[:n] for k, s, d, n in layers]
    got = jaxconv.receptive_field(spec)
    for axis in range(2):
        ks = [as_pair(k)[axis] for k, _, _, _ in layers]
        ss = [as_pair(s)[axis] if n > 1 else 1 for _, s, _, n in layers]
        ds = [as_pair(d)[axis] if n > 2 else 1 for _, _, d, n in layers]
        assert got[axis] == brute_force_field(ks, ss, ds)


# --------------------------------------------------------------------------- valid: pooling


@compiled_examples(30)
@given(pool_cases("max"))
def test_valid_max_pool2d_matches_reference_exactly(case):
    count("valid/max_pool2d")
    note(repr(case))
    x = pool_array(case)
    kwargs = {k: case[k] for k in POOL_ARGS["max"]}
    with_idx = case["return_indices"]
    got = maybe_jit(lambda x: jaxconv.max_pool2d(x, return_indices=with_idx, **kwargs),
                    case["jitted"])(x)  # fmt: skip
    values, idx = got if with_idx else (got, None)
    want = ref.max_pool2d(f64(x), **kwargs)
    assert_within(values, want, np.zeros_like(want), case["dtype"])  # a max is exact
    if idx is not None:
        # Each index points at the value it reports, in the (H*W)-flattened input plane.
        plane = to_nchw(f64(x), case["layout"])
        plane = plane.reshape(*plane.shape[:-2], -1)
        idx_nchw = to_nchw(np.asarray(idx), case["layout"])
        picked = np.take_along_axis(plane, idx_nchw.reshape(*idx_nchw.shape[:-2], -1), -1)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(
            picked.reshape(idx_nchw.shape)[to_nchw(finite, case["layout"])],
            to_nchw(want, case["layout"])[to_nchw(finite, case["layout"])],
        )


@compiled_examples(25)
@given(pool_cases("avg"))
def test_valid_avg_pool2d_matches_reference(case):
    count("valid/avg_pool2d")
    note(repr(case))
    x = pool_array(case)
    kwargs = {k: case[k] for k in POOL_ARGS["avg"]}
    got = maybe_jit(lambda x: jaxconv.avg_pool2d(x, **kwargs), case["jitted"])(x)
    want = ref.avg_pool2d(f64(x), **kwargs)
    div = kwargs["divisor_override"]
    magnitude = ref.avg_pool2d(np.abs(f64(x)), **{**kwargs, "divisor_override":
                                                   None if div is None else abs(div)})  # fmt: skip
    kh, kw = as_pair(case["kernel_size"])
    assert_within(got, want, (kh * kw + 2) * eps(case["dtype"]) * magnitude, case["dtype"])


@compiled_examples(20)
@given(
    st.sampled_from(["max", "avg"]).flatmap(
        lambda kind: st.tuples(st.just(kind), pool_cases(kind, torch_only=True))
    )
)
def test_valid_pooling_matches_torch(kind_case):
    """The reference is itself an oracle; PyTorch is the other one (symmetric padding)."""
    kind, case = kind_case
    count(f"valid/{kind}_pool2d")
    x = pool_array({**case, "dtype": "float32"})
    fn = jaxconv.max_pool2d if kind == "max" else jaxconv.avg_pool2d
    kwargs = {k: case[k] for k in POOL_ARGS[kind]}
    got = to_nchw(np.asarray(fn(x, **kwargs)), case["layout"])
    want = torch_pool(kind, x, case).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- CHWN (batch last)


def to_chwn(a: np.ndarray, layout: str) -> np.ndarray:
    """A batched array in ``layout`` as (C, H, W, N)."""
    return np.moveaxis(to_nchw(a, layout), 0, -1)


def from_chwn(a: Any, layout: str) -> np.ndarray:
    """A (C, H, W, N) result in ``layout``."""
    nchw = np.moveaxis(np.asarray(a), -1, 0)
    return nchw if layout == "NCHW" else np.moveaxis(nchw, 1, -1)


@compiled_examples(30)
@given(conv2d_cases(), st.data())
def test_chwn_conv2d_matches_reference_and_layouts(case, data):
    """conv2d with layout="CHWN", every impl: finite inputs against the float64 reference
    (and float32 gradients against lax in the case's layout); NaN/inf patterns equal to the
    case's layout computed the same way (the vjp path multiplies through its patch matrix,
    as patches does; where it does not apply it is lax)."""
    count("valid/conv2d CHWN")
    case = {**case, "n": case["n"] or 2}
    impl = data.draw(st.sampled_from(["lax", "patches", "vjp", "auto"]))
    event(f"CHWN {impl}")
    x, k, b = conv2d_arrays(case)
    nonfinite = data.draw(st.booleans())
    if nonfinite:
        x = sprinkle(data.draw, x, rate=0.05)
    geometry = conv2d_geometry(case)
    kc = k if case["layout"] == "NHWC" else np.transpose(k, (2, 3, 1, 0))  # HWIO
    chwn = {**geometry, "layout": "CHWN"}
    xc = to_chwn(x, case["layout"])
    conv = lambda x, k, im, **kw: jaxconv.conv2d(x, k, b, impl=im, **kw)  # noqa: E731
    if nonfinite:
        g = jaxconv.conv.conv_geometry(x.shape, k.shape, **geometry)
        runs = impl if impl != "auto" else jaxconv.conv.select_impl(g, x.dtype)
        if runs == "vjp":  # the patch matrix where the rule applies, lax elsewhere
            runs = "patches" if jaxconv.conv.vjp_applies(g) else "lax"
        same = runs
    with_grads = not nonfinite and case["dtype"] == "float32"
    if with_grads:
        # a cotangent in the case's layout (as the output ``got`` is compared)
        ct = draw_array(
            case["seed"] + 3, jax.eval_shape(lambda: conv(x, k, impl, **geometry)).shape
        )

    def grads(layout: str, xx: Any, kk: Any, im: str, cot: Any) -> Any:
        def loss(xx: Any, kk: Any) -> Any:
            return jnp.vdot(conv(xx, kk, im, **{**geometry, "layout": layout}), cot)

        return jax.grad(loss, (0, 1))(xx, kk)

    def compared(x: Any, k: Any, xc: Any, kc: Any) -> dict[str, Any]:
        # Every compared value from one function: one compile when jitted.
        out = {"got": conv(xc, kc, impl, **chwn)}
        if nonfinite:
            out["want"] = conv(x, k, same, **geometry)
        if with_grads:
            out["chwn"] = grads("CHWN", xc, kc, impl, to_chwn(ct, case["layout"]))
            out["lax"] = grads(case["layout"], x, k, "lax", ct)
        return out

    out = maybe_jit(compared, case["jitted"])(x, k, xc, kc)
    got = from_chwn(out["got"], case["layout"])
    if nonfinite:
        want = out["want"]
        assert_same_nonfinite(got, want, f"{case['layout']} {same}")
        finite = classes(want) == 0
        np.testing.assert_allclose(got[finite], np.asarray(want)[finite], rtol=1e-3, atol=1e-3)
        return
    want = ref.conv2d(f64(x), f64(k), None if b is None else f64(b), **geometry)
    magnitude = ref.conv2d(np.abs(f64(x)), np.abs(f64(k)), None if b is None
                           else np.abs(f64(b)), **geometry)  # fmt: skip
    terms = case["cg"] * case["kh"] * case["kw"] + (b is not None)
    assert_within(got, want, (terms + 2) * eps(case["dtype"]) * magnitude, case["dtype"])
    if with_grads:
        (gx, gk), (wx, wk) = out["chwn"], out["lax"]
        scale = 1e-4 * max(1.0, float(np.abs(np.asarray(wx)).max()), float(np.abs(wk).max()))
        np.testing.assert_allclose(from_chwn(gx, case["layout"]), wx, rtol=1e-4, atol=scale)
        if case["layout"] == "NCHW":
            gk = np.transpose(np.asarray(gk), (3, 2, 0, 1))
        np.testing.assert_allclose(gk, wk, rtol=1e-4, atol=scale)


@compiled_examples(20)
@pytest.mark.parametrize("kind", ["max", "avg"])
@given(data=st.data())
def test_chwn_pooling_equals_the_other_layouts(kind, data):
    """max_pool2d / avg_pool2d with layout="CHWN": the values (and max's indices and
    gradient) of the case's layout, with NaN/inf sprinkled in half the cases."""
    case = data.draw(pool_cases(kind))
    count(f"valid/{kind}_pool2d CHWN")
    case = {**case, "n": case["n"] or 2}
    x = pool_array(case)
    if data.draw(st.booleans()):
        x = sprinkle(data.draw, x, rate=0.1)
    kwargs = {k: case[k] for k in POOL_ARGS[kind]}
    chwn = {**kwargs, "layout": "CHWN"}
    fn = jaxconv.max_pool2d if kind == "max" else jaxconv.avg_pool2d
    xc = to_chwn(x, case["layout"])
    with_grads = kind == "max" and case["dtype"] == "float32"
    if with_grads:
        shape = jax.eval_shape(lambda x: fn(x, **kwargs), x).shape
        ct = draw_array(case["seed"] + 5, shape)

    def both_layouts(x: Any, xc: Any) -> dict[str, Any]:
        # Every compared value from one function: one compile when jitted.
        out = {"got": fn(xc, **chwn), "want": fn(x, **kwargs)}
        if kind == "max":
            out["idx"] = fn(xc, **chwn, return_indices=True)[1]
            out["want_idx"] = fn(x, **kwargs, return_indices=True)[1]
        if with_grads:
            out["g"] = jax.grad(lambda a: jnp.vdot(fn(a, **chwn), to_chwn(ct, case["layout"])))(xc)
            out["w"] = jax.grad(lambda a: jnp.vdot(fn(a, **kwargs), ct))(x)
        return out

    out = maybe_jit(both_layouts, case["jitted"])(x, xc)
    got, want = from_chwn(out["got"], case["layout"]), np.asarray(out["want"])
    assert_same_nonfinite(got, want, case["layout"])
    finite = classes(want) == 0
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-6, atol=1e-6)
    if kind == "max":
        np.testing.assert_array_equal(from_chwn(out["idx"], case["layout"]), out["want_idx"])
    if with_grads:
        np.testing.assert_array_equal(from_chwn(out["g"], case["layout"]), out["w"])


# --------------------------------------------------------------------------- invalid input

DOCUMENTED = (ValueError, TypeError)


def assert_refused(call: Callable[[], Any], names: tuple[str, ...]) -> None:
    """``call`` raises ValueError/TypeError whose message names one of ``names``."""
    try:
        call()
    except DOCUMENTED as err:
        msg = str(err)
        if currently_in_test_context():  # also called from plain (non-hypothesis) tests
            event(type(err).__name__)
        pattern = "|".join(rf"(?<![A-Za-z0-9_]){re.escape(n)}(?![A-Za-z0-9_])" for n in names)
        assert re.search(pattern, msg), f"{type(err).__name__} does not name {names}: {msg}"
        return
    except Exception as err:  # the property's failure: an undocumented exception type
        raise AssertionError(
            f"undocumented exception {type(err).__module__}.{type(err).__name__}: {err}"
        ) from err
    raise AssertionError(f"accepted invalid input (expected an error naming {names})")


# (1,) is not here: a one-element sequence is repeated, as PyTorch does
BAD_POSITIVE = [0, -1, -5, (1, 0), (0, 2), (2, -1), 2.0, 1.5, np.float32(2.0), True, False,
                "2", b"2", (0,), (1, 2, 3), [1, "a"], {1: 2}, float("nan"), float("inf"),
                1 + 0j, (2, float("nan")), ((1, 1), (1, 1))]  # fmt: skip
BAD_PADDING = [-1, (-1, 0), (0, -2), ((0, -1), (0, 0)), ((0, 0), (-3, 0)), 1.0, float("nan"),
               float("inf"), True, (-1,), (1, 2, 3), ((1,), (1, 1)), ((1, 2), 3), "SAME",
               "full", b"same", {}]  # fmt: skip
BAD_LAYOUT = ["nchw", "NCWH", "HWC", "", None, 1, ("NCHW",)]
BAD_BOOL = [1, 0, "yes", "", None, 1.0, np.int64(1)]
BAD_DTYPES = [np.int32, np.int8, np.uint8, np.int64, np.bool_, np.complex64, np.complex128]


def bad_array(draw: Any, a: np.ndarray, ranks: tuple[int, ...]) -> tuple[str, Any]:
    """``a`` broken one way: a wrong dtype, a rank not in ``ranks``, or not an array."""
    hows = ["dtype", "dtype", "object"]
    hows += ["rank+"] if a.ndim + 1 not in ranks else []
    hows += ["rank-"] if a.ndim - 1 not in ranks else []
    how = draw(st.sampled_from(hows))
    if how == "dtype":
        dtype = draw(st.sampled_from(BAD_DTYPES))
        return f"dtype {np.dtype(dtype).name}", np.asarray(a).astype(dtype)
    if how == "rank+":
        return "rank+1", np.asarray(a)[None]
    if how == "rank-":
        return "rank-1", np.asarray(a)[0]
    return "object", draw(st.sampled_from([None, "abc", object()]))


@st.composite
def invalid_conv2d_calls(draw: Any) -> tuple[str, tuple[str, ...], Callable[[], Any]]:
    case = draw(conv2d_cases())
    x, k, b = conv2d_arrays(case)
    if b is None:
        b = np.zeros(case["o"], x.dtype)
    kwargs = conv2d_geometry(case) | {"impl": case["impl"]}
    target = draw(st.sampled_from(["stride", "padding", "dilation", "groups", "layout", "impl",
                                   "x", "w", "b", "fit", "channels"]))  # fmt: skip
    # conv2d's array arguments are torch's input, weight, bias
    names: tuple[str, ...] = ({"x": "input", "w": "weight", "b": "bias"}.get(target, target),)
    if target in ("stride", "dilation"):
        kwargs[target] = draw(st.sampled_from(BAD_POSITIVE))
    elif target == "padding":
        kwargs[target] = draw(st.sampled_from(BAD_PADDING + ["same"] * 2))
        if kwargs[target] == "same":
            kwargs["stride"] = draw(st.sampled_from([2, (1, 2), (3, 1)]))
    elif target == "groups":
        kwargs[target] = draw(st.sampled_from([0, -1, 2.0, True, "1", None, case["c"] + 1]))
    elif target == "layout":
        kwargs[target] = draw(st.sampled_from(BAD_LAYOUT))
    elif target == "impl":
        kwargs[target] = draw(st.sampled_from(["foo", None, "LAX", ""]))
    elif target in ("x", "w"):
        how, broken = bad_array(draw, x if target == "x" else k, (3, 4) if target == "x" else (4,))
        event(f"conv2d {target} {how}")
        if target == "x":
            x = broken
        else:
            k = broken
    elif target == "b":
        b = draw(st.sampled_from([b.astype(np.int32), b.astype(np.complex64), b[None],
                                  np.zeros(case["o"] + 1, x.dtype), b[:0]]))  # fmt: skip
    elif target == "fit":  # oversize kernel: larger than the padded input
        names = ("weight", "kernel_size")
        kwargs["padding"] = 0
        big = max(case["h"], case["w"]) + draw(st.integers(1, 3))
        shape = list(k.shape)
        if case["layout"] == "NCHW":
            shape[2] = big
        else:
            shape[0] = big
        k = np.ones(shape, x.dtype)
    else:  # channels: x's channels do not match w's
        names = ("input", "weight")
        axis = -3 if case["layout"] == "NCHW" else -1
        x = np.take(x, range(x.shape[axis] + 1), axis=axis, mode="wrap")  # one channel more
    event(f"conv2d {target}")
    jitted = draw(st.booleans())
    array_args = [x, k, b]
    fn = maybe_jit(lambda x, k, b: jaxconv.conv2d(x, k, b, **kwargs), jitted and target not in
                   ("x", "w") and all(hasattr(a, "dtype") for a in array_args))  # fmt: skip
    return target, names, lambda: fn(x, k, b)


@examples(100)
@given(invalid_conv2d_calls())
def test_invalid_conv2d_is_refused_naming_the_argument(call):
    target, names, fn = call
    count("invalid/conv2d")
    assert_refused(fn, names)


@st.composite
def invalid_pool_calls(draw: Any, kind: str) -> tuple[str, tuple[str, ...], Callable[[], Any]]:
    case = draw(pool_cases(kind))
    x = pool_array(case)
    kwargs = {k: case[k] for k in POOL_ARGS[kind]}
    targets = ["kernel_size", "stride", "padding", "layout", "ceil_mode", "x", "x", "oversize"]
    targets += (
        ["dilation", "return_indices"]
        if kind == "max"
        else ["count_include_pad", "divisor_override"]
    )
    target = draw(st.sampled_from(targets))
    names: tuple[str, ...] = (target,)
    if target in ("kernel_size", "dilation"):
        kwargs[target] = draw(st.sampled_from(BAD_POSITIVE))
    elif target == "stride":
        kwargs[target] = draw(st.sampled_from(BAD_POSITIVE))
    elif target == "padding":
        kh, kw = as_pair(case["kernel_size"])
        too_much = draw(st.sampled_from([(kh // 2 + 1, 0), (0, kw // 2 + 1),
                                         ((0, kh // 2 + 1), (0, 0))]))  # fmt: skip
        kwargs[target] = draw(st.sampled_from(BAD_PADDING + ["same", "valid", too_much]))
    elif target == "layout":
        kwargs[target] = draw(st.sampled_from(BAD_LAYOUT))
    elif target in ("ceil_mode", "count_include_pad", "return_indices"):
        kwargs[target] = draw(st.sampled_from(BAD_BOOL))
    elif target == "divisor_override":
        kwargs[target] = draw(st.sampled_from([0, 2.0, "2", True, float("nan"), (2, 2)]))
    elif target == "x":
        names = ("input",)  # torch's name of the pools' first argument
        how, x = bad_array(draw, x, (3, 4))
        event(f"{kind} x {how}")
    else:  # oversize: a window that does not fit the input
        names = ("kernel_size", "input", "pool_size")
        kh, kw = as_pair(case["kernel_size"])
        kwargs.update(padding=0, stride=None, ceil_mode=False)  # ceil: k = n + 1 is valid
        if kind == "max":
            kwargs["dilation"] = 1
        kwargs["kernel_size"] = draw(
            st.sampled_from(
                [(case["h"] + 1, kw), (kh, case["w"] + 1), max(case["h"], case["w"]) + 5, 2**40]
            )
        )
    event(f"{kind}_pool2d {target}")
    fn = jaxconv.max_pool2d if kind == "max" else jaxconv.avg_pool2d
    jitted = draw(st.booleans()) and target != "x"
    return target, names, lambda: maybe_jit(lambda x: fn(x, **kwargs), jitted)(x)


@examples(100)
@given(st.sampled_from(["max", "avg"]).flatmap(invalid_pool_calls))
def test_invalid_pooling_is_refused_naming_the_argument(call):
    target, names, fn = call
    count("invalid/pool")
    assert_refused(fn, names)


@st.composite
def invalid_chapter_calls(draw: Any) -> tuple[str, tuple[str, ...], Callable[[], Any]]:
    """corr2d, corr2d_vmap, convolve2d, corr2d_multi_in(_out), conv1x1, pool2d, broken."""
    op = draw(st.sampled_from(["corr2d", "corr2d_vmap", "convolve2d", "corr2d_multi_in",
                               "corr2d_multi_in_out", "conv1x1", "pool2d"]))  # fmt: skip
    case = draw(corr2d_cases(max_hw=6))
    ci, co = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w, kh, kw = case["h"], case["w"], case["kh"], case["kw"]
    if op in ("corr2d", "corr2d_vmap", "convolve2d", "pool2d"):
        X, K = draw_array(1, (h, w)), draw_array(2, (kh, kw))
    elif op == "corr2d_multi_in":
        X, K = draw_array(1, (ci, h, w)), draw_array(2, (ci, kh, kw))
    elif op == "corr2d_multi_in_out":
        X, K = draw_array(1, (ci, h, w)), draw_array(2, (co, ci, kh, kw))
    else:
        X, K = draw_array(1, (ci, h, w)), draw_array(2, (co, ci, 1, 1))
    kwargs: dict[str, Any] = {}
    if op == "pool2d":
        targets = ["X", "pool_size", "mode", "oversize"]
    else:
        targets = ["X", "K", "oversize"] + (["impl"] if "multi" in op else [])
        targets += ["channels"] if op not in ("corr2d", "corr2d_vmap", "convolve2d") else []
    target = draw(st.sampled_from(targets))
    names: tuple[str, ...] = (target,)
    if target in ("X", "K"):
        a = X if target == "X" else K
        ranks = (3, 4) if (op, target) == ("conv1x1", "X") else (a.ndim,)
        how, broken = bad_array(draw, a, ranks)
        event(f"{op} {target} {how}")
        X, K = (broken, K) if target == "X" else (X, broken)
    elif target == "pool_size":
        kwargs["pool_size"] = draw(st.sampled_from(BAD_POSITIVE))
    elif target == "mode":
        kwargs["mode"] = draw(st.sampled_from(["min", "MAX", None, 1, ""]))
    elif target == "impl":
        kwargs["impl"] = draw(st.sampled_from(["foo", None, "lax ", "patches"]))
    elif target == "channels":
        names = ("X", "K")
        X = np.concatenate([X, X[:1]], axis=-3)
    else:  # oversize kernel / window
        names = ("K", "X", "pool_size")
        if op == "pool2d":
            kwargs["pool_size"] = draw(st.sampled_from([(h + 1, 1), (1, w + 1), 2**40]))
        elif op == "conv1x1":
            K = np.ones((co, ci, 2, 1), np.float32)  # not a 1x1 kernel
        else:
            K = np.ones((*K.shape[:-2], h + 1, kw), np.float32)
    if op == "pool2d":
        kwargs.setdefault("pool_size", (kh, kw))
    event(f"{op} {target}")
    fn = getattr(jaxconv, op)
    if op == "pool2d":
        return target, names, lambda: fn(X, **kwargs)
    return target, names, lambda: fn(X, K, **kwargs)


@examples(100)
@given(invalid_chapter_calls())
def test_invalid_chapter_ops_are_refused_naming_the_argument(call):
    target, names, fn = call
    count("invalid/chapter_ops")
    assert_refused(fn, names)


@st.composite
def invalid_shape_calls(draw: Any) -> tuple[str, tuple[str, ...], Callable[[], Any]]:
    fn = draw(st.sampled_from(["conv_output_shape", "pool_output_shape", "receptive_field"]))
    if fn == "receptive_field":
        layers = [3, (3, 2), (2, 2, 1)]
        i = draw(st.integers(0, 2))
        part = draw(st.sampled_from(["kernel_size", "stride", "dilation", "layer"]))
        if part == "layer":
            layers[i] = draw(st.sampled_from([(), (3, 1, 1, 1), "3", None, 2.0]))
            names = (f"layers[{i}]", f"layers[{i}].kernel_size")
        else:
            slot = ("kernel_size", "stride", "dilation").index(part)
            spec = [3, 1, 1]
            spec[slot] = draw(st.sampled_from(BAD_POSITIVE))
            layers[i] = tuple(spec)
            names = (f"layers[{i}].{part}",)
        event(f"receptive_field {part}")
        return part, names, lambda: jaxconv.receptive_field(layers)
    args = dict(input_size=(8, 8), kernel_size=3, stride=1, padding=0, dilation=1)
    if fn == "pool_output_shape":
        args["stride"] = None
    target = draw(st.sampled_from(list(args) + ["oversize"]))
    names = (target,)
    if target == "input_size":
        # (8,) means (8, 8), as every int-or-tuple argument does
        args[target] = draw(st.sampled_from([2.0, "8", None, (), (8, 8, 8), True, (8, 8.0)]))
    elif target == "padding":
        extra = [(2, 0), ((0, 2), (0, 0)), "same"] if fn == "pool_output_shape" else []
        args[target] = draw(st.sampled_from(BAD_PADDING + extra))
    elif target == "stride" and fn == "pool_output_shape":
        args[target] = draw(st.sampled_from(BAD_POSITIVE))
    elif target == "oversize":
        names = ("kernel_size",)
        args["kernel_size"] = draw(st.sampled_from([9, (3, 12), 2**40]))
    else:
        args[target] = draw(st.sampled_from(BAD_POSITIVE))
    event(f"{fn} {target}")
    return target, names, lambda: getattr(jaxconv, fn)(**args)


@examples(100)
@given(invalid_shape_calls())
def test_invalid_shape_helpers_are_refused_naming_the_argument(call):
    target, names, fn = call
    count("invalid/shapes")
    assert_refused(fn, names)


# Oversize ints that do not fit in int64: refused with a named ValueError/TypeError, or
# computed right (a stride or dilation that large is a valid, if pointless, geometry).
HUGE = [2**63, 2**64, 2**100]
X4 = np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32)
W4 = np.random.default_rng(1).standard_normal((3, 2, 2, 2)).astype(np.float32)
OVERSIZE = {
    "conv2d-lax-stride": ("stride", lambda v: jaxconv.conv2d(X4, W4, stride=v),
                          lambda v: ref.conv2d(X4, W4, stride=v)),
    "conv2d-patches-stride": ("stride", lambda v: jaxconv.conv2d(X4, W4, stride=v,
                                                                 impl="patches"),
                              lambda v: ref.conv2d(X4, W4, stride=v)),
    "conv2d-lax-dilation-1x1": ("dilation", lambda v: jaxconv.conv2d(X4, W4[..., :1, :1],
                                                                     dilation=v),
                                lambda v: ref.conv2d(X4, W4[..., :1, :1], dilation=v)),
    "conv2d-lax-padding": ("padding", lambda v: jaxconv.conv2d(X4, W4, padding=v), None),
    "conv2d-patches-padding": ("padding", lambda v: jaxconv.conv2d(X4, W4, padding=v,
                                                                   impl="patches"), None),
    "max_pool2d-stride": ("stride", lambda v: jaxconv.max_pool2d(X4, 2, stride=v),
                          lambda v: ref.max_pool2d(X4, 2, stride=v)),
    "max_pool2d-dilation-1x1": ("dilation", lambda v: jaxconv.max_pool2d(X4, 1, dilation=v),
                                lambda v: ref.max_pool2d(X4, 1, dilation=v)),
    "avg_pool2d-stride": ("stride", lambda v: jaxconv.avg_pool2d(X4, 2, stride=v),
                          lambda v: ref.avg_pool2d(X4, 2, stride=v)),
    "avg_pool2d-divisor_override": ("divisor_override",
                                    lambda v: jaxconv.avg_pool2d(X4, 2, divisor_override=v),
                                    lambda v: ref.avg_pool2d(X4, 2, divisor_override=v)),
    "max_pool2d-kernel_size": ("kernel_size", lambda v: jaxconv.max_pool2d(X4, v), None),
    "pool2d-pool_size": ("pool_size", lambda v: jaxconv.pool2d(X4[0, 0], v), None),
}  # fmt: skip


@pytest.mark.parametrize("value", HUGE, ids=["2**63", "2**64", "2**100"])
@pytest.mark.parametrize("name", list(OVERSIZE))
def test_oversize_geometry_is_refused_or_computed_right(name, value):
    arg, call, oracle = OVERSIZE[name]
    count("invalid/oversize")
    try:
        got = call(value)
    except DOCUMENTED as err:
        assert re.search(rf"(?<![A-Za-z0-9_]){arg}(?![A-Za-z0-9_])", str(err)), (
            f"{type(err).__name__} does not name {arg}: {str(err)[:300]}"
        )
        return
    except Exception as err:
        pytest.fail(f"undocumented {type(err).__name__} for {arg}={value}: {str(err)[:300]}")
    assert oracle is not None, f"{arg}={value} was accepted: got shape {np.shape(got)}"
    np.testing.assert_allclose(np.asarray(got), oracle(value), rtol=1e-6, atol=1e-6)


# Padding so large that the padded input cannot exist used to abort the whole interpreter
# inside XLA (SIGABRT: "overflow in static extent product", or a failed CHECK in the patches
# path's matrix product); it must be a Python exception. The values are below the 2**31 - 1
# cap on sizes. The calls run in one child process, one after another, each answering on its
# own flushed line: an abort kills the child at that case, which then has no answer (nor do
# the cases after it), while the cases before it keep theirs.
CRASH_CHILD = """
import sys
import numpy as np
from jaxconv.conv import conv2d
x, w = np.ones((1, 2, 5, 5), np.float32), np.ones((1, 2, 2, 2), np.float32)
for case in sys.argv[1:]:
    impl, pad = case.split(":")
    try:
        answer = "RESULT " + str(conv2d(x, w, padding=int(pad), impl=impl).shape)
    except Exception as err:
        answer = "RAISED " + type(err).__name__ + " " + " ".join(str(err).split())[:300]
    print("CASE", case, answer, flush=True)
"""
CRASH_CASES = [("lax", 2**30), ("lax", 2**31 - 1), ("patches", 2**16), ("patches", 2**30)]


@pytest.fixture(scope="module")
def huge_padding_runs() -> tuple[int, str]:
    """The child's exit status and output, every case of :data:`CRASH_CASES` in one run."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    args = [f"{impl}:{pad}" for impl, pad in CRASH_CASES]
    child = subprocess.run([sys.executable, "-c", CRASH_CHILD, *args], capture_output=True,
                           text=True, env=env, timeout=300)  # fmt: skip
    return child.returncode, child.stdout + child.stderr


@pytest.mark.parametrize(
    "impl, padding", CRASH_CASES, ids=["lax-2**30", "lax-2**31-1", "patches-2**16", "patches-2**30"]
)
def test_huge_padding_is_an_exception_not_a_crash(huge_padding_runs, impl, padding):
    count("invalid/huge_padding")
    status, output = huge_padding_runs
    prefix = f"CASE {impl}:{padding} "
    answers = [line[len(prefix) :] for line in output.splitlines() if line.startswith(prefix)]
    lines = output.strip().splitlines()
    last = lines[-1] if lines else ""
    assert answers, f"the process died (status {status}) by this case; its last line: {last[:300]}"
    (answer,) = answers
    answered = sum(line.startswith("CASE ") for line in lines)
    if answered == len(CRASH_CASES):  # no abort at any case: nor after them
        assert status == 0, f"the process died (status {status}) after its last case: {last}"
    assert answer.startswith("RAISED"), f"huge padding accepted: {answer}"
    if padding >= 2**30:  # an output extent >= 2**31: no int32 index reaches it
        assert re.match(r"RAISED (ValueError|TypeError) .*\bpadding\b", answer), answer


def test_conv2d_refuses_empty_spatial_input_as_torch_and_pooling_do():
    """PyTorch refuses an (N, C, 0, W) input to conv2d ("Only zero batch or zero channel
    inputs are supported"), as jaxconv's pooling does; conv2d pads it and returns zeros."""
    count("invalid/conv2d")
    x = np.zeros((1, 1, 0, 3), np.float32)
    with pytest.raises(RuntimeError):
        F.conv2d(torch_t(x), torch.ones(1, 1, 1, 1), padding=1)
    with pytest.raises(ValueError, match=r"\binput\b"):
        jaxconv.max_pool2d(x, 1, padding=0)
    with pytest.raises(ValueError, match=r"\binput\b"):
        jaxconv.conv2d(x, np.ones((1, 1, 1, 1), np.float32), padding=1)


@pytest.mark.parametrize("ceil_mode", [1, "no", None])
def test_pool_output_shape_refuses_a_non_bool_ceil_mode(ceil_mode):
    """max_pool2d refuses ceil_mode=1 or "no" (TypeError); the shape helper silently reads
    them as truthy/falsy, so ceil_mode="no" gives the ceil-mode shape."""
    count("invalid/shapes")
    assert_refused(lambda: jaxconv.max_pool2d(X4, 2, ceil_mode=ceil_mode), ("ceil_mode",))
    assert_refused(lambda: jaxconv.pool_output_shape(5, 2, ceil_mode=ceil_mode), ("ceil_mode",))


@pytest.mark.parametrize("layers", [None, 3, 2.5], ids=["None", "int", "float"])
def test_receptive_field_refuses_a_non_sequence_naming_layers(layers):
    count("invalid/shapes")
    assert_refused(lambda: jaxconv.receptive_field(layers), ("layers",))


@pytest.mark.parametrize("op", ["conv2d", "max_pool2d", "corr2d"])
def test_ragged_nested_lists_are_refused_naming_the_argument(op):
    """NumPy's own "inhomogeneous shape" ValueError does not say which argument it was."""
    count("invalid/ragged")
    ragged = [[[1.0, 2.0], [3.0]], [[1.0, 2.0], [3.0, 4.0]]]
    call = {
        "conv2d": lambda: jaxconv.conv2d(ragged, W4),
        "max_pool2d": lambda: jaxconv.max_pool2d(ragged, 1),
        "corr2d": lambda: jaxconv.corr2d(ragged[0], np.ones((1, 1), np.float32)),
    }[op]
    assert_refused(call, ("x", "X", "input"))


# --------------------------------------------------------------------------- NaN and inf


@compiled_examples(20)
@given(conv2d_cases(torch_only=True), st.data())
def test_nonfinite_conv2d_propagates_like_torch(case, data):
    """NaN/inf patterns equal PyTorch's (NCHW). Where a window covers zero padding and the
    weights are not finite, 0 * inf is implementation-defined: formed (NaN: the reference,
    jaxconv's patches path, some PyTorch kernels) or skipped (the padding contributes
    nothing: XLA's and other PyTorch kernels, chosen by shape and memory format). There the
    result must be one of those two, and so must PyTorch's."""
    count("nonfinite/conv2d")
    x, k, b = conv2d_arrays({**case, "dtype": "float32"})
    where = data.draw(st.sampled_from(["x", "x", "w", "both", "bias"]))
    if where in ("x", "both"):
        x = sprinkle(data.draw, x)
    if where in ("w", "both"):
        k = sprinkle(data.draw, k, rate=0.1)
    if where == "bias":
        x = sprinkle(data.draw, x, rate=0.05)
        b = sprinkle(data.draw, np.zeros(case["o"], np.float32) + 0.5, rate=0.5)
    event(f"conv2d nonfinite in {where}")
    geometry = conv2d_geometry(case)
    got = maybe_jit(lambda x, k, b: jaxconv.conv2d(x, k, b, impl=case["impl"], **geometry),
                    case["jitted"])(x, k, b)  # fmt: skip
    got = np.asarray(got)
    if case["layout"] == "NHWC":
        got = np.moveaxis(got, -1, -3)
    xt = np.ascontiguousarray(to_nchw(x, case["layout"]))
    kt = np.ascontiguousarray(k if case["layout"] == "NCHW" else np.transpose(k, (3, 2, 0, 1)))
    want = torch_conv2d(xt, kt, b, case)
    compared = np.ones(want.shape, bool)
    if not np.isfinite(k).all():
        either = touches_padding(xt, kt, case)
        formed = ref.conv2d(xt, kt, b, **{**geometry, "layout": "NCHW"})
        skipped = conv2d_skipping_padding(xt, kt, b, case)
        for name, result in (("jaxconv", got), ("torch", want)):
            ok = (classes(result) == classes(formed)) | (classes(result) == classes(skipped))
            assert ok[either].all(), f"{name}: neither at {np.argwhere(either & ~ok)[:5].tolist()}"
        compared = ~either
    assert_same_nonfinite(got[compared], want[compared])
    finite = (classes(want) == 0) & compared
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-4, atol=1e-4)


def torch_conv2d(xt: np.ndarray, kt: np.ndarray, b: np.ndarray | None, case: dict[str, Any],
                 channels_last: bool = False) -> np.ndarray:  # fmt: skip
    """PyTorch's conv2d on NCHW ``xt`` / OIHW ``kt`` with ``case``'s geometry."""
    x = torch_t(xt)
    if channels_last:
        x = (x[None] if x.ndim == 3 else x).contiguous(memory_format=torch.channels_last)
    y = F.conv2d(x, torch_t(kt), None if b is None else torch_t(b),
                 stride=as_pair(case["stride"]), padding=torch_padding(case["padding"]),
                 dilation=as_pair(case["dilation"]), groups=case["groups"])  # fmt: skip
    return (y[0] if channels_last and xt.ndim == 3 else y).numpy()


def torch_padding(padding: Any) -> Any:
    """A symmetric jaxconv padding in PyTorch's spelling (a string or one int per axis)."""
    return padding if isinstance(padding, str) else tuple(p[0] for p in _sides(padding))


def conv2d_skipping_padding(
    xt: np.ndarray, kt: np.ndarray, b: np.ndarray | None, case: dict[str, Any]
) -> np.ndarray:
    """conv2d (NCHW, float64) where padded positions contribute nothing at all, so that
    0 * inf is never formed: what PyTorch's channels-last kernel and XLA's conv compute."""
    x = np.asarray(xt, np.float64)
    x = x[None] if x.ndim == 3 else x
    w = np.asarray(kt, np.float64)
    o, cg, kh, kw = w.shape
    (sh, sw), (dh, dw), groups = as_pair(case["stride"]), as_pair(case["dilation"]), case["groups"]
    padding = case["padding"]
    if padding == "same":
        pads = [
            ((d * (k - 1)) // 2, d * (k - 1) - (d * (k - 1)) // 2) for k, d in ((kh, dh), (kw, dw))
        ]
    else:
        pads = [(0, 0), (0, 0)] if padding == "valid" else list(_sides(padding))
    spatial = ((0, 0), (0, 0), tuple(pads[0]), tuple(pads[1]))
    xp, inside = np.pad(x, spatial), np.pad(np.ones(x.shape[2:], bool), spatial[2:])
    oh = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    ow = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    n, og = x.shape[0], o // groups
    y = np.zeros((n, o, oh, ow))
    for a in range(kh):
        for c in range(kw):
            rows = slice(a * dh, a * dh + (oh - 1) * sh + 1, sh)
            cols = slice(c * dw, c * dw + (ow - 1) * sw + 1, sw)
            tap = xp[:, :, rows, cols].reshape(n, groups, cg, oh, ow)
            wt = w[:, :, a, c].reshape(groups, og, cg)
            with np.errstate(invalid="ignore"):  # inf - inf is NaN, as intended
                term = np.einsum("ngchw,goc->ngohw", tap, wt).reshape(n, o, oh, ow)
                y += np.where(inside[rows, cols], term, 0.0)
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y[0] if np.ndim(xt) == 3 else y


def touches_padding(xt: np.ndarray, kt: np.ndarray, case: dict[str, Any]) -> np.ndarray:
    """Output positions (NCHW) whose window covers at least one padded zero."""
    ones = torch_conv2d(np.ones(xt.shape), np.ones(kt.shape), None, case)
    return ones < np.prod(kt.shape[1:])


@pytest.mark.parametrize("impl", ["lax", "patches"])
def test_conv2d_padding_times_nonfinite_weight_is_one_of_torchs_results(impl):
    """0 * NaN at a padded position, one case pinned: here PyTorch's NCHW kernel (and the
    reference) give NaN; its channels-last kernel skips the padding and gives 0 when it runs
    on several threads, and forms the product (NaN) on one. jaxconv's patches path forms the
    product (NaN), its lax path skips padding (0): each is one of PyTorch's answers. (For
    other shapes PyTorch's NCHW kernel skips too; see
    test_nonfinite_conv2d_propagates_like_torch.)"""
    count("nonfinite/conv2d")
    x = np.random.default_rng(0).standard_normal((1, 2, 2, 2)).astype(np.float32)
    w = np.ones((2, 1, 1, 1), np.float32)
    w[0] = np.nan  # group 0's weight
    case = dict(stride=1, padding=(0, 1), dilation=1, groups=2)
    nchw, cl = torch_conv2d(x, w, None, case), torch_conv2d(x, w, None, case, channels_last=True)
    skipping = conv2d_skipping_padding(x, w, None, case)
    edge = (0, 0, 0, 0)  # output channel 0, a column made of padding only
    assert np.isnan(nchw[edge]) and skipping[edge] == 0  # PyTorch's two answers
    assert np.isnan(ref.conv2d(x, w, padding=(0, 1), groups=2)[edge])
    if cl[edge] == 0:
        assert_same_nonfinite(skipping, cl, "torch (NHWC)")
    else:
        assert_same_nonfinite(nchw, cl, "torch (NHWC, one thread)")
    got = np.asarray(jaxconv.conv2d(x, w, padding=(0, 1), groups=2, impl=impl))
    assert_same_nonfinite(got[:, 1], nchw[:, 1])  # the finite group is unaffected
    expected = {"patches": nchw, "lax": skipping}[impl]
    assert_same_nonfinite(got, expected, "torch (NCHW)" if impl == "patches" else "skipping")


@compiled_examples(20)
@given(pool_cases("max", torch_only=True), st.data())
def test_nonfinite_max_pool2d_is_torch_bit_for_bit(case, data):
    """NaN wins a window (as in PyTorch), -inf and +inf are ordinary values; the indices
    of NaN maxima are PyTorch's too."""
    count("nonfinite/max_pool2d")
    x = sprinkle(data.draw, pool_array({**case, "dtype": "float32"}), rate=0.2)
    note(f"x = {x!r}")
    kwargs = {k: case[k] for k in POOL_ARGS["max"]}
    values, idx = maybe_jit(lambda x: jaxconv.max_pool2d(x, return_indices=True, **kwargs),
                            case["jitted"])(x)  # fmt: skip
    want, want_idx = torch_pool("max", x, case, return_indices=True)
    got = to_nchw(np.asarray(values), case["layout"]).reshape(want.shape)
    np.testing.assert_array_equal(got, want.numpy())  # equal NaNs compare equal here
    got_idx = to_nchw(np.asarray(idx), case["layout"]).reshape(want.shape)
    np.testing.assert_array_equal(got_idx, want_idx.numpy())
    assert_same_nonfinite(ref.max_pool2d(x, **kwargs), np.asarray(values), "jaxconv (reference)")


@compiled_examples(15)
@given(pool_cases("avg", torch_only=True), st.data())
def test_nonfinite_avg_pool2d_propagates_like_torch(case, data):
    count("nonfinite/avg_pool2d")
    x = sprinkle(data.draw, pool_array({**case, "dtype": "float32"}), rate=0.15)
    kwargs = {k: case[k] for k in POOL_ARGS["avg"]}
    got = maybe_jit(lambda x: jaxconv.avg_pool2d(x, **kwargs), case["jitted"])(x)
    want = torch_pool("avg", x, case).numpy()
    got = to_nchw(np.asarray(got), case["layout"]).reshape(want.shape)
    assert_same_nonfinite(got, want)
    finite = classes(want) == 0
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "op",
    [
        "corr2d",
        "corr2d_vmap",
        "convolve2d",
        "corr2d_multi_in",
        "corr2d_multi_in_out",
        "conv1x1",
        "pool2d-max",
        "pool2d-avg",
    ],
)
@compiled_examples(4)
@given(corr2d_cases(max_hw=7), st.integers(1, 3), st.integers(1, 3), st.data())
def test_nonfinite_chapter_ops_propagate_like_torch(op, case, ci, co, data):
    count(f"nonfinite/{op.split('-')[0]}")
    h, w, kh, kw = case["h"], case["w"], case["kh"], case["kw"]
    two_d = op in ("corr2d", "corr2d_vmap", "convolve2d") or op.startswith("pool2d")
    X = draw_array(case["seed"], (h, w) if two_d else (ci, h, w))
    K = draw_array(case["seed"] + 1, {
        "corr2d_multi_in": (ci, kh, kw), "corr2d_multi_in_out": (co, ci, kh, kw),
        "conv1x1": (co, ci, 1, 1)}.get(op, (kh, kw)))  # fmt: skip
    X = sprinkle(data.draw, X)
    if data.draw(st.booleans()):
        K = sprinkle(data.draw, K, rate=0.1)
    xt = torch_t(X)[None, None] if two_d else torch_t(X)[None]
    if op.startswith("pool2d"):
        mode = op.split("-")[1]
        got = maybe_jit(lambda X: jaxconv.pool2d(X, (kh, kw), mode), case["jitted"])(X)
        fn = F.max_pool2d if mode == "max" else F.avg_pool2d
        want = fn(xt, (kh, kw), stride=1).numpy()[0, 0]
    else:
        got = maybe_jit(getattr(jaxconv, op), case["jitted"])(X, K)
        kt = {"corr2d": lambda: torch_t(K)[None, None],
              "corr2d_vmap": lambda: torch_t(K)[None, None],
              "convolve2d": lambda: torch_t(K[::-1, ::-1])[None, None],
              "corr2d_multi_in": lambda: torch_t(K)[None],
              "corr2d_multi_in_out": lambda: torch_t(K),
              "conv1x1": lambda: torch_t(K)}[op]()  # fmt: skip
        want = F.conv2d(xt, kt).numpy()[0]
        if two_d or op == "corr2d_multi_in":
            want = want[0]
    assert_same_nonfinite(got, want)
    finite = classes(want) == 0
    np.testing.assert_allclose(np.asarray(got)[finite], want[finite], rtol=1e-4, atol=1e-4)
