"""Convolution ops of chapter 6.2-6.4: the corr2d family and a general ``conv2d``.

Every op is a pure function of arrays; geometry (kernel size, stride, padding, dilation,
groups, layout) is static. Arguments are validated in plain Python on static shapes *before*
anything is traced, so bad input raises a ValueError/TypeError naming the argument rather than
an XLA error, and every op works unchanged under ``jax.jit``, ``jax.grad`` and ``jax.vmap``.

Two ways to compute the same function sit side by side so they can be compared and timed:

* the library path, ``jax.lax.conv_general_dilated`` (``corr2d``, ``conv2d(impl="lax")``);
* manual paths that spell out the chapter's definition in JAX: ``corr2d_vmap`` (vmap over
  output positions), ``corr2d_multi_in(impl="vmap")`` / ``corr2d_multi_in_out(impl="vmap")``
  (the chapter's sum over input channels and stack over output channels, as vmaps),
  ``conv1x1`` (one matrix product) and ``conv2d(impl="patches")`` (strided slices into
  patches, then one matrix product);
* ``conv2d(impl="vjp")``, the fast path for training loops: the same values as lax, with
  derivative rules written so that every gradient is a canonical forward convolution or a
  matrix product (see "custom-derivative path" below).

``conv2d``'s default ``impl="auto"`` picks the fastest measured path for the backend and the
geometry (see :func:`select_impl`).

Conventions follow the chapter (PyTorch): cross-correlation, NCHW inputs and OIHW kernels by
default; ``layout="NHWC"`` takes (N, H, W, C) inputs and HWIO kernels, ``layout="CHWN"``
(batch last, batched only) (C, H, W, N) inputs and HWIO kernels.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import (
    Padding,
    Pair,
    as_array,
    as_int,
    check_floating,
    check_layout,
    check_rank,
    positive_pair,
)
from jaxconv.shapes import conv_output_shape, conv_padding

Array = jax.Array

__all__ = [
    "IMPLEMENTATIONS",
    "ConvGeometry",
    "conv1x1",
    "conv2d",
    "conv_geometry",
    "convolve2d",
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_vmap",
    "select_impl",
    "vjp_applies",
]

# (input, kernel, output) dimension numbers for lax.conv_general_dilated, per layout.
_DIMENSION_NUMBERS = {
    "NCHW": ("NCHW", "OIHW", "NCHW"),
    "NHWC": ("NHWC", "HWIO", "NHWC"),
    "CHWN": ("CHWN", "HWIO", "CHWN"),
}


# --- validation helpers --------------------------------------------------------------------


def _as_float_array(value: Any, name: str) -> Array:
    """``value`` as a JAX array with a real floating dtype, or a TypeError naming ``name``."""
    value = as_array(value, name)
    check_floating(value, name)  # before jnp.asarray, so Python ints are refused too
    return jnp.asarray(value)


def _check_fits(x_shape: tuple[int, ...], k_shape: tuple[int, ...], x: str, k: str) -> Pair:
    """Valid-correlation output ``(oh, ow)`` of the last two axes; ValueError if K is larger."""
    (h, w), (kh, kw) = x_shape[-2:], k_shape[-2:]
    if min(kh, kw) < 1:
        raise ValueError(f"{k} must have a non-empty kernel, got shape {k_shape}")
    if kh > h or kw > w:
        raise ValueError(
            f"{k} of spatial size {(kh, kw)} is larger than {x} of spatial size {(h, w)} "
            f"(shapes {k_shape} and {x_shape})"
        )
    return (h - kh + 1, w - kw + 1)


def _check_impl(impl: Any, allowed: tuple[str, ...]) -> str:
    if impl not in allowed:
        raise ValueError(f"impl must be one of {allowed}, got {impl!r}")
    return impl


# --- the chapter's 2-D functions ----------------------------------------------------------


def corr2d(X: Any, K: Any) -> Array:
    """2-D cross-correlation (chapter 6.2.1): ``Y[i, j] = sum_ab X[i+a, j+b] * K[a, b]``.

    Args:
      X: (h, w) input, real floating dtype.
      K: (kh, kw) kernel, kh <= h and kw <= w.

    Returns:
      (h - kh + 1, w - kw + 1), through ``lax.conv_general_dilated``.
    """
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (2,))
    check_rank(K, "K", (2,))
    _check_fits(X.shape, K.shape, "X", "K")
    dtype = jnp.result_type(X, K)
    # (1, 1, h, w) * (1, 1, kh, kw) -> (1, 1, oh, ow)
    y = lax.conv_general_dilated(
        X[None, None].astype(dtype), K[None, None].astype(dtype), (1, 1), "VALID"
    )
    return y[0, 0]


def corr2d_vmap(X: Any, K: Any) -> Array:
    """The same function as :func:`corr2d`, computed the chapter's way without Python loops.

    Each output ``Y[i, j]`` is ``sum(X[i:i+kh, j:j+kw] * K)``; the function of ``(i, j)`` is
    vmapped over all output rows and columns (a dynamic slice of the window, then a sum).

    Args:
      X: (h, w) input, real floating dtype.
      K: (kh, kw) kernel, kh <= h and kw <= w.

    Returns:
      (h - kh + 1, w - kw + 1).
    """
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (2,))
    check_rank(K, "K", (2,))
    _check_fits(X.shape, K.shape, "X", "K")
    dtype = jnp.result_type(X, K)
    return _corr2d_windows(X.astype(dtype), K.astype(dtype))


@jax.custom_vjp
def _corr2d_windows(X: Array, K: Array) -> Array:
    """(h, w) * (kh, kw) -> (oh, ow): one window sum per output position, vmapped.

    Its gradients are our own (``_corr2d_windows_bwd``): JAX's reverse mode of the vmapped
    dynamic slices is a scatter per window, and under the multi-channel vmaps it was 16x
    slower than lax (docs/BENCHMARKS.md).
    """
    oh, ow = X.shape[0] - K.shape[0] + 1, X.shape[1] - K.shape[1] + 1

    def at(i: Array, j: Array) -> Array:
        window = lax.dynamic_slice(X, (i, j), K.shape)  # (kh, kw)
        return jnp.sum(window * K)

    rows, cols = jnp.arange(oh), jnp.arange(ow)
    # inner vmap over columns, outer over rows -> (oh, ow)
    return jax.vmap(lambda i: jax.vmap(lambda j: at(i, j))(cols))(rows)


def _corr2d_windows_fwd(X: Array, K: Array) -> tuple[Array, tuple[Array, Array]]:
    return _corr2d_windows(X, K), (X, K)


def _corr2d_windows_bwd(res: tuple[Array, Array], dY: Array) -> tuple[Array, Array]:
    """Both gradients are cross-correlations: ``dK = corr2d(X, dY)`` (kh, kw) and
    ``dX = corr2d(pad(dY, k - 1), flip(K))`` (h, w). For small kernels they are taken tap by
    tap (static slices and pads, no gather: 4.1 against 5.5 ms for the multi-channel vmaps),
    otherwise by the same window sums as the forward pass."""
    X, K = res
    (h, w), (kh, kw), (oh, ow) = X.shape, K.shape, dY.shape
    if kh * kw > 64:
        dK = _corr2d_windows(X, dY)
        dX = _corr2d_windows(jnp.pad(dY, ((kh - 1, kh - 1), (kw - 1, kw - 1))), jnp.flip(K))
        return dX, dK
    taps = [(a, b) for a in range(kh) for b in range(kw)]  # a loop over taps, not pixels
    dK = jnp.stack([jnp.sum(X[a : a + oh, b : b + ow] * dY) for a, b in taps]).reshape(kh, kw)
    dX = sum(jnp.pad(dY * K[a, b], ((a, h - oh - a), (b, w - ow - b))) for a, b in taps)
    return dX, dK


_corr2d_windows.defvjp(_corr2d_windows_fwd, _corr2d_windows_bwd)


def _multi_in_args(X: Any, K: Any, k_rank: int) -> tuple[Array, Array]:
    """Validate X (ci, h, w) and K (ci, kh, kw) (``k_rank`` 3) or (co, ci, kh, kw) (4)."""
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (3,))
    check_rank(K, "K", (k_rank,))
    axis = k_rank - 3  # K's input-channel axis
    if X.shape[0] != K.shape[axis]:
        raise ValueError(
            f"X has {X.shape[0]} input channels but K expects {K.shape[axis]} "
            f"(K.shape[{axis}]; shapes {X.shape} and {K.shape})"
        )
    _check_fits(X.shape, K.shape, "X", "K")
    return X, K


def corr2d_multi_in(X: Any, K: Any, *, impl: str = "lax") -> Array:
    """Multi-input-channel cross-correlation (chapter 6.4.1): correlate per channel, then sum.

    Args:
      X: (ci, h, w) input.
      K: (ci, kh, kw) kernel, one 2-D kernel per input channel.
      impl: ``"lax"`` (one ``conv_general_dilated``) or ``"vmap"`` (the chapter's
        ``sum(corr2d(x, k) for x, k in zip(X, K))``, as a vmap of :func:`corr2d_vmap`).

    Returns:
      (h - kh + 1, w - kw + 1).
    """
    _check_impl(impl, ("lax", "vmap"))
    X, K = _multi_in_args(X, K, 3)
    if impl == "vmap":
        return jnp.sum(jax.vmap(corr2d_vmap)(X, K), axis=0)
    # (1, ci, h, w) * (1, ci, kh, kw) -> (1, 1, oh, ow)
    return _conv_valid(X[None], K[None])[0, 0]


def corr2d_multi_in_out(X: Any, K: Any, *, impl: str = "lax") -> Array:
    """Multi-input, multi-output cross-correlation (chapter 6.4.2).

    Output channel ``o`` is ``corr2d_multi_in(X, K[o])``.

    Args:
      X: (ci, h, w) input.
      K: (co, ci, kh, kw) kernel.
      impl: ``"lax"`` (one ``conv_general_dilated``) or ``"vmap"`` (the chapter's
        ``stack([corr2d_multi_in(X, k) for k in K])``, as a vmap over ``K``).

    Returns:
      (co, h - kh + 1, w - kw + 1).
    """
    _check_impl(impl, ("lax", "vmap"))
    X, K = _multi_in_args(X, K, 4)
    if impl == "vmap":
        return jax.vmap(lambda k: corr2d_multi_in(X, k, impl="vmap"))(K)
    # (1, ci, h, w) * (co, ci, kh, kw) -> (1, co, oh, ow)
    return _conv_valid(X[None], K)[0]


def _conv_valid(x: Array, w: Array) -> Array:
    """NCHW/OIHW stride-1 unpadded correlation in the promoted dtype."""
    dtype = jnp.result_type(x, w)
    return lax.conv_general_dilated(x.astype(dtype), w.astype(dtype), (1, 1), "VALID")


def conv1x1(X: Any, K: Any, *, precision: Any = None) -> Array:
    """1x1 convolution (chapter 6.4.3) as ONE matrix product over channels.

    Every pixel's ``ci`` values are mapped to ``co`` values by the same ``(co, ci)`` matrix:
    a fully connected layer applied at each position.

    Args:
      X: (ci, h, w) or batched (n, ci, h, w) input.
      K: (co, ci, 1, 1) kernel.
      precision: passed to the matrix product (``None``: JAX's default).

    Returns:
      (co, h, w), or (n, co, h, w) for batched input.
    """
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (3, 4))
    check_rank(K, "K", (4,))
    if K.shape[2:] != (1, 1):
        raise ValueError(f"K must be a 1x1 kernel of shape (co, ci, 1, 1), got {K.shape}")
    ci = X.shape[-3]
    if K.shape[1] != ci:
        raise ValueError(
            f"X has {ci} input channels but K expects {K.shape[1]} (K.shape[1]; "
            f"shapes {X.shape} and {K.shape})"
        )
    dtype = jnp.result_type(X, K)
    *lead, h, w = X.shape
    x = X.astype(dtype).reshape(*lead, h * w)  # (..., ci, h*w)
    k = K.astype(dtype).reshape(K.shape[0], ci)  # (co, ci)
    y = jnp.einsum("oc,...cp->...op", k, x, precision=precision)  # (..., co, h*w)
    return y.reshape(*lead[:-1], K.shape[0], h, w)


def convolve2d(X: Any, K: Any) -> Array:
    """True 2-D convolution (chapter 6.2.5), 'valid' part: the kernel is flipped.

    ``Y[i, j] = sum_ab X[i+a, j+b] * K[kh-1-a, kw-1-b]``, i.e. ``corr2d(X, K[::-1, ::-1])``;
    deep-learning "convolution" layers compute :func:`corr2d` instead.

    Args:
      X: (h, w) input.
      K: (kh, kw) kernel, kh <= h and kw <= w.

    Returns:
      (h - kh + 1, w - kw + 1).
    """
    K = _as_float_array(K, "K")
    check_rank(K, "K", (2,))
    return corr2d(X, jnp.flip(K, axis=(0, 1)))


# --- general conv2d ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """Static, validated geometry of one ``conv2d`` call (hashable: a jit static argument).

    Sizes are ``(height, width)`` pairs; ``padding`` is ``((top, bottom), (left, right))``.
    """

    layout: str
    kernel: Pair
    stride: Pair
    padding: Padding
    dilation: Pair
    groups: int
    in_channels: int
    out_channels: int
    out_size: Pair


#: The most elements conv2d lets an intermediate array have (1 TiB of float32); beyond
#: ~2**62 XLA's shape arithmetic overflows and aborts the process (a crash, not an exception).
MAX_ELEMENTS = 2**38
MAX_PATCHES = 2**31


def conv_geometry(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: Any = 1,
    layout: str = "NCHW",
) -> ConvGeometry:
    """Validate ``conv2d``'s arguments on static shapes and return the resolved geometry.

    ``x_shape`` is (N, C, H, W) / (C, H, W) for NCHW, (N, H, W, C) / (H, W, C) for NHWC or
    (C, H, W, N) for CHWN; ``w_shape`` is OIHW (O, C // groups, kh, kw) for NCHW or HWIO
    (kh, kw, C // groups, O) for NHWC and CHWN. Raises ValueError/TypeError naming the
    offending argument.
    """
    layout = check_layout(layout)
    if layout == "CHWN" and len(x_shape) != 4:
        raise ValueError(f"x must have rank 4 (batched CHWN: C, H, W, N), got shape {x_shape}")
    if len(x_shape) not in (3, 4):
        raise ValueError(
            f"x must have rank 3 (unbatched) or 4 (batched {layout}), got shape {x_shape}"
        )
    if len(w_shape) != 4:
        want = "OIHW" if layout == "NCHW" else "HWIO"
        raise ValueError(f"w must have rank 4 ({want}), got shape {w_shape}")
    if layout == "NCHW":
        c, h, w = x_shape[-3:]
        o, cg, kh, kw = w_shape
    elif layout == "CHWN":
        c, h, w = x_shape[:3]
        kh, kw, cg, o = w_shape
    else:
        h, w, c = x_shape[-3:]
        kh, kw, cg, o = w_shape
    if min(w_shape) < 1:
        raise ValueError(f"w must have no empty dimension, got shape {w_shape}")
    if min(h, w) < 1:  # PyTorch refuses these too; only an empty batch or channel axis runs
        raise ValueError(f"x must have non-empty spatial axes (H, W), got shape {x_shape}")
    groups = as_int(groups, "groups")
    if groups < 1:
        raise ValueError(f"groups must be positive (>= 1), got {groups}")
    if c % groups:
        raise ValueError(
            f"x's in_channels ({c}) must be divisible by groups ({groups}); x shape {x_shape}"
        )
    if o % groups:
        raise ValueError(
            f"w's out_channels ({o}) must be divisible by groups ({groups}); w shape {w_shape}"
        )
    if c != cg * groups:
        raise ValueError(
            f"x has {c} channels but w expects {cg} * groups ({groups}) = {cg * groups} "
            f"({layout}: x shape {x_shape}, w shape {w_shape})"
        )
    stride = positive_pair(stride, "stride")
    dilation = positive_pair(dilation, "dilation")
    pads = conv_padding(padding, (kh, kw), stride, dilation)
    try:
        out_size = conv_output_shape((h, w), (kh, kw), stride, pads, dilation)
    except ValueError as err:
        raise ValueError(
            f"w is too large for x ({layout}: x shape {x_shape}, w shape {w_shape}): {err}"
        ) from None
    n = (x_shape[3] if layout == "CHWN" else x_shape[0]) if len(x_shape) == 4 else 1
    padded = n * c * (h + sum(pads[0])) * (w + sum(pads[1]))
    if max(padded, n * o * out_size[0] * out_size[1]) > MAX_ELEMENTS:
        raise ValueError(
            f"padding {padding!r} makes arrays of over 2**{MAX_ELEMENTS.bit_length() - 1} "
            f"elements (x shape {x_shape}): past that XLA aborts the process instead of raising"
        )
    return ConvGeometry(layout, (kh, kw), stride, pads, dilation, groups, c, o, out_size)


def _conv_lax(x: Array, w: Array, g: ConvGeometry, precision: Any) -> Array:
    """Batched conv through XLA's convolution."""
    return lax.conv_general_dilated(
        x,
        w,
        window_strides=g.stride,
        padding=g.padding,
        rhs_dilation=g.dilation,
        dimension_numbers=_DIMENSION_NUMBERS[g.layout],
        feature_group_count=g.groups,
        precision=precision,
    )


def _patch_slices(x: Array, g: ConvGeometry, spatial: tuple[int, int]) -> list[Array]:
    """Zero-pad ``x`` and return one strided slice per kernel tap, each the tap's view of
    every output position: kh*kw arrays shaped like ``x`` with (H, W) -> (oh, ow)."""
    ah, aw = spatial  # the H and W axes of x
    config = [(0, 0, 0)] * x.ndim
    config[ah] = (*g.padding[0], 0)
    config[aw] = (*g.padding[1], 0)
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = g.kernel, g.stride, g.dilation, g.out_size
    taps = []
    for a in range(kh):  # a loop over kernel taps, not pixels: kh*kw static slices
        for b in range(kw):
            start = [0] * x.ndim
            limit = list(x.shape)
            strides = [1] * x.ndim
            start[ah], limit[ah], strides[ah] = a * dh, a * dh + (oh - 1) * sh + 1, sh
            start[aw], limit[aw], strides[aw] = b * dw, b * dw + (ow - 1) * sw + 1, sw
            taps.append(lax.slice(x, start, limit, strides))
    return taps


def _conv_patches(x: Array, w: Array, g: ConvGeometry, precision: Any) -> Array:
    """Batched conv as explicit patches (strided slices) and one grouped matrix product."""
    if g.layout == "CHWN":  # the NHWC product, between transposes
        y = _conv_patches(x.transpose(3, 1, 2, 0), w, dataclasses.replace(g, layout="NHWC"),
                          precision)  # fmt: skip
        return y.transpose(3, 1, 2, 0)
    n, G = x.shape[0], g.groups
    (kh, kw), (oh, ow) = g.kernel, g.out_size
    cg, og = g.in_channels // G, g.out_channels // G
    if g.layout == "NCHW":
        p = jnp.stack(_patch_slices(x, g, (2, 3)), axis=2)  # (N, C, kh*kw, oh, ow)
        p = p.reshape(n, G, cg, kh * kw, oh, ow)
        k = w.reshape(G, og, cg, kh * kw)  # OIHW -> (G, Og, Cg, kh*kw)
        y = jnp.einsum("ngckhw,gock->ngohw", p, k, precision=precision)
        return y.reshape(n, g.out_channels, oh, ow)
    p = jnp.stack(_patch_slices(x, g, (1, 2)), axis=3)  # (N, oh, ow, kh*kw, C)
    p = p.reshape(n, oh, ow, kh * kw, G, cg)
    k = w.reshape(kh * kw, cg, G, og)  # HWIO -> (kh*kw, Cg, G, Og)
    y = jnp.einsum("nhwkgc,kcgo->nhwgo", p, k, precision=precision)
    return y.reshape(n, oh, ow, g.out_channels)


# --- custom-derivative path ("vjp") -----------------------------------------------------------
#
# Why: inside lax.scan / while loops (a whole training epoch in one jit) XLA:CPU keeps the
# convolutions that JAX's autodiff emits for the input and weight gradients in non-canonical
# dimension orders (dim_labels b01f_01oi->b01f and f01b_i01o->01bf), and those miss its fast
# convolution kernels: LeNet conv2's forward+backward took 328 ms a step inside a scan against
# 52 ms in a plain jit, a 64-channel 56x56 layer 2.6 s against 84 ms (one core;
# docs/BENCHMARKS.md). Outside loops XLA rewrites them into canonical form itself. On an H100
# the same path is also a little faster (a LeNet epoch 62 against 66 ms).
#
# How: a custom_jvp whose tangent is written so that its *transpose* (what reverse mode runs)
# is canonical: dimension numbers arranged so that JAX's transpose rule for the convolution
# lands on NHWC/HWIO/NHWC, or a matrix product over explicit patches. Forward mode works too
# (jax.jvp, jacfwd: the tangent itself is an ordinary, if slower, convolution), and the rule
# is itself differentiable, so higher derivatives work as for lax.

_NHWC = _DIMENSION_NUMBERS["NHWC"]
#: Bytes an explicit patch matrix may take before the convolution form is used instead.
_PATCH_BYTES = 64 * 2**20


def _pad_hw(x: Array, pads: Padding) -> Array:
    """Zero-pad the H and W axes (1 and 2) of an NHWC or CHWN array."""
    (top, bottom), (left, right) = pads
    zero = jnp.zeros((), x.dtype)
    return lax.pad(x, zero, [(0, 0, 0), (top, bottom, 0), (left, right, 0), (0, 0, 0)])


def _out_hw(x_shape: tuple[int, ...], k_hw: tuple[int, ...], pads: Padding) -> Pair:
    """Stride-1, dilation-1 output (oh, ow) of an NHWC or CHWN input."""
    return (
        x_shape[1] + sum(pads[0]) - k_hw[0] + 1,
        x_shape[2] + sum(pads[1]) - k_hw[1] + 1,
    )


def _taps(x: Array, k_hw: tuple[int, ...], pads: Padding) -> list[Array]:
    """Tap (a, b) of every output position: kh*kw slices of the padded input, (N, oh, ow, C)
    for NHWC, (C, oh, ow, N) for CHWN."""
    (kh, kw), (oh, ow) = k_hw, _out_hw(x.shape, k_hw, pads)
    xp = _pad_hw(x, pads)
    return [xp[:, a : a + oh, b : b + ow, :] for a in range(kh) for b in range(kw)]


def _patch_bytes(x: Array, k_hw: tuple[int, ...], pads: Padding) -> int:
    """Bytes of the patch matrix of an NHWC or CHWN input (N * C * oh * ow * kh * kw)."""
    oh, ow = _out_hw(x.shape, k_hw, pads)
    return x.shape[0] * oh * ow * k_hw[0] * k_hw[1] * x.shape[3] * x.dtype.itemsize


def _tap_sum(taps: list[Array], w: Array, channel_axis: int) -> Array:
    """One input channel: the sum over taps of each (single-channel) tap times the tap's
    (Cout,) weights, laid along ``channel_axis`` (3 for NHWC, 0 for CHWN)."""
    kw, shape = w.shape[1], [1, 1, 1, 1]
    shape[channel_axis] = w.shape[3]
    return sum(t * w[i // kw, i % kw, 0].reshape(shape) for i, t in enumerate(taps))


def _forward_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """The values. One input channel: the sum over taps of a shifted slice times the tap's
    (Cout,) weights, one fused elementwise loop (LeNet's first layer: 1.1 ms against 19 ms
    for XLA:CPU's convolution, whose kernels are poor for C == 1). Otherwise lax."""
    kh, kw, ci, _ = w.shape
    if ci == 1:
        return _tap_sum(_taps(x, (kh, kw), pads), w, 3)  # taps (N, oh, ow, 1)
    return lax.conv_general_dilated(
        x, w, (1, 1), pads, dimension_numbers=_NHWC, precision=precision
    )


def _tangent_from_input(tx: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """conv(tx, w), written so that its transpose (the input gradient) is canonical.

    Few channels (Cin * Cout <= 256, LeNet): explicit patches times the kernel matrix; the
    transpose is ``dy @ W^T`` and a sum of shifted pads (col2im), one fusion. Otherwise a
    convolution whose kernel is given as HWOI: JAX's transpose swaps I and O, so the input
    gradient is a forward NHWC/HWIO convolution with the flipped kernel.
    """
    kh, kw, ci, co = w.shape
    if ci * co <= 256 and _patch_bytes(tx, (kh, kw), pads) <= _PATCH_BYTES:
        cols = jnp.stack(_taps(tx, (kh, kw), pads), axis=3)  # (N, oh, ow, kh*kw, Cin)
        cols = cols.reshape(*cols.shape[:3], kh * kw * ci)
        return jnp.dot(cols, w.reshape(kh * kw * ci, co), precision=precision)
    return lax.conv_general_dilated(
        tx,
        w.transpose(0, 1, 3, 2),  # (kh, kw, Cout, Cin)
        (1, 1),
        pads,
        dimension_numbers=("NHWC", "HWOI", "NHWC"),
        precision=precision,
    )


def _tangent_from_kernel(x: Array, tw: Array, pads: Padding, precision: Any) -> Array:
    """conv(x, tw), written so that its transpose (the weight gradient) is canonical.

    One input channel: the taps as a (kh*kw, M) matrix times tw as (kh*kw, Cout); the
    transpose is one (kh*kw, M) @ (M, Cout) product. Otherwise a convolution of x as
    (C, H, W, N) ("CHWN") with tw as (Cin, kh, kw, Cout) ("IHWO") into (oh, ow, N, Cout)
    ("HWNC"): JAX's transpose swaps batch and feature of x and of the output, which makes the
    weight gradient a forward NHWC/HWIO convolution (batch = Cin, feature = N).
    """
    n, kh, kw, ci, co = x.shape[0], *tw.shape
    oh, ow = _out_hw(x.shape, (kh, kw), pads)
    if ci == 1 and _patch_bytes(x, (kh, kw), pads) <= _PATCH_BYTES:
        cols = jnp.stack([t[..., 0] for t in _taps(x, (kh, kw), pads)])  # (kh*kw, N, oh, ow)
        y = jnp.dot(cols.reshape(kh * kw, -1).T, tw.reshape(kh * kw, co), precision=precision)
        return y.reshape(n, oh, ow, co)
    y = lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0),  # (C, H, W, N)
        tw.transpose(2, 0, 1, 3),  # (Cin, kh, kw, Cout)
        (1, 1),
        pads,
        dimension_numbers=("CHWN", "IHWO", "HWNC"),
        precision=precision,
    )  # (oh, ow, N, Cout)
    return y.transpose(2, 0, 1, 3)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def _conv_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """Stride 1, dilation 1, groups 1: x (N, H, W, Cin), w (kh, kw, Cin, Cout) ->
    (N, oh, ow, Cout); values from :func:`_forward_nhwc`, derivatives from ``_conv_nhwc_jvp``."""
    return _forward_nhwc(x, w, pads, precision)


@functools.partial(_conv_nhwc.defjvp, symbolic_zeros=True)
def _conv_nhwc_jvp(
    pads: Padding, precision: Any, primals: tuple[Array, Array], tangents: tuple[Any, Any]
) -> tuple[Array, Array]:
    (x, w), (tx, tw) = primals, tangents
    y = _forward_nhwc(x, w, pads, precision)
    terms = []  # a symbolic-zero tangent (e.g. the input images) costs nothing
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        terms.append(_tangent_from_input(tx, w, pads, precision))
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        terms.append(_tangent_from_kernel(x, tw, pads, precision))
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


# --- CHWN (batch last): patch matrices and matrix products, reverse mode ---------------------
#
# Why: with the batch as the minor axis, every kernel tap's view of the input is a run of
# whole rows of N contiguous elements, so the patch matrix (im2col) is kh*kw*C slabs copied
# side by side, its transpose (col2im) a sum of shifted slabs, and the forward pass and both
# gradients are matrix products with a long (oh*ow*N) free or contracted axis, where XLA:CPU's
# matmuls run near peak. In NHWC the same copies move runs of C elements (6 for LeNet's
# conv2). A LeNet training epoch on one core: 3.3-3.5 s against 4.4-5.2 s in NHWC, PyTorch
# 3.7-4.4 s (docs/BENCHMARKS.md).
#
# How: a custom_vjp, because the orientation of each product matters and JAX's transpose of a
# dot_general always puts the cotangent first: the weight gradient would come out as
# dy @ cols^T with the 15 MB patch matrix transposed by a copy, the input gradient as
# (dy^T @ W^T)^T with the patch-sized result transposed again (36 against 17 ms a step when
# written as a custom_jvp). Here the backward pass computes ``cols . dy`` with the patch
# matrix as the left operand and ``W @ dy`` straight into the patch matrix's layout, then an
# in-place col2im. The cost: forward-mode differentiation (jax.jvp, jacfwd) of this path
# raises TypeError (conv2d says which impl to use when the jvp reaches it directly; under an
# outer jit it is JAX's "can't apply forward-mode autodiff (jvp) to a custom_vjp function");
# use layout="NHWC" or impl="lax" there. Reverse mode works to any order (the backward pass
# is plain jnp, itself differentiable).


def _col2im_chwn(dcols: Array, x_shape: tuple[int, ...], k_hw: tuple[int, ...],
                 pads: Padding) -> Array:  # fmt: skip
    """The transpose of the patch matrix (the taps of :func:`_taps` stacked on the first
    axis): (kh*kw*C, oh, ow, N) -> x_shape (C, H, W, N), each tap's slab added back at its
    offset.

    As kh*kw in-place slice updates of one buffer, which XLA:CPU runs as contiguous
    read-add-writes: LeNet conv2's col2im 0.45 against 1.95 ms as one sum of shifted pads
    (that fusion checks every pad's bounds per element)."""
    (kh, kw), (top, bottom), (left, right) = k_hw, *pads
    c, h, w, n = x_shape
    oh, ow = dcols.shape[1:3]
    out = jnp.zeros((c, h + top + bottom, w + left + right, n), dcols.dtype)
    for i, tap in enumerate(jnp.split(dcols, kh * kw, axis=0)):
        a, b = divmod(i, kw)
        out = out.at[:, a : a + oh, b : b + ow, :].add(tap)
    return out[:, top : top + h, left : left + w, :]


def _forward_chwn(
    x: Array, w: Array, pads: Padding, precision: Any
) -> tuple[Array, tuple[Array, ...]]:
    """The values (Cout, oh, ow, N) = W^T @ cols, and the patch matrix in row blocks (kept
    for the weight gradient). One input channel too: a tap sum would fuse into its consumers
    (ReLU, the max pool's selection), which XLA then recompute it in, 1.5 ms a LeNet step
    more."""
    kh, kw, ci, co = w.shape
    taps = _taps(x, (kh, kw), pads)
    oh = taps[0].shape[1]
    blocks = _row_blocks(oh)
    cols = tuple(jnp.concatenate([t[:, r0:r1] for t in taps], axis=0) for r0, r1 in blocks)
    # W^T as an array of its own: folded into the product as a transposed operand, XLA:CPU
    # runs it with Eigen instead of YNNPACK (LeNet's conv1: 2.1 against 1.4 ms)
    wt = lax.optimization_barrier(w.reshape(kh * kw * ci, co).T)
    ys = [lax.dot_general(wt, c, (((1,), (0,)), ((), ())), precision=precision) for c in cols]
    return jnp.concatenate(ys, axis=1), cols


#: Output-row blocks of the CHWN patch matrix: one product each, independent, so XLA:CPU can
#: run them on different cores (its YNNPACK products do not split a long contraction).
#: LeNet epoch on 2 cores: 2.04-2.17 s with 2 blocks, 2.18 s with 4, 2.41 s with 1; one
#: core: the same with 1 or 2 (docs/BENCHMARKS.md).
_ROW_BLOCKS = 2


def _row_blocks(oh: int) -> list[tuple[int, int]]:
    """``_ROW_BLOCKS`` contiguous [start, stop) ranges covering ``range(oh)``."""
    b = max(1, min(_ROW_BLOCKS, oh))
    edges = [round(i * oh / b) for i in range(b + 1)]
    return [(edges[i], edges[i + 1]) for i in range(b)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_chwn(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """Stride 1, dilation 1, groups 1: x (Cin, H, W, N), w (kh, kw, Cin, Cout) ->
    (Cout, oh, ow, N).

    Undifferentiated calls (evaluation) with one input channel take the tap sum: no patch
    matrix to allocate (LeNet's conv1 forward alone, one core: 1.3 against 18.5 ms, most of it
    fresh pages for the 20 MB matrix)."""
    kh, kw, ci, _ = w.shape
    if ci == 1:
        return _tap_sum(_taps(x, (kh, kw), pads), w, 0)  # taps (1, oh, ow, N)
    return _forward_chwn(x, w, pads, precision)[0]


def _conv_chwn_fwd(
    x: Array, w: Array, pads: Padding, precision: Any
) -> tuple[Array, tuple[tuple[Array, ...], Array]]:
    y, cols = _forward_chwn(x, w, pads, precision)
    return y, (cols, w)


def _conv_chwn_bwd(
    pads: Padding, precision: Any, res: tuple[tuple[Array, ...], Array], dy: Array
) -> tuple[Array, Array]:
    cols, w = res
    kh, kw, ci, co = w.shape
    oh, (_, _, ow, n) = dy.shape[1], cols[0].shape
    x_shape = (ci, oh + kh - 1 - sum(pads[0]), ow + kw - 1 - sum(pads[1]), n)
    wm = w.reshape(kh * kw * ci, co)
    # per row block, cols (kh*kw*Cin, rows, ow, N) . dy (Cout, rows, ow, N) -> (kh*kw*Cin,
    # Cout): the patch matrix is the left operand, so XLA never transposes it (at most dy,
    # kh*kw*Cin/Cout times smaller)
    dw = sum(
        lax.dot_general(c, dy[:, r0:r1], (((1, 2, 3), (1, 2, 3)), ((), ())), precision=precision)
        for c, (r0, r1) in zip(cols, _row_blocks(oh), strict=True)
    )
    dcols = lax.dot_general(wm, dy, (((1,), (0,)), ((), ())), precision=precision)
    dx = _col2im_chwn(dcols, x_shape, (kh, kw), pads)  # XLA drops it where unused (images)
    return dx, dw.reshape(w.shape)


_conv_chwn.defvjp(_conv_chwn_fwd, _conv_chwn_bwd)


#: Bytes a CHWN patch matrix may take (it is kept for the backward pass) before the NHWC rule
#: is used instead: LeNet's conv1 at batch 1024 needs 80 MB, at 4096 320 MB.
_CHWN_PATCH_BYTES = 2**30


def _chwn_uses_patches(x: Array, g: ConvGeometry) -> bool:
    """Whether a CHWN call runs ``_conv_chwn``: few channels (Cin * Cout <= 256, as the NHWC
    rule's col2im) and a patch matrix under ``_CHWN_PATCH_BYTES``. Wider layers are faster
    through the NHWC rule between transposes: a 64 -> 64 3x3 layer on 8x56x56,
    forward+backward per scan step, 35 against 51 ms (one core; docs/BENCHMARKS.md). Narrow
    ones are not: there XLA fuses the producer into the transposes (LeNet's evaluation at
    batch 1000 took 0.9 s for 10,000 images that way, against 0.3 s)."""
    small = g.in_channels * g.out_channels <= 256
    return small and _patch_bytes(x, g.kernel, g.padding) <= _CHWN_PATCH_BYTES


def vjp_applies(g: ConvGeometry) -> bool:
    """Whether ``impl="vjp"`` has its own rule for this geometry: stride 1, dilation 1 and
    groups 1 (any padding); for other geometries it computes through lax."""
    return g.stride == (1, 1) and g.dilation == (1, 1) and g.groups == 1


def _conv_vjp(x: Array, w: Array, g: ConvGeometry, precision: Any) -> Array:
    """Batched conv through ``_conv_nhwc`` (NCHW is transposed there and back; XLA folds the
    transposes into neighbouring fusions) or, for CHWN, ``_conv_chwn`` (few channels, see
    :func:`_chwn_uses_patches`; others through ``_conv_nhwc``); lax for geometries it does
    not cover."""
    if not vjp_applies(g):
        return _conv_lax(x, w, g, precision)
    if g.layout == "NHWC":
        return _conv_nhwc(x, w, g.padding, precision)
    if g.layout == "CHWN":
        if _chwn_uses_patches(x, g):
            return _conv_chwn(x, w, g.padding, precision)
        y = _conv_nhwc(x.transpose(3, 1, 2, 0), w, g.padding, precision)
        return y.transpose(3, 1, 2, 0)
    y = _conv_nhwc(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), g.padding, precision)
    return y.transpose(0, 3, 1, 2)


def select_impl(g: ConvGeometry, dtype: Any, backend: str | None = None) -> str:
    """The implementation ``impl="auto"`` runs for this geometry, dtype and backend.

    CPU and GPU: ``"vjp"`` wherever it applies (stride 1, dilation 1, groups 1, each
    padding smaller than the kernel, float32/float64), else ``"lax"``. TPU (not measured):
    ``"lax"``. Measured (docs/BENCHMARKS.md has the tables; ms, lax vs vjp):

    - XLA:CPU, one core each: a conv's forward+backward *inside lax.scan*, where a training
      epoch runs it: LeNet conv1 291 vs 82, conv2 328 vs 22, ResNet 64->64 56x56 2593 vs 74
      (lax's gradient convolutions fall to a slow path in loops). In a plain jit the two are
      close (conv1 49 vs 60, conv2 52 vs 45, ResNet 84 vs 100), and a call cannot know
      whether it is traced inside a loop, so vjp wherever it applies. LeNet epoch: lax 9.3x
      PyTorch's time, vjp 1.03x.
    - H100: LeNet epoch at batch 256, 66.0 vs 60.8 (batch 1024: 38.5 vs 33.8); per step in
      scan, conv1 0.33 vs 0.16, conv2 0.17 vs 0.15, ResNet 0.20 vs 0.18.

    float16/bfloat16 stay on lax (the one-channel tap sum would accumulate in low
    precision), and padding >= kernel (outputs made of padding) too.
    """
    backend = jax.default_backend() if backend is None else backend
    if backend not in ("cpu", "gpu", "cuda", "rocm") or not vjp_applies(g):
        return "lax"
    if jnp.dtype(dtype) not in (jnp.float32, jnp.float64):
        return "lax"
    (top, bottom), (left, right) = g.padding
    if max(top, bottom) >= g.kernel[0] or max(left, right) >= g.kernel[1]:
        return "lax"
    return "vjp"


def _conv_auto(x: Array, w: Array, g: ConvGeometry, precision: Any) -> Array:
    """The path :func:`select_impl` picks for the default backend (at trace time)."""
    return IMPLEMENTATIONS[select_impl(g, x.dtype)](x, w, g, precision)


ConvImpl = Callable[[Array, Array, ConvGeometry, Any], Array]

#: ``conv2d`` implementations by name. Each takes a *batched* input in ``geom.layout``, the
#: kernel (OIHW or HWIO), the validated :class:`ConvGeometry` and a precision, and returns the
#: batched output without bias. Add an entry here to make a new path selectable by ``impl``.
IMPLEMENTATIONS: dict[str, ConvImpl] = {
    "lax": _conv_lax,
    "patches": _conv_patches,
    "vjp": _conv_vjp,
    "auto": _conv_auto,
}


@functools.partial(jax.jit, static_argnames=("geom", "impl", "precision"))
def _conv2d_apply(
    x: Array, w: Array, b: Array | None, geom: ConvGeometry, impl: str, precision: Any
) -> Array:
    # Jitted on its static geometry so that eager calls of the manual path run as one
    # compiled program instead of op by op; under an outer jit this is simply inlined.
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    y = IMPLEMENTATIONS[impl](x, w, geom, precision)
    if b is not None:
        channel_axis = {"NCHW": 1, "NHWC": 3, "CHWN": 0}[geom.layout]
        y = y + jnp.expand_dims(b, [a for a in range(4) if a != channel_axis])
    return y[0] if unbatched else y


def conv2d(
    x: Any,
    w: Any,
    b: Any = None,
    *,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    layout: str = "NCHW",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    """2-D convolution layer (cross-correlation), as ``torch.nn.functional.conv2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); NHWC: (N, H, W, C) or (H, W, C); CHWN:
        (C, H, W, N), batched only.
      w: OIHW kernel (O, C // groups, kh, kw); NHWC and CHWN: HWIO (kh, kw, C // groups, O).
      b: optional bias of shape (O,), added to every position of output channel o.
      stride: int or (sh, sw), >= 1.
      padding: int, (ph, pw) (each side), ((top, bottom), (left, right)), ``"valid"`` (none)
        or ``"same"`` (stride 1 only; output size = input size; PyTorch's split, the odd
        extra row/column at the bottom/right). Zero padding.
      dilation: int or (dh, dw), >= 1; the kernel's taps are ``d`` apart.
      groups: input and output channels are split into ``groups`` blocks; block g of the
        output sees only block g of the input. Must divide C and O.
      layout: ``"NCHW"`` (the chapter's, with OIHW kernels), ``"NHWC"`` (HWIO kernels) or
        ``"CHWN"`` (HWIO kernels; batch last: XLA:CPU's fastest for LeNet, see
        :func:`select_impl`).
      impl: a key of :data:`IMPLEMENTATIONS`, all the same function: ``"auto"`` (default:
        the fastest measured path for the backend and geometry, see :func:`select_impl`),
        ``"lax"`` (``lax.conv_general_dilated``), ``"patches"`` (strided slices into
        patches, then one matrix product) or ``"vjp"`` (gradients that stay fast inside
        loops; stride 1, dilation 1, groups 1, lax otherwise). With NaN/inf weights, lax
        skips zero padding while patches and the one-channel vjp path multiply it.
      precision: ``lax.Precision`` or None (JAX's default), passed to the conv / product.

    Returns:
      (N, O, oh, ow) (unbatched: (O, oh, ow); NHWC: channels last; CHWN: (O, oh, ow, N)) in
      the promoted dtype of x, w and b, where per axis
      ``o = floor((n + p_total - d*(k-1) - 1 + s) / s)``, see
      :func:`jaxconv.shapes.conv_output_shape`.

    Raises:
      TypeError: non-floating x, w or b; non-int geometry; forward-mode differentiation of
        the CHWN ``vjp`` path (traced inside this call).
      ValueError: bad rank, channel/groups mismatch, non-positive stride/dilation/groups,
        negative padding, unknown padding string, layout or impl, kernel larger than the
        padded input, bias not of shape (O,).
    """
    _check_impl(impl, tuple(IMPLEMENTATIONS))
    layout = check_layout(layout)
    x, w = _as_float_array(x, "x"), _as_float_array(w, "w")
    geom = conv_geometry(
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    dtype = jnp.result_type(x, w)
    if b is not None:
        b = _as_float_array(b, "b")
        if b.shape != (geom.out_channels,):
            raise ValueError(
                f"b must have shape (out_channels,) = ({geom.out_channels},), got {b.shape}"
            )
        dtype = jnp.result_type(dtype, b)
        b = b.astype(dtype)
    if impl == "patches":
        n = x.shape[0] if x.ndim == 4 else 1
        cols = n * geom.out_size[0] * geom.out_size[1] * w.size // geom.out_channels
        if cols > MAX_PATCHES:  # seen: an XLA:CPU abort (GemvRewriter) at 2**37 elements
            raise ValueError(
                f"impl='patches' would build a patches matrix of {cols} elements (over 2**31; "
                f"x shape {x.shape}, padding {padding!r}): use impl='lax'"
            )
    try:
        return _conv2d_apply(x.astype(dtype), w.astype(dtype), b, geom, impl, precision)
    except TypeError as err:  # JAX's words for jvp of a custom_vjp, made specific
        if geom.layout == "CHWN" and "forward-mode" in str(err):
            raise TypeError(
                f"conv2d(layout='CHWN', impl={impl!r}) differentiates in reverse mode only "
                "(jax.grad, jax.vjp): for forward-mode (jax.jvp, jax.jacfwd) use impl='lax' or "
                "layout='NHWC'"
            ) from None
        raise
