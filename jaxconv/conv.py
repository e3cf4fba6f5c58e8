"""Convolution ops of chapter 6.2-6.4: the corr2d family, and ``conv1d``/``conv2d``/``conv3d``
with ``torch.nn.functional``'s signatures (one N-D entry point; transposed convs are in
:mod:`jaxconv.conv_transpose`).

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

``conv1d``/``conv2d``/``conv3d`` validate their arguments, build the
:class:`~jaxconv.geometry.ConvGeometry` and hand over to a registry of implementations in
:mod:`jaxconv.kernels` (the speed paths, e.g. ``impl="vjp"``, whose derivative rules stay fast
inside training loops); the default ``impl="auto"`` picks one for the backend and the geometry
(:mod:`jaxconv.kernels.dispatch`). The speed paths are 2-D, but for ``impl="depthwise"`` (any
rank), ``impl="planes"`` (3-D as one 2-D conv), ``impl="plane_patches"`` (3-D values as chunked
patch matrices) and ``impl="tap_outputs"`` (NCL 1-D values as stacked-tap products); other 1-D
and 3-D convs run XLA's.

Conventions follow the chapter (PyTorch): cross-correlation, channels-first inputs (NCL, NCHW,
NCDHW) and O-I-spatial kernels by default; channels-last layouts (``"NLC"``, ``"NHWC"``,
``"NDHWC"``) take spatial-I-O kernels (LIO, HWIO, DHWIO), ``layout="CHWN"`` (2-D, batch last,
batched only) (C, H, W, N) inputs and HWIO kernels.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._args import (
    LAYOUTS_BY_NDIM,
    Pair,
    as_array,
    check_floating,
    check_layout,
    check_rank,
    layout_axes,
)
from jaxconv.geometry import ConvGeometry, conv_geometry
from jaxconv.kernels.dispatch import IMPLEMENTATIONS, select_impl, vjp_applies
from jaxconv.kernels.patches import MAX_PATCHES, patch_count
from jaxconv.kernels.windows import corr_windows

Array = jax.Array

__all__ = [
    "IMPLEMENTATIONS",
    "ConvGeometry",
    "conv1d",
    "conv1x1",
    "conv2d",
    "conv3d",
    "conv_geometry",
    "convolve2d",
    "corr2d",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "corr2d_vmap",
    "select_impl",
    "vjp_applies",
]


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
    return corr_windows(X.astype(dtype), K.astype(dtype))


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


# --- general conv1d / conv2d / conv3d ------------------------------------------------------

#: The implementations each number of spatial axes takes: conv2d every key of the registry
#: ("planes" runs lax there), 1-D and 3-D the paths written for any rank or for 3-D.
_IMPLS_BY_NDIM = {
    1: ("auto", "lax", "depthwise", "tap_outputs"),
    2: tuple(IMPLEMENTATIONS),
    3: ("auto", "lax", "depthwise", "planes", "plane_patches"),
}


@functools.partial(jax.jit, static_argnames=("geom", "impl", "precision"))
def _conv_apply(
    x: Array, w: Array, b: Array | None, geom: ConvGeometry, impl: str, precision: Any
) -> Array:
    # Jitted on its static geometry so that eager calls of the manual path run as one
    # compiled program instead of op by op; under an outer jit this is simply inlined.
    unbatched = x.ndim == len(geom.layout) - 1
    if unbatched:
        x = x[None]
    y = IMPLEMENTATIONS[impl](x, w, geom, precision)
    if b is not None:
        channel_axis = layout_axes(geom.layout)[0]
        y = y + jnp.expand_dims(b, [a for a in range(y.ndim) if a != channel_axis])
    return y[0] if unbatched else y


def _check_bias(bias: Any, out_channels: int, dtype: Any) -> tuple[Array | None, Any]:
    """``bias`` as an (out_channels,) array, and the dtype promoted with it."""
    if bias is None:
        return None, dtype
    bias = _as_float_array(bias, "bias")
    if bias.shape != (out_channels,):
        raise ValueError(
            f"bias must have shape (out_channels,) = ({out_channels},), got {bias.shape}"
        )
    dtype = jnp.result_type(dtype, bias)
    return bias.astype(dtype), dtype


def _conv_nd(
    n: int,
    input: Any,
    weight: Any,
    bias: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    groups: Any,
    layout: Any,
    impl: Any,
    precision: Any,
) -> Array:
    """The one convolution behind conv1d/2d/3d, over ``n`` spatial axes."""
    name = f"conv{n}d"
    if impl not in _IMPLS_BY_NDIM[n]:
        only = {
            1: " ('patches' and 'vjp' are 2-D only, 'planes' 3-D only, as is 'plane_patches')",
            3: " ('patches' and 'vjp' are 2-D only, 'tap_outputs' 1-D only)",
        }.get(n, "")
        raise ValueError(f"impl must be one of {_IMPLS_BY_NDIM[n]} for {name}{only}, got {impl!r}")
    layout = check_layout(layout, LAYOUTS_BY_NDIM[n])
    x, w = _as_float_array(input, "input"), _as_float_array(weight, "weight")
    geom = conv_geometry(
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    b, dtype = _check_bias(bias, geom.out_channels, jnp.result_type(x, w))
    if impl == "patches":
        cols = patch_count(x.shape, w.size, geom)
        if cols > MAX_PATCHES:  # past it XLA:CPU aborts instead of raising
            raise ValueError(
                f"impl='patches' would build a patches matrix of {cols} elements (over 2**31; "
                f"input shape {x.shape}, padding {padding!r}): use impl='lax'"
            )
    try:
        return _conv_apply(x.astype(dtype), w.astype(dtype), b, geom, impl, precision)
    except TypeError as err:  # JAX's words for jvp of a custom_vjp, made specific
        if geom.layout == "CHWN" and "forward-mode" in str(err):
            raise TypeError(
                f"conv2d(layout='CHWN', impl={impl!r}) differentiates in reverse mode only "
                "(jax.grad, jax.vjp): for forward-mode (jax.jvp, jax.jacfwd) use impl='lax' or "
                "layout='NHWC'"
            ) from None
        raise


_CONV_ARGS = """
    Args:
      input: {x_shapes}
      weight: {w_shapes}
      bias: optional bias of shape (O,), added to every position of output channel o.
      stride: int or a sequence of one or {n} ints (one is repeated, as in PyTorch), >= 1.
      padding: int, one or {n} ints (each side), {n} ``(before, after)`` pairs (per side; an
        extension of PyTorch's), ``"valid"`` (none) or ``"same"`` (stride 1 only; output
        size = input size; PyTorch's split, the odd extra element after). Zero padding.
      dilation: like stride; the kernel's taps are ``d`` apart.
      groups: input and output channels are split into ``groups`` blocks; block g of the
        output sees only block g of the input. Must divide C and O.
      layout: {layouts}
      impl: {impls}
      precision: ``lax.Precision`` or None (JAX's default), passed to the conv / product.

    Returns:
      {out_shapes},
      in the promoted dtype of input, weight and bias, where per axis
      ``o = floor((n + p_total - d*(k-1) - 1 + s) / s)``, see
      :func:`jaxconv.shapes.conv_output_size`.

    Raises:
      TypeError: non-floating input, weight or bias; non-int geometry.
      ValueError: bad rank, channel/groups mismatch, non-positive stride/dilation/groups,
        negative padding, unknown padding string, layout or impl, kernel larger than the
        padded input, bias not of shape (O,).
"""

_DEPTHWISE = (
    '``"depthwise"`` (``groups == C``: a sum over kernel taps of strided slices\n'
    "        times per-channel weights, :mod:`~jaxconv.kernels.depthwise`; lax for other\n"
    "        groups)"
)

_IMPLS_1D = (
    '``"auto"`` (default: :func:`~jaxconv.kernels.dispatch.select_impl`), ``"lax"``\n'
    "        (``lax.conv_general_dilated``),\n        " + _DEPTHWISE + ",\n"
    '        or ``"tap_outputs"`` (NCL, groups 1: per batch item one matrix product with the\n'
    "        taps stacked on the output rows and the shifted rows added, XLA's derivatives,\n"
    "        :mod:`~jaxconv.kernels.tap_outputs`; lax otherwise). With NaN/inf weights, lax\n"
    "        skips zero padding while depthwise and tap_outputs multiply it."
)

_IMPLS_3D = (
    '``"auto"`` (default: :func:`~jaxconv.kernels.dispatch.select_impl`), ``"lax"``\n'
    "        (``lax.conv_general_dilated``),\n        " + _DEPTHWISE + ",\n"
    '        or ``"planes"`` (ONE 2-D conv of the kd depth taps stacked on the channel\n'
    "        axis, the output depth folded into the batch, run by jaxconv's 2-D dispatch,\n"
    "        :mod:`~jaxconv.kernels.planes`; NCDHW and NDHWC),\n"
    '        or ``"plane_patches"`` (groups 1: patch matrices of a few output rows at a\n'
    "        time, one matrix product each, also for the weight gradient; the planes'\n"
    "        input gradient, :mod:`~jaxconv.kernels.plane_patches`; lax otherwise). With\n"
    "        NaN/inf weights, lax skips zero padding while depthwise and plane_patches\n"
    "        multiply it."
)


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    layout: str = "NCL",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_nd(
        1, input, weight, bias, stride, padding, dilation, groups, layout, impl, precision
    )


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    layout: str = "NCHW",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_nd(
        2, input, weight, bias, stride, padding, dilation, groups, layout, impl, precision
    )


def conv3d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
    *,
    layout: str = "NCDHW",
    impl: str = "auto",
    precision: Any = None,
) -> Array:
    return _conv_nd(
        3, input, weight, bias, stride, padding, dilation, groups, layout, impl, precision
    )


conv1d.__doc__ = (
    "1-D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.\n"
    + _CONV_ARGS.format(
        n=1,
        x_shapes="(N, C, L) or unbatched (C, L); NLC: (N, L, C) or (L, C).",
        w_shapes="OIL kernel (O, C // groups, k); NLC: LIO (k, C // groups, O).",
        layouts='``"NCL"`` (PyTorch\'s, OIL kernels) or ``"NLC"`` (LIO kernels).',
        impls=_IMPLS_1D,
        out_shapes="(N, O, ol) (unbatched: (O, ol); NLC: channels last)",
    )
)
conv2d.__doc__ = (
    "2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``.\n"
    + _CONV_ARGS.format(
        n=2,
        x_shapes=(
            "(N, C, H, W) or unbatched (C, H, W); NHWC: (N, H, W, C) or (H, W, C); CHWN:\n"
            "        (C, H, W, N), batched only."
        ),
        w_shapes=(
            "OIHW kernel (O, C // groups, kh, kw); NHWC and CHWN: HWIO\n"
            "        (kh, kw, C // groups, O)."
        ),
        layouts=(
            '``"NCHW"`` (the chapter\'s, with OIHW kernels), ``"NHWC"`` (HWIO kernels) or\n'
            '        ``"CHWN"`` (HWIO kernels; batch last: XLA:CPU\'s fastest for LeNet, see\n'
            "        :mod:`jaxconv.kernels.dispatch`)."
        ),
        impls=(
            'a key of :data:`IMPLEMENTATIONS`, all the same function: ``"auto"`` (default:\n'
            "        the fastest measured path for the backend and geometry, see\n"
            '        :func:`~jaxconv.kernels.dispatch.select_impl`), ``"lax"``\n'
            '        (``lax.conv_general_dilated``), ``"patches"`` (strided slices into patches,\n'
            '        then one matrix product), ``"vjp"`` (gradients that stay fast inside\n'
            "        loops; stride 1, dilation 1, groups 1, lax otherwise),\n"
            '        ``"winograd"`` (3x3 kernels, stride 1, dilation 1, groups 1, NCHW or NHWC:\n'
            "        Winograd's F(3x3, 3x3), a few times a direct conv's float32 rounding; lax\n"
            '        otherwise), ``"phases"`` (strided, dilation 1, groups 1: a sum of stride-1\n'
            "        convs over the input's stride phases, :mod:`~jaxconv.kernels.strided`; lax\n"
            "        otherwise), " + _DEPTHWISE + ",\n"
            '        or ``"planes"``, ``"plane_patches"`` (conv3d\'s) and ``"tap_outputs"``\n'
            "        (conv1d's): lax here. With NaN/inf weights,\n"
            "        lax skips zero padding while patches, depthwise and the one-channel vjp path\n"
            "        multiply it; winograd's transforms mix neighbouring inputs, so a non-finite\n"
            "        input or weight makes every output of its tiles NaN (or inf). The CHWN\n"
            "        ``vjp`` path differentiates in reverse mode only\n"
            "        (TypeError)."
        ),
        out_shapes=(
            "(N, O, oh, ow) (unbatched: (O, oh, ow); NHWC: channels last; CHWN: (O, oh, ow, N))"
        ),
    )
)
conv3d.__doc__ = (
    "3-D convolution (cross-correlation), as ``torch.nn.functional.conv3d``.\n"
    + _CONV_ARGS.format(
        n=3,
        x_shapes="(N, C, D, H, W) or unbatched (C, D, H, W); NDHWC: channels last.",
        w_shapes="OIDHW kernel (O, C // groups, kd, kh, kw); NDHWC: DHWIO.",
        layouts='``"NCDHW"`` (PyTorch\'s, OIDHW kernels) or ``"NDHWC"`` (DHWIO kernels).',
        impls=_IMPLS_3D,
        out_shapes="(N, O, od, oh, ow) (unbatched: (O, od, oh, ow); NDHWC: channels last)",
    )
)
