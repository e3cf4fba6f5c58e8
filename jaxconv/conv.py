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
  patches, then one matrix product).

Conventions follow the chapter (PyTorch): cross-correlation, NCHW inputs and OIHW kernels by
default; ``layout="NHWC"`` takes (N, H, W, C) inputs and HWIO kernels.
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
]

# (input, kernel, output) dimension numbers for lax.conv_general_dilated, per layout.
_DIMENSION_NUMBERS = {
    "NCHW": ("NCHW", "OIHW", "NCHW"),
    "NHWC": ("NHWC", "HWIO", "NHWC"),
}


# --- validation helpers --------------------------------------------------------------------


def _as_float_array(value: Any, name: str) -> Array:
    """``value`` as a JAX array with a real floating dtype, or a TypeError naming ``name``."""
    check_floating(value, name)  # before asarray, so Python ints are refused too
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
    oh, ow = _check_fits(X.shape, K.shape, "X", "K")
    dtype = jnp.result_type(X, K)
    X, K = X.astype(dtype), K.astype(dtype)

    def at(i: Array, j: Array) -> Array:
        window = lax.dynamic_slice(X, (i, j), K.shape)  # (kh, kw)
        return jnp.sum(window * K)

    rows, cols = jnp.arange(oh), jnp.arange(ow)
    # inner vmap over columns, outer over rows -> (oh, ow)
    return jax.vmap(lambda i: jax.vmap(lambda j: at(i, j))(cols))(rows)


def _multi_in_args(X: Any, K: Any) -> tuple[Array, Array]:
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (3,))
    check_rank(K, "K", (3,))
    if X.shape[0] != K.shape[0]:
        raise ValueError(
            f"X has {X.shape[0]} input channels but K has {K.shape[0]} "
            f"(shapes {X.shape} and {K.shape})"
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
    X, K = _multi_in_args(X, K)
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
    X, K = _as_float_array(X, "X"), _as_float_array(K, "K")
    check_rank(X, "X", (3,))
    check_rank(K, "K", (4,))
    if X.shape[0] != K.shape[1]:
        raise ValueError(
            f"X has {X.shape[0]} input channels but K expects {K.shape[1]} (K.shape[1]; "
            f"shapes {X.shape} and {K.shape})"
        )
    _check_fits(X.shape, K.shape, "X", "K")
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

    ``x_shape`` is (N, C, H, W) / (C, H, W) for NCHW or (N, H, W, C) / (H, W, C) for NHWC;
    ``w_shape`` is OIHW (O, C // groups, kh, kw) for NCHW or HWIO (kh, kw, C // groups, O)
    for NHWC. Raises ValueError/TypeError naming the offending argument.
    """
    layout = check_layout(layout)
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
    else:
        h, w, c = x_shape[-3:]
        kh, kw, cg, o = w_shape
    if min(w_shape) < 1:
        raise ValueError(f"w must have no empty dimension, got shape {w_shape}")
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


ConvImpl = Callable[[Array, Array, ConvGeometry, Any], Array]

#: ``conv2d`` implementations by name. Each takes a *batched* input in ``geom.layout``, the
#: kernel (OIHW or HWIO), the validated :class:`ConvGeometry` and a precision, and returns the
#: batched output without bias. Add an entry here to make a new path selectable by ``impl``.
IMPLEMENTATIONS: dict[str, ConvImpl] = {
    "lax": _conv_lax,
    "patches": _conv_patches,
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
        y = y + (b[:, None, None] if geom.layout == "NCHW" else b)
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
    impl: str = "lax",
    precision: Any = None,
) -> Array:
    """2-D convolution layer (cross-correlation), as ``torch.nn.functional.conv2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); NHWC: (N, H, W, C) or (H, W, C).
      w: OIHW kernel (O, C // groups, kh, kw); NHWC: HWIO (kh, kw, C // groups, O).
      b: optional bias of shape (O,), added to every position of output channel o.
      stride: int or (sh, sw), >= 1.
      padding: int, (ph, pw) (each side), ((top, bottom), (left, right)), ``"valid"`` (none)
        or ``"same"`` (stride 1 only; output size = input size; PyTorch's split, the odd
        extra row/column at the bottom/right). Zero padding.
      dilation: int or (dh, dw), >= 1; the kernel's taps are ``d`` apart.
      groups: input and output channels are split into ``groups`` blocks; block g of the
        output sees only block g of the input. Must divide C and O.
      layout: ``"NCHW"`` (the chapter's, with OIHW kernels) or ``"NHWC"`` (HWIO kernels).
      impl: a key of :data:`IMPLEMENTATIONS`: ``"lax"`` (``lax.conv_general_dilated``) or
        ``"patches"`` (strided slices into patches, then one matrix product; same function).
      precision: ``lax.Precision`` or None (JAX's default), passed to the conv / product.

    Returns:
      (N, O, oh, ow) (unbatched: (O, oh, ow); NHWC: channels last) in the promoted dtype of
      x, w and b, where per axis ``o = floor((n + p_total - d*(k-1) - 1 + s) / s)``, see
      :func:`jaxconv.shapes.conv_output_shape`.

    Raises:
      TypeError: non-floating x, w or b; non-int geometry.
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
    return _conv2d_apply(x.astype(dtype), w.astype(dtype), b, geom, impl, precision)
