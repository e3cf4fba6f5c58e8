"""Property-based tests (hypothesis) of the N-D op set: conv1d/2d/3d, conv_transpose1d/2d/3d,
max/avg/lp pooling 1-3-D, adaptive avg/max pooling 1-3-D, max_unpool1-3d, unfold/fold and
pixel_shuffle/unshuffle.

Over hypothesis-drawn geometry (1, 2 or 3 spatial dims, channels-first or channels-last,
batched or not, every spelling of a size: int, 1-tuple, n-tuple, list; strides, paddings,
dilations, ceil_mode, output sizes) four families of properties:

* shape: the output shape is PyTorch's, or both refuse (jaxconv with ValueError/TypeError,
  before tracing: checked under ``jax.eval_shape``, so no example compiles anything);
* values: the op (jitted, or eager in a quarter of the examples) equals the float64 oracle in
  :mod:`jaxconv.reference` within a rounding bound derived from the input, exactly where the
  op only selects or moves values (max pooling and its indices, unpooling, unfold, shuffles);
* identities between ops: fold is the adjoint of unfold, conv_transpose is the VJP of conv,
  pixel_unshuffle inverts pixel_shuffle, max_unpool(max_pool(x)) keeps exactly the maxima,
  adaptive pooling to the input's own size is the identity, average pooling of a constant
  with count_include_pad=False is the constant, lp_pool with norm 1 is a sum pool (a conv
  with a ones kernel);
* jit == eager, for every op.

Helpers, settings and the example counter are the 2-D suite's (``tests/test_properties.py``):
``JAXCONV_PROPERTY_SCALE`` multiplies every property's number of examples here too, the
properties that run an op draw half their examples unless ``JAXCONV_TEST_FULL=1``, and
``JAXCONV_PROPERTY_COUNTS`` receives the counts of both files when they run in one process.
Shapes are small (3-D ones smallest) so that the NumPy oracles' loops stay cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import event, given, note
from hypothesis import strategies as st
from test_properties import (  # the 2-D suite's helpers; its fixture writes the counts
    F,
    _report_counts,  # noqa: F401 (an autouse fixture, used by being here)
    assert_within,
    compiled_examples,
    count,
    draw_array,
    dtypes,
    eps,
    examples,
    f64,
    jit_flags,
    maybe_jit,
    seeds,
    torch,
    torch_t,
)

import jaxconv
from jaxconv import reference as ref

pytestmark = [
    pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning"),  # torch perf. note
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

LAYOUTS = {1: ("NCL", "NLC"), 2: ("NCHW", "NHWC"), 3: ("NCDHW", "NDHWC")}
REFUSED = (ValueError, TypeError)  # what jaxconv may raise for a geometry torch refuses
TORCH_REFUSED = (RuntimeError, ValueError, TypeError, IndexError)

# --------------------------------------------------------------------------- helpers


def channels_last(layout: str) -> bool:
    return layout.endswith("C")


def x_shape(layout: str, batch: int | None, c: int, spatial: tuple[int, ...]) -> tuple:
    inner = (*spatial, c) if channels_last(layout) else (c, *spatial)
    return inner if batch is None else (batch, *inner)


def to_first(a: Any, layout: str, nd: int) -> np.ndarray:
    """An array in ``layout`` (batched or not) as channels-first."""
    a = np.asarray(a)
    return np.moveaxis(a, -1, -nd - 1) if channels_last(layout) else a


def shape_to_first(shape: tuple[int, ...], layout: str, nd: int) -> tuple[int, ...]:
    if not channels_last(layout):
        return tuple(shape)
    *lead, c = shape
    return (*lead[: len(lead) - nd], c, *lead[len(lead) - nd :])


def kernel_in(layout: str, w_first: np.ndarray) -> np.ndarray:
    """A channels-first kernel ``(A, B, *k)`` in ``layout``'s form (channels-last: ``(*k, B,
    A)``)."""
    nd = w_first.ndim - 2
    return w_first.transpose(*range(2, nd + 2), 1, 0) if channels_last(layout) else w_first


def draw_ints(draw: Any, nd: int, lo: int, hi: int) -> tuple[int, ...]:
    return tuple(draw(st.integers(lo, hi)) for _ in range(nd))


def spell(draw: Any, values: tuple[int, ...], single: bool = True) -> Any:
    """``values`` (one int per spatial axis) in a spelling drawn among those torch accepts for
    it: a tuple, a list, and where all are equal an int or (``single``: not for unfold/fold,
    which torch refuses it for) a 1-tuple."""
    forms: list[Any] = [tuple(values), list(values)]
    if len(set(values)) == 1:
        forms += [values[0], (values[0],)] if single else [values[0]]
    return draw(st.sampled_from(forms))


def full(value: Any, nd: int) -> tuple[int, ...] | None:
    """A size in any spelling (int, 1-tuple, n-tuple, list; None or empty: None) as n ints."""
    if value is None or (not np.isscalar(value) and len(value) == 0):
        return None
    values = (value,) if np.isscalar(value) else tuple(value)
    return tuple(int(v) for v in (values * nd if len(values) == 1 else values))


def jax_shape(call: Callable[..., Any], *shapes: tuple[int, ...], dtypes_: Any = None) -> Any:
    """The output shape(s) of ``call`` on arrays of ``shapes`` (float32 unless ``dtypes_``),
    found by tracing only; None where jaxconv refuses (ValueError/TypeError)."""
    dts = dtypes_ or [jnp.float32] * len(shapes)
    specs = [jax.ShapeDtypeStruct(s, d) for s, d in zip(shapes, dts, strict=True)]
    try:
        out = jax.eval_shape(call, *specs)
    except REFUSED as err:
        event(f"jaxconv refuses: {type(err).__name__}")
        return None
    return jax.tree_util.tree_map(lambda a: tuple(a.shape), out)


def torch_shape(call: Callable[[], Any]) -> Any:
    try:
        out = call()
    except TORCH_REFUSED:
        return None
    return tuple(out.shape)


def assert_same_shape(got: Any, want: Any) -> None:
    assert got == want, f"jaxconv {got}, torch {want}"
    event("both refuse" if want is None else "same shape")


def exact(got: Any, want: np.ndarray, dtype: str) -> None:
    """Equal values (a selection or move of rounded inputs is exact), dtype kept."""
    assert_within(got, want, np.zeros(np.shape(want)), dtype)


def vdot64(a: Any, b: Any) -> float:
    return float(np.vdot(np.asarray(a, np.float64), np.asarray(b, np.float64)))


# --------------------------------------------------------------------------- strategies


@st.composite
def conv_cases(
    draw: Any, nd: int | None = None, transpose: bool = False, vjp: bool = False
) -> dict[str, Any]:
    """A valid ``conv{nd}d`` call (``transpose``: ``conv_transpose{nd}d``; ``vjp``: with
    output_padding < stride, where the transposed conv is the forward conv's VJP); ``nd``
    None: drawn."""
    nd = nd or draw(st.integers(1, 3))
    small = nd == 3  # the 3-D oracles loop over every output position: keep them few
    layout = draw(st.sampled_from(LAYOUTS[nd]))
    groups = draw(st.integers(1, 2 if small else 3))
    cg, og = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    k = draw_ints(draw, nd, 1, 2 if small else 4)
    s = draw_ints(draw, nd, 1, 2 if small else 3)
    d = draw_ints(draw, nd, 1, 2 if small else 3)
    reach = tuple(d[a] * (k[a] - 1) for a in range(nd))  # effective kernel - 1
    case = dict(nd=nd, layout=layout, batch=draw(st.sampled_from([None, 1, 2])), groups=groups,
                cg=cg, og=og, k=k, bias=draw(st.booleans()), dtype=draw(dtypes),
                seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip
    if transpose:
        size = draw_ints(draw, nd, 1, 3 if small else 5)
        top = [s[a] - 1 if vjp else max(s[a], d[a]) - 1 for a in range(nd)]
        op = tuple(draw(st.integers(0, top[a])) for a in range(nd))
        full = [(size[a] - 1) * s[a] + reach[a] + op[a] + 1 for a in range(nd)]
        p = tuple(min(draw(st.integers(0, 2)), (full[a] - 1) // 2) for a in range(nd))
        case.update(spatial=size, geometry=dict(
            stride=spell(draw, s), padding=spell(draw, p), output_padding=spell(draw, op),
            groups=groups, dilation=spell(draw, d)))  # fmt: skip
        return case
    kind = draw(st.sampled_from(["numeric", "numeric", "valid"] + (["same"] if set(s) == {1}
                                                                   else [])))  # fmt: skip
    pads = draw_ints(draw, nd, 0, 2) if kind == "numeric" else (0,) * nd
    if kind == "same":
        pads = tuple(r // 2 for r in reach)  # the smaller side: a lower bound on the size
    lo = [max(1, reach[a] + 1 - 2 * pads[a]) for a in range(nd)]
    spatial = tuple(draw(st.integers(lo[a], lo[a] + (2 if small else 4))) for a in range(nd))
    padding = kind if kind != "numeric" else spell(draw, pads)
    case.update(spatial=spatial, geometry=dict(stride=spell(draw, s), padding=padding,
                                               dilation=spell(draw, d), groups=groups))  # fmt: skip
    return case


def conv_arrays(case: dict[str, Any], transpose: bool = False) -> tuple:
    """Input, kernel (in the case's layout) and bias of a conv case."""
    g, cg, og, k = case["groups"], case["cg"], case["og"], case["k"]
    c_in = cg * g
    w_first = (c_in, og, *k) if transpose else (og * g, cg, *k)
    seed, dtype = case["seed"], case["dtype"]
    x = draw_array(seed, x_shape(case["layout"], case["batch"], c_in, case["spatial"]), dtype)
    w = kernel_in(case["layout"], draw_array(seed + 1, w_first, dtype))
    b = draw_array(seed + 2, (og * g,), dtype) if case["bias"] else None
    return x, w, b


@st.composite
def pool_cases(draw: Any, kind: str, nd: int | None = None) -> dict[str, Any]:
    """A valid ``{kind}_pool{nd}d`` call, kind "max", "avg" or "lp" (``nd`` None: drawn)."""
    nd = nd or draw(st.integers(1, 3))
    small = nd == 3
    k = draw_ints(draw, nd, 1, 2 if small else 3)
    s = draw_ints(draw, nd, 1, 2 if small else 3)
    d = draw_ints(draw, nd, 1, 2) if kind == "max" else (1,) * nd
    p = tuple(draw(st.integers(0, ki // 2)) for ki in k) if kind != "lp" else (0,) * nd
    lo = [max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a]) for a in range(nd)]
    if kind != "max" and nd == 3:  # torch's 3-D avg/lp pools need input >= kernel, unpadded
        lo = [max(lo[a], k[a]) for a in range(nd)]
    spatial = tuple(draw(st.integers(lo[a], lo[a] + (2 if small else 3))) for a in range(nd))
    empty = [None, (), []] if kind != "lp" else [None]  # None or empty: the kernel, as torch
    stride = draw(st.sampled_from([*empty, "drawn", "drawn"]))
    stride = spell(draw, s) if stride == "drawn" else stride
    args: dict[str, Any] = dict(kernel_size=spell(draw, k), stride=stride)
    if kind != "lp":
        args["padding"] = spell(draw, p)
    args["ceil_mode"] = draw(st.booleans())
    if kind == "max":
        args["dilation"] = spell(draw, d)
    if kind == "avg":
        args["count_include_pad"] = draw(st.booleans())
        if nd > 1:
            args["divisor_override"] = draw(st.sampled_from([None, None, 1, 3, -2]))
    case = dict(nd=nd, layout=draw(st.sampled_from(LAYOUTS[nd])), k=k,
                batch=draw(st.sampled_from([None, 1, 2])), c=draw(st.integers(1, 2)),
                spatial=spatial, args=args, dtype=draw(dtypes), seed=draw(seeds),
                jitted=draw(jit_flags()))  # fmt: skip
    if kind == "lp":
        case["norm_type"] = draw(st.sampled_from([1, 2, 2.0, 3, 1.5]))
    return case


def pool_input(case: dict[str, Any], seed_offset: int = 0) -> np.ndarray:
    shape = x_shape(case["layout"], case["batch"], case["c"], case["spatial"])
    return draw_array(case["seed"] + seed_offset, shape, case["dtype"])


@st.composite
def adaptive_cases(draw: Any, nd: int | None = None) -> dict[str, Any]:
    """A valid ``adaptive_*_pool{nd}d`` call: sizes that divide or not, None entries."""
    nd = nd or draw(st.integers(1, 3))
    spatial = draw_ints(draw, nd, 1, 4 if nd == 3 else 7)
    out = tuple(draw(st.integers(1, n + 2)) for n in spatial)
    if nd > 1:  # None keeps that axis' size (not in 1-D, as torch)
        out = tuple(o if draw(st.integers(0, 3)) else None for o in out)
    forms: list[Any] = [out, list(out)]
    if len(set(out)) == 1 and out[0] is not None:
        forms.append(out[0])
    return dict(nd=nd, layout=draw(st.sampled_from(LAYOUTS[nd])), spatial=spatial,
                batch=draw(st.sampled_from([None, 1, 2])), c=draw(st.integers(1, 2)),
                output_size=draw(st.sampled_from(forms)), dtype=draw(dtypes),
                seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip


@st.composite
def fold_cases(draw: Any) -> dict[str, Any]:
    """unfold/fold geometry with overlapping windows likely (stride <= kernel mostly)."""
    k, d, s = draw_ints(draw, 2, 1, 3), draw_ints(draw, 2, 1, 2), draw_ints(draw, 2, 1, 3)
    p = draw_ints(draw, 2, 0, 2)
    lo = [max(1, d[a] * (k[a] - 1) + 1 - 2 * p[a]) for a in range(2)]
    size = tuple(draw(st.integers(lo[a], lo[a] + 4)) for a in range(2))
    return dict(size=size, batch=draw(st.sampled_from([None, 1, 2])), c=draw(st.integers(1, 2)),
                geometry=dict(kernel_size=spell(draw, k, False), dilation=spell(draw, d, False),
                              padding=spell(draw, p, False), stride=spell(draw, s, False)),
                dtype=draw(dtypes), seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip


def fold_blocks(case: dict[str, Any]) -> tuple[int, int]:
    """(C * kh * kw, L) of the case's columns."""
    g = case["geometry"]
    k, d, p, s = (np.broadcast_to(np.asarray(g[n]), (2,)) for n in
                  ("kernel_size", "dilation", "padding", "stride"))  # fmt: skip
    grid = [(case["size"][a] + 2 * p[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(2)]
    return case["c"] * int(k[0] * k[1]), grid[0] * grid[1]


@st.composite
def shuffle_cases(draw: Any) -> dict[str, Any]:
    r = draw(st.integers(1, 3))
    lead = draw(st.sampled_from([(), (2,), (1, 2)]))
    return dict(r=r, lead=lead, c=draw(st.integers(1, 2)), h=draw(st.integers(1, 3)),
                w=draw(st.integers(1, 3)), layout=draw(st.sampled_from(["NCHW", "NHWC"])),
                dtype=draw(dtypes), seed=draw(seeds), jitted=draw(jit_flags()))  # fmt: skip


def shuffled_shape(case: dict[str, Any]) -> tuple[int, ...]:
    """The input of pixel_shuffle: (*, C*r*r, H, W) (or channels last)."""
    c, h, w = case["c"] * case["r"] ** 2, case["h"], case["w"]
    return (*case["lead"], *((h, w, c) if case["layout"] == "NHWC" else (c, h, w)))


# --------------------------------------------------------------------------- shape: vs torch


@pytest.mark.parametrize("nd", [1, 2, 3])
@examples(14)
@given(data=st.data())
def test_shape_conv_nd_is_torchs_or_both_refuse(nd, data):
    """Any geometry, fitting or not (kernel larger than the padded input, "same" with a
    stride): jaxconv's shape is torch's, or both refuse."""
    count(f"shape/conv{nd}d")
    draw = data.draw
    size, k = draw_ints(draw, nd, 1, 6), draw_ints(draw, nd, 1, 5)
    s, d = draw_ints(draw, nd, 1, 3), draw_ints(draw, nd, 1, 3)
    numeric = st.lists(st.integers(0, 3), min_size=nd, max_size=nd).map(tuple)
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), numeric))
    layout, batch = draw(st.sampled_from(LAYOUTS[nd])), draw(st.sampled_from([None, 2]))
    torch_pad = padding
    if not isinstance(padding, str):
        padding = spell(draw, padding)
    want = torch_shape(lambda: getattr(F, f"conv{nd}d")(
        torch.zeros(x_shape(LAYOUTS[nd][0], batch, 2, size)), torch.zeros((3, 2, *k)),
        stride=s, padding=torch_pad, dilation=d))  # fmt: skip
    op = getattr(jaxconv, f"conv{nd}d")
    w_shape = kernel_in(layout, np.zeros((3, 2, *k))).shape
    in_shape = x_shape(layout, batch, 2, size)
    got = jax_shape(lambda x, w: op(x, w, None, spell(draw, s), padding, spell(draw, d),
                                    layout=layout), in_shape, w_shape)  # fmt: skip
    assert_same_shape(got and shape_to_first(got, layout, nd), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
@examples(14)
@given(data=st.data())
def test_shape_conv_transpose_nd_is_torchs_or_both_refuse(nd, data):
    """output_padding beyond max(stride, dilation) - 1 and padding that crops everything
    are refused by both; otherwise the shape is torch's."""
    count(f"shape/conv_transpose{nd}d")
    draw = data.draw
    size, k = draw_ints(draw, nd, 1, 5), draw_ints(draw, nd, 1, 4)
    s, d = draw_ints(draw, nd, 1, 3), draw_ints(draw, nd, 1, 3)
    p, op = draw_ints(draw, nd, 0, 4), draw_ints(draw, nd, 0, 3)
    groups = draw(st.sampled_from([1, 2]))
    layout, batch = draw(st.sampled_from(LAYOUTS[nd])), draw(st.sampled_from([None, 2]))
    w_first = (2, 3 - groups, *k)  # (C_in, C_out // groups, *k): C_out 4 or 2
    want = torch_shape(lambda: getattr(F, f"conv_transpose{nd}d")(
        torch.zeros(x_shape(LAYOUTS[nd][0], batch, 2, size)), torch.zeros(w_first),
        stride=s, padding=p, output_padding=op, groups=groups, dilation=d))  # fmt: skip
    fn = getattr(jaxconv, f"conv_transpose{nd}d")
    w_shape = kernel_in(layout, np.zeros(w_first)).shape
    got = jax_shape(lambda x, w: fn(x, w, None, spell(draw, s), spell(draw, p), spell(draw, op),
                                    groups, spell(draw, d), layout=layout),
                    x_shape(layout, batch, 2, size), w_shape)  # fmt: skip
    if want is not None and 0 in want[-nd:] and got is None:
        event("torch's backend-dependent empty output (test_conv_transpose_empty_output_...)")
        return
    assert_same_shape(got and shape_to_first(got, layout, nd), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_conv_transpose_empty_output_is_refused(nd):
    """Where (L - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 is 0,
    torch's answer depends on its backend: a batch of one is refused ("Output size is too
    small"), a batch of two gives an empty output. jaxconv refuses both, the same way."""
    count(f"shape/conv_transpose{nd}d")
    geometry = dict(stride=2, padding=1, output_padding=1)  # (1 - 1) * 2 - 2 + 0 + 1 + 1 = 0
    w = np.zeros((2, 2) + (1,) * nd, np.float32)
    op = getattr(F, f"conv_transpose{nd}d")
    with pytest.raises(RuntimeError, match="too small"):
        op(torch_t(np.zeros((1, 2) + (1,) * nd, np.float32)), torch_t(w), **geometry)
    assert (
        op(torch_t(np.zeros((2, 2) + (1,) * nd, np.float32)), torch_t(w), **geometry).numel() == 0
    )
    for batch in (1, 2):
        x = np.zeros((batch, 2) + (1,) * nd, np.float32)
        with pytest.raises(ValueError, match="padding"):
            getattr(jaxconv, f"conv_transpose{nd}d")(x, w, **geometry)


@pytest.mark.parametrize("kind", ["max", "avg", "lp"])
@pytest.mark.parametrize("nd", [1, 2, 3])
@examples(10)
@given(data=st.data())
def test_shape_pool_nd_is_torchs_or_both_refuse(kind, nd, data):
    """Padding over half the kernel, windows past the input, ceil_mode's dropped last
    window: jaxconv's shape is torch's, or both refuse."""
    count(f"shape/{kind}_pool{nd}d")
    draw = data.draw
    size, k = draw_ints(draw, nd, 1, 7), draw_ints(draw, nd, 1, 4)
    s = draw(st.one_of(st.none(), st.just(()), st.lists(st.integers(1, 3), min_size=nd,
                                                        max_size=nd).map(tuple)))  # fmt: skip
    p, d = draw_ints(draw, nd, 0, 2), draw_ints(draw, nd, 1, 3)
    ceil_mode = draw(st.booleans())
    layout, batch = draw(st.sampled_from(LAYOUTS[nd])), draw(st.sampled_from([None, 2]))
    if kind == "max":
        t_kw = dict(stride=s, padding=p, dilation=d, ceil_mode=ceil_mode)
        j_kw = dict(stride=s if not s else spell(draw, s), padding=spell(draw, p),
                    dilation=spell(draw, d), ceil_mode=ceil_mode)  # fmt: skip
    elif kind == "avg":
        t_kw = dict(stride=s, padding=p, ceil_mode=ceil_mode)
        j_kw = dict(stride=s if not s else spell(draw, s), padding=spell(draw, p),
                    ceil_mode=ceil_mode)  # fmt: skip
    else:
        t_kw = j_kw = dict(stride=s, ceil_mode=ceil_mode)
    lead = (2,) if kind == "lp" else ()  # lp_pool's norm_type comes first
    t_k = k[0] if kind == "lp" and nd == 1 else k  # torch's lp_pool1d multiplies by its kernel
    want = torch_shape(lambda: getattr(F, f"{kind}_pool{nd}d")(
        torch.zeros(x_shape(LAYOUTS[nd][0], batch, 2, size)), *lead, t_k, **t_kw))  # fmt: skip
    fn = getattr(jaxconv, f"{kind}_pool{nd}d")
    got = jax_shape(lambda x: fn(x, *lead, spell(draw, k), **j_kw, layout=layout),
                    x_shape(layout, batch, 2, size))  # fmt: skip
    assert_same_shape(got and shape_to_first(got, layout, nd), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
@examples(14)
@given(data=st.data())
def test_shape_adaptive_pool_nd_is_torchs_or_both_refuse(nd, data):
    kind = data.draw(st.sampled_from(["avg", "max"]))
    count(f"shape/adaptive_{kind}_pool{nd}d")
    draw = data.draw
    size = draw_ints(draw, nd, 1, 6)
    out = tuple(draw(st.one_of(st.integers(0, 8), st.none())) if nd > 1
                else draw(st.integers(0, 8)) for _ in range(nd))  # fmt: skip
    layout, batch = draw(st.sampled_from(LAYOUTS[nd])), draw(st.sampled_from([None, 2]))
    want = torch_shape(lambda: getattr(F, f"adaptive_{kind}_pool{nd}d")(
        torch.zeros(x_shape(LAYOUTS[nd][0], batch, 2, size)), out))  # fmt: skip
    fn = getattr(jaxconv, f"adaptive_{kind}_pool{nd}d")
    got = jax_shape(lambda x: fn(x, out, layout=layout), x_shape(layout, batch, 2, size))
    assert_same_shape(got and shape_to_first(got, layout, nd), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
@examples(14)
@given(data=st.data())
def test_shape_max_unpool_nd_is_torchs_or_both_refuse(nd, data):
    """Default and explicit output sizes (torch allows default -/+ stride, exclusive)."""
    count(f"shape/max_unpool{nd}d")
    draw = data.draw
    size, k = draw_ints(draw, nd, 1, 4), draw_ints(draw, nd, 1, 3)
    s = draw(st.one_of(st.none(), st.just(draw_ints(draw, nd, 1, 3))))
    p = draw_ints(draw, nd, 0, 2)
    strides = k if s is None else s
    default = [(size[a] - 1) * strides[a] - 2 * p[a] + k[a] for a in range(nd)]
    out = draw(st.one_of(st.none(), st.just(tuple(
        default[a] + draw(st.integers(-3, 3)) for a in range(nd)))))  # fmt: skip
    if out is not None and draw(st.booleans()):
        out = (7, 7, *out)  # n + 2 entries: torch drops the leading two
    layout, batch = draw(st.sampled_from(LAYOUTS[nd])), draw(st.sampled_from([None, 2]))
    shape = x_shape(LAYOUTS[nd][0], batch, 2, size)
    want = torch_shape(lambda: getattr(F, f"max_unpool{nd}d")(
        torch.zeros(shape), torch.zeros(shape, dtype=torch.int64), k, s, p, out))  # fmt: skip
    fn = getattr(jaxconv, f"max_unpool{nd}d")
    # Indices are traced here, so their range is not checked (it would be on concrete ones).
    got = jax_shape(lambda x, i: fn(x, i, spell(draw, k), s if s is None else spell(draw, s),
                                    spell(draw, p), out, layout=layout),
                    *(x_shape(layout, batch, 2, size),) * 2,
                    dtypes_=[jnp.float32, jnp.int32])  # fmt: skip
    assert_same_shape(got and shape_to_first(got, layout, nd), want)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_max_unpool_empty_output_is_torchs(nd):
    count(f"shape/max_unpool{nd}d")
    x, idx = np.zeros((2,) + (1,) * nd, np.float32), np.zeros((2,) + (1,) * nd, np.int64)
    want = getattr(F, f"max_unpool{nd}d")(torch_t(x), torch.from_numpy(idx), 2, padding=1)
    assert tuple(want.shape) == (2,) + (0,) * nd  # (1 - 1) * 2 - 2 + 2 = 0
    got = getattr(jaxconv, f"max_unpool{nd}d")(x, idx, 2, padding=1)
    assert got.shape == tuple(want.shape)


@pytest.mark.parametrize(
    "op, step, padding, ceil_mode",
    [("avg", 2, 0, True), ("avg", 1, 1, False), ("lp", 2, None, True)],
)
def test_pool3d_refuses_an_input_smaller_than_the_kernel_as_torch(op, step, padding, ceil_mode):
    count(f"shape/{op}_pool3d")
    x = np.zeros((1, 1, 1, 1, 1), np.float32)
    kernel, stride = (1, 1, 2), (1, 1, step)
    t_op, j_op = getattr(F, f"{op}_pool3d"), getattr(jaxconv, f"{op}_pool3d")
    if op == "avg":
        args = (kernel, stride, (0, 0, padding), ceil_mode)
    else:
        args = (2, kernel, stride, ceil_mode)  # norm_type first
    with pytest.raises(RuntimeError, match="smaller than kernel size"):
        t_op(torch_t(x), *args)
    with pytest.raises(ValueError, match="kernel_size|input"):
        j_op(x, *args)


@examples(40)
@given(st.data())
def test_shape_unfold_fold_pixel_shuffle_are_torchs_or_both_refuse(data):
    draw = data.draw
    op = draw(st.sampled_from(["unfold", "fold", "pixel_shuffle", "pixel_unshuffle"]))
    count(f"shape/{op}")
    batch = draw(st.sampled_from([None, 2]))
    if op in ("unfold", "fold"):
        size, k = draw_ints(draw, 2, 1, 6), draw_ints(draw, 2, 1, 4)
        d, p, s = draw_ints(draw, 2, 1, 3), draw_ints(draw, 2, 0, 2), draw_ints(draw, 2, 1, 3)
        geometry = dict(kernel_size=k, dilation=d, padding=p, stride=s)
        spelled = {name: spell(draw, v, single=False) for name, v in geometry.items()}
        if op == "unfold":
            shape = x_shape("NCHW", batch, 2, size)
            want = torch_shape(lambda: F.unfold(torch.zeros(shape), **geometry))
            got = jax_shape(lambda x: jaxconv.unfold(x, **spelled), shape)
        else:
            rows = draw(st.sampled_from([2 * k[0] * k[1], 3]))  # divisible by the kernel or not
            blocks = draw(st.integers(1, 12))
            shape = (rows, blocks) if batch is None else (batch, rows, blocks)
            want = torch_shape(lambda: F.fold(torch.zeros(shape), size, **geometry))
            size_spelled = spell(draw, size, single=False)
            got = jax_shape(lambda x: jaxconv.fold(x, size_spelled, **spelled), shape)
    else:
        r = draw(st.integers(1, 3))
        c, h, w = draw(st.integers(1, 9)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
        shape = (c, h, w) if batch is None else (batch, c, h, w)
        want = torch_shape(lambda: getattr(F, op)(torch.zeros(shape), r))
        got = jax_shape(lambda x: getattr(jaxconv, op)(x, r), shape)
    assert_same_shape(got, want)


# --------------------------------------------------------------------------- values: vs oracle


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_values_conv_nd_match_reference(nd, data):
    case = data.draw(conv_cases(nd))
    count(f"values/conv{nd}d")
    note(repr(case))
    x, w, b = conv_arrays(case)
    kw = {**case["geometry"], "layout": case["layout"]}
    name = f"conv{nd}d"
    got = maybe_jit(lambda x, w, b: getattr(jaxconv, name)(x, w, b, **kw), case["jitted"])(x, w, b)
    want = getattr(ref, name)(f64(x), f64(w), None if b is None else f64(b), **kw)
    magnitude = getattr(ref, name)(np.abs(f64(x)), np.abs(f64(w)),
                                   None if b is None else np.abs(f64(b)), **kw)  # fmt: skip
    terms = case["cg"] * math.prod(case["k"]) + (b is not None)
    assert_within(got, want, (terms + 2) * eps(case["dtype"]) * magnitude, case["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_values_conv_transpose_nd_match_reference(nd, data):
    """Groups, dilation and output_padding together (what torch's own samples leave out)."""
    case = data.draw(conv_cases(nd, transpose=True))
    count(f"values/conv_transpose{nd}d")
    note(repr(case))
    x, w, b = conv_arrays(case, transpose=True)
    kw = {**case["geometry"], "layout": case["layout"]}
    name = f"conv_transpose{nd}d"
    got = maybe_jit(lambda x, w, b: getattr(jaxconv, name)(x, w, b, **kw), case["jitted"])(x, w, b)
    want = getattr(ref, name)(f64(x), f64(w), None if b is None else f64(b), **kw)
    magnitude = getattr(ref, name)(np.abs(f64(x)), np.abs(f64(w)),
                                   None if b is None else np.abs(f64(b)), **kw)  # fmt: skip
    terms = case["cg"] * math.prod(case["k"]) + (b is not None)
    assert_within(got, want, (terms + 2) * eps(case["dtype"]) * magnitude, case["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_values_max_pool_nd_and_indices_match_reference(nd, data):
    """A max is exact, and its index is the oracle's (torch's scan: ties included, which
    float16/bfloat16 rounding makes common)."""
    case = data.draw(pool_cases("max", nd))
    count(f"values/max_pool{nd}d")
    note(repr(case))
    x = pool_input(case)
    kw = {**case["args"], "layout": case["layout"]}
    fn = getattr(jaxconv, f"max_pool{nd}d")
    values, idx = maybe_jit(lambda x: fn(x, return_indices=True, **kw), case["jitted"])(x)
    want, want_idx = getattr(ref, f"max_pool{nd}d")(f64(x), return_indices=True, **kw)
    exact(values, want, case["dtype"])
    np.testing.assert_array_equal(np.asarray(idx), want_idx)


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_values_avg_pool_nd_match_reference(nd, data):
    case = data.draw(pool_cases("avg", nd))
    count(f"values/avg_pool{nd}d")
    note(repr(case))
    x = pool_input(case)
    kw = {**case["args"], "layout": case["layout"]}
    got = maybe_jit(lambda x: getattr(jaxconv, f"avg_pool{nd}d")(x, **kw), case["jitted"])(x)
    oracle = getattr(ref, f"avg_pool{nd}d")
    want = oracle(f64(x), **kw)
    div = kw.get("divisor_override")
    magnitude = oracle(np.abs(f64(x)), **{**kw, **({"divisor_override": abs(div)} if div else {})})
    bound = (math.prod(case["k"]) + 2) * eps(case["dtype"]) * magnitude
    assert_within(got, want, bound, case["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_values_lp_pool_nd_match_reference(nd, data):
    """Norms 1, 2, 3 and 1.5 (odd and fractional ones of |x|, where sums cannot cancel):
    a sum of ``K`` powers is within ``(K + 2) eps`` relative, the root adds a little."""
    case = data.draw(pool_cases("lp", nd))
    p = case["norm_type"]
    count(f"values/lp_pool{nd}d")
    note(repr(case))
    x = pool_input(case)
    if p not in (1, 2):
        x = np.abs(x)
    kw = {**case["args"], "layout": case["layout"]}
    fn = getattr(jaxconv, f"lp_pool{nd}d")
    got = maybe_jit(lambda x: fn(x, p, **kw), case["jitted"])(x)
    oracle = getattr(ref, f"lp_pool{nd}d")
    want = oracle(f64(x), p, **kw)
    terms, e = math.prod(case["k"]), eps(case["dtype"])
    if p == 1:  # a signed sum: absolute error against the sum of magnitudes
        bound = (terms + 3) * e * oracle(np.abs(f64(x)), 1, **kw)
    else:  # non-negative powers: relative (p-th powers and the root round too)
        bound = (terms + 2 + 2 * p) * e * np.abs(want)
    assert_within(got, want, bound, case["dtype"])


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(4)
@given(data=st.data())
def test_values_adaptive_pool_nd_match_reference(nd, data):
    """Bins that do not divide the input (and None sizes) against the oracle's
    floor/ceil bins; the max's values exactly, and its indices."""
    case = data.draw(adaptive_cases(nd))
    kind = data.draw(st.sampled_from(["avg", "max"]))
    name = f"adaptive_{kind}_pool{nd}d"
    count(f"values/{name}")
    note(repr(case))
    x = pool_input(case)
    size, layout = case["output_size"], case["layout"]
    fn, oracle = getattr(jaxconv, name), getattr(ref, name)
    if kind == "max":
        values, idx = maybe_jit(lambda x: fn(x, size, True, layout=layout), case["jitted"])(x)
        want, want_idx = oracle(f64(x), size, True, layout=layout)
        exact(values, want, case["dtype"])
        np.testing.assert_array_equal(np.asarray(idx), want_idx)
        return
    got = maybe_jit(lambda x: fn(x, size, layout=layout), case["jitted"])(x)
    want = oracle(f64(x), size, layout=layout)
    bound = (
        (math.prod(case["spatial"]) + 2)
        * eps(case["dtype"])
        * oracle(np.abs(f64(x)), size, layout=layout)
    )
    assert_within(got, want, bound, case["dtype"])


@compiled_examples(6)
@given(fold_cases())
def test_values_unfold_and_fold_match_reference(case):
    """unfold exactly (it moves values); fold (overlapping windows sum) within rounding."""
    count("values/unfold")
    count("values/fold")
    note(repr(case))
    g, dtype = case["geometry"], case["dtype"]
    x = draw_array(case["seed"], x_shape("NCHW", case["batch"], case["c"], case["size"]), dtype)
    got = maybe_jit(lambda x: jaxconv.unfold(x, **g), case["jitted"])(x)
    exact(got, ref.unfold(f64(x), **g), dtype)
    rows, blocks = fold_blocks(case)
    cols_shape = (rows, blocks) if case["batch"] is None else (case["batch"], rows, blocks)
    cols = draw_array(case["seed"] + 1, cols_shape, dtype)
    got = maybe_jit(lambda c: jaxconv.fold(c, case["size"], **g), case["jitted"])(cols)
    want = ref.fold(f64(cols), case["size"], **g)
    taps = rows // case["c"]  # one block per tap at most reaches a position: <= kh*kw terms
    magnitude = ref.fold(np.abs(f64(cols)), case["size"], **g)
    assert_within(got, want, (taps + 2) * eps(dtype) * magnitude, dtype)


@compiled_examples(6)
@given(shuffle_cases())
def test_values_pixel_shuffle_and_unshuffle_match_reference_and_torch(case):
    count("values/pixel_shuffle")
    count("values/pixel_unshuffle")
    r, layout, dtype = case["r"], case["layout"], case["dtype"]
    x = draw_array(case["seed"], shuffled_shape(case), dtype)
    got = maybe_jit(lambda x: jaxconv.pixel_shuffle(x, r, layout=layout), case["jitted"])(x)
    want = ref.pixel_shuffle(f64(x), r, layout=layout)
    exact(got, want, dtype)
    back = maybe_jit(lambda y: jaxconv.pixel_unshuffle(y, r, layout=layout), case["jitted"])(got)
    exact(back, ref.pixel_unshuffle(want, r, layout=layout), dtype)
    if layout == "NCHW" and dtype == "float32":
        np.testing.assert_array_equal(np.asarray(got), F.pixel_shuffle(torch_t(x), r).numpy())


# --------------------------------------------------------------------------- identities


@compiled_examples(6)
@given(fold_cases())
def test_fold_is_the_adjoint_of_unfold(case):
    """<unfold(x), y> == <x, fold(y)> for any x and y (float32, in float64 sums)."""
    count("identity/fold_adjoint")
    note(repr(case))
    g = case["geometry"]
    shape = x_shape("NCHW", case["batch"], case["c"], case["size"])
    x = draw_array(case["seed"], shape)
    rows, blocks = fold_blocks(case)
    y = draw_array(case["seed"] + 1, (rows, blocks) if case["batch"] is None
                   else (case["batch"], rows, blocks))  # fmt: skip
    ux = maybe_jit(lambda x: jaxconv.unfold(x, **g), case["jitted"])(x)
    fy = maybe_jit(lambda y: jaxconv.fold(y, case["size"], **g), case["jitted"])(y)
    lhs, rhs = vdot64(ux, y), vdot64(x, fy)
    scale = vdot64(np.abs(ux), np.abs(y)) + 1e-30
    assert abs(lhs - rhs) <= 64 * 2**-23 * scale, (lhs, rhs)


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_conv_transpose_is_the_vjp_of_conv(nd, data):
    """conv_transpose{n}d(y, w, ...) equals the VJP of conv{n}d(., w, ...) at y, for the
    same weight array, every layout, groups, dilation and output_padding < stride."""
    case = data.draw(conv_cases(nd, transpose=True, vjp=True))
    count(f"identity/conv_transpose{nd}d_vjp")
    note(repr(case))
    case = {**case, "dtype": "float32"}
    y, w, _ = conv_arrays(case, transpose=True)
    geo = {**case["geometry"], "layout": case["layout"]}
    op_pad = geo.pop("output_padding")
    got = maybe_jit(lambda y, w: getattr(jaxconv, f"conv_transpose{nd}d")(
        y, w, None, output_padding=op_pad, **geo), case["jitted"])(y, w)  # fmt: skip
    x0 = jnp.zeros(got.shape, jnp.float32)
    _, pullback = jax.vjp(lambda x: getattr(jaxconv, f"conv{nd}d")(x, w, **geo), x0)
    (want,) = pullback(jnp.asarray(y))
    assert want.shape == got.shape
    magnitude = np.asarray(getattr(ref, f"conv_transpose{nd}d")(
        np.abs(f64(y)), np.abs(f64(w)), None, output_padding=op_pad, **geo))  # fmt: skip
    terms = case["cg"] * math.prod(case["k"])
    bound = 2 * (terms + 2) * eps("float32") * magnitude
    assert_within(got, np.asarray(want, np.float64), bound, "float32")


@compiled_examples(6)
@given(shuffle_cases())
def test_pixel_unshuffle_inverts_pixel_shuffle(case):
    """Both ways round, bit for bit, with leading batch dims and either layout."""
    count("identity/pixel_shuffle_inverse")
    r, layout, dtype = case["r"], case["layout"], case["dtype"]
    shuffle = maybe_jit(lambda a: jaxconv.pixel_shuffle(a, r, layout=layout), case["jitted"])
    unshuffle = maybe_jit(lambda a: jaxconv.pixel_unshuffle(a, r, layout=layout), case["jitted"])
    x = draw_array(case["seed"], shuffled_shape(case), dtype)
    np.testing.assert_array_equal(np.asarray(unshuffle(shuffle(x))), x)
    z = np.asarray(shuffle(x))  # a valid unshuffle input of another content
    z = draw_array(case["seed"] + 1, z.shape, dtype)
    np.testing.assert_array_equal(np.asarray(shuffle(unshuffle(z))), z)


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_max_unpool_of_max_pool_keeps_exactly_the_maxima(nd, data):
    """Unpooling the pooled values at their indices, to the input's size: each position some
    window picked holds its input value, every other position is 0 (as torch's)."""
    case = data.draw(pool_cases("max", nd))
    count(f"identity/max_unpool{nd}d")
    note(repr(case))
    args = {**case["args"], "dilation": 1}  # unpooling has no dilation: its sizes assume 1
    x = pool_input(case)
    layout = case["layout"]
    values, idx = getattr(jaxconv, f"max_pool{nd}d")(x, return_indices=True, **args,
                                                     layout=layout)  # fmt: skip
    spatial = case["spatial"]
    unpool = getattr(jaxconv, f"max_unpool{nd}d")
    un_args = (args["kernel_size"], args["stride"] or None, args["padding"], spatial)
    got = maybe_jit(lambda v, i: unpool(v, i, *un_args, layout=layout), case["jitted"])(values, idx)
    got = np.asarray(got)
    xf, gf = to_first(x, layout, nd), to_first(got, layout, nd)
    lead = xf.shape[: xf.ndim - nd]
    planes_x, planes_g = xf.reshape(*lead, -1), gf.reshape(*lead, -1)
    picked = np.zeros(planes_x.shape, bool)
    np.put_along_axis(picked, to_first(idx, layout, nd).reshape(*lead, -1), True, -1)
    np.testing.assert_array_equal(planes_g[picked], planes_x[picked])
    assert not planes_g[~picked].any(), "a position no window picked is not 0"
    exact(got, getattr(ref, f"max_unpool{nd}d")(f64(values), np.asarray(idx), *un_args,
                                                layout=layout), case["dtype"])  # fmt: skip
    if case["dtype"] == "float32":
        # Spelled out: torch's max_unpool does not repeat a 1-tuple padding (IndexError).
        t_args = (case["k"], full(un_args[1], nd), full(un_args[2], nd), spatial)
        want = getattr(F, f"max_unpool{nd}d")(
            torch_t(to_first(values, layout, nd)),
            torch.from_numpy(np.asarray(to_first(idx, layout, nd), np.int64)),
            *t_args)  # fmt: skip
        np.testing.assert_array_equal(gf, want.numpy())


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(4)
@given(data=st.data())
def test_adaptive_pool_to_the_input_size_is_the_identity(nd, data):
    """Each bin is one element: the values are the input's, bit for bit, and the max's
    indices are each position's own flat index."""
    case = data.draw(adaptive_cases(nd))
    kind = data.draw(st.sampled_from(["avg", "max"]))
    count(f"identity/adaptive_{kind}_pool{nd}d")
    x = pool_input(case)
    size = draw_size = case["spatial"]
    if nd > 1 and case["seed"] % 2:
        draw_size = tuple(None if a % 2 else n for a, n in enumerate(size))  # None keeps it
    fn = getattr(jaxconv, f"adaptive_{kind}_pool{nd}d")
    layout = case["layout"]
    if kind == "avg":
        got = maybe_jit(lambda x: fn(x, draw_size, layout=layout), case["jitted"])(x)
        np.testing.assert_array_equal(np.asarray(got), x)
        assert np.asarray(got).dtype == x.dtype
        return
    got, idx = maybe_jit(lambda x: fn(x, draw_size, True, layout=layout), case["jitted"])(x)
    np.testing.assert_array_equal(np.asarray(got), x)
    plane = np.arange(math.prod(size)).reshape(size)
    want_idx = np.broadcast_to(plane, to_first(x, layout, nd).shape)
    np.testing.assert_array_equal(to_first(idx, layout, nd), want_idx)


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_avg_pool_of_a_constant_is_the_constant(nd, data):
    """count_include_pad=False (and no divisor_override): every window, padded or cut by
    ceil_mode, averages only input elements, so a constant input gives the constant."""
    case = data.draw(pool_cases("avg", nd))
    value = data.draw(st.floats(-100, 100, allow_nan=False, width=16))
    count(f"identity/avg_pool{nd}d_constant")
    args = {**case["args"], "count_include_pad": False}
    args.pop("divisor_override", None)
    dtype = case["dtype"]
    x = np.full(x_shape(case["layout"], case["batch"], case["c"], case["spatial"]),
                value, dtype=jnp.dtype(dtype))  # fmt: skip
    c = float(x.flat[0])  # the constant as the dtype holds it
    fn = getattr(jaxconv, f"avg_pool{nd}d")
    got = np.asarray(maybe_jit(lambda x: fn(x, **args, layout=case["layout"]), case["jitted"])(x))
    k = math.prod(case["k"])
    np.testing.assert_allclose(got.astype(np.float64), c, rtol=(k + 2) * eps(dtype), atol=0)


@pytest.mark.parametrize("nd", [1, 2, 3])
@compiled_examples(3)
@given(data=st.data())
def test_lp_pool_with_norm_one_is_a_sum_pool(nd, data):
    """Without ceil_mode, lp_pool{n}d(x, 1, k, s) sums each window (signs kept): it equals
    the depthwise conv{n}d with a ones kernel and the same stride."""
    case = data.draw(pool_cases("lp", nd))
    count(f"identity/lp_pool{nd}d_norm1")
    case = {**case, "dtype": "float32"}
    args = {**case["args"], "ceil_mode": False}
    x = pool_input(case)
    layout, c, k = case["layout"], case["c"], case["k"]
    got = maybe_jit(lambda x: getattr(jaxconv, f"lp_pool{nd}d")(x, 1, **args, layout=layout),
                    case["jitted"])(x)  # fmt: skip
    stride = args["stride"] or k
    ones = kernel_in(layout, np.ones((c, 1, *k), np.float32))
    want = getattr(jaxconv, f"conv{nd}d")(x, ones, None, stride, groups=c, layout=layout)
    magnitude = np.asarray(getattr(jaxconv, f"conv{nd}d")(np.abs(x), ones, None, stride,
                                                            groups=c, layout=layout))  # fmt: skip
    assert_within(got, np.asarray(want, np.float64),
                  2 * (math.prod(k) + 2) * eps("float32") * magnitude, "float32")  # fmt: skip


# --------------------------------------------------------------------------- jit == eager

JIT_OPS = ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool", "adaptive_avg_pool",
           "adaptive_max_pool", "max_unpool", "unfold", "fold", "pixel_shuffle")  # fmt: skip
EXACT_OPS = {"max_pool", "adaptive_max_pool", "max_unpool", "unfold", "pixel_shuffle"}


@pytest.mark.parametrize("op", JIT_OPS)
@compiled_examples(2)
@given(data=st.data())
def test_jit_equals_eager(op, data):
    """The same call under jax.jit and eagerly: bit for bit where the op selects or moves
    values; within a few ulps of the result's magnitude where it sums (XLA may fuse the
    jitted sums in another order)."""
    draw = data.draw
    if op in ("conv", "conv_transpose"):
        case = {**draw(conv_cases(transpose=op == "conv_transpose")), "dtype": "float32"}
        x, w, b = conv_arrays(case, transpose=op == "conv_transpose")
        fn = getattr(jaxconv, f"{op}{case['nd']}d")
        kw = {**case["geometry"], "layout": case["layout"]}
        call, inputs = (lambda x, w, b: fn(x, w, b, **kw)), (x, w, b)
    elif op in ("max_pool", "avg_pool", "lp_pool", "max_unpool"):
        kind = "max" if op == "max_unpool" else op.split("_")[0]
        case = {**draw(pool_cases(kind)), "dtype": "float32"}
        kw = {**case["args"], "layout": case["layout"]}
        x, nd = pool_input(case), case["nd"]
        if op == "max_unpool":
            kw["dilation"] = 1
            values, idx = getattr(jaxconv, f"max_pool{nd}d")(x, return_indices=True, **kw)
            fn = getattr(jaxconv, f"max_unpool{nd}d")
            call = lambda v, i: fn(
                v,
                i,
                kw["kernel_size"],
                kw["stride"] or None,  # noqa: E731
                kw["padding"],
                case["spatial"],
                layout=case["layout"],
            )
            inputs = (values, idx)
        else:
            fn = getattr(jaxconv, f"{op}{nd}d")
            lead = (case["norm_type"],) if op == "lp_pool" else ()
            x = np.abs(x) if op == "lp_pool" else x
            call, inputs = (lambda x: fn(x, *lead, **kw)), (x,)
    elif op.startswith("adaptive"):
        case = {**draw(adaptive_cases()), "dtype": "float32"}
        fn = getattr(jaxconv, f"{op}{case['nd']}d")
        call = lambda x: fn(x, case["output_size"], layout=case["layout"])  # noqa: E731
        inputs = (pool_input(case),)
    elif op in ("unfold", "fold"):
        case = {**draw(fold_cases()), "dtype": "float32"}
        g = case["geometry"]
        if op == "unfold":
            shape = x_shape("NCHW", case["batch"], case["c"], case["size"])
            call, inputs = (lambda x: jaxconv.unfold(x, **g)), (draw_array(case["seed"], shape),)
        else:
            rows, blocks = fold_blocks(case)
            shape = (rows, blocks) if case["batch"] is None else (case["batch"], rows, blocks)
            call = lambda c: jaxconv.fold(c, case["size"], **g)  # noqa: E731
            inputs = (draw_array(case["seed"], shape),)
    else:
        case = {**draw(shuffle_cases()), "dtype": "float32"}
        call = lambda x: jaxconv.pixel_shuffle(x, case["r"], layout=case["layout"])  # noqa: E731
        inputs = (draw_array(case["seed"], shuffled_shape(case)),)
    count(f"jit/{op}")
    event(op)
    eager, jitted = call(*inputs), jax.jit(call)(*inputs)
    for e, j in zip(jax.tree_util.tree_leaves(eager), jax.tree_util.tree_leaves(jitted),
                    strict=True):  # fmt: skip
        e, j = np.asarray(e), np.asarray(j)
        assert e.dtype == j.dtype and e.shape == j.shape
        if op in EXACT_OPS or not np.issubdtype(e.dtype, np.floating):
            np.testing.assert_array_equal(j, e)
        else:
            scale = float(np.abs(e).max(initial=0.0))
            np.testing.assert_allclose(j, e, rtol=1e-6, atol=1e-6 * scale)
