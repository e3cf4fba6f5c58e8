"""Max and average pooling (chapter 6.5) with PyTorch's semantics, and the chapter's pool2d.

``max_pool2d`` and ``avg_pool2d`` validate their arguments, build the window's geometry
(:func:`jaxconv.geometry.pool_geometry`: output size, ceil-mode overhang) from static ints
before tracing, so a bad argument raises a ValueError/TypeError naming it, and hand over:
average pooling is one ``lax.reduce_window`` sum and a constant divisor (computed here with
NumPy); max pooling, whose derivative and indices follow PyTorch's choice of element, is
:mod:`jaxconv.kernels.maxpool`. ``pool2d`` is the chapter's manual version, one window per
output position.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._args import (
    Pair,
    as_array,
    as_int,
    check_bool,
    check_floating,
    check_layout,
    check_rank,
    layout_axes,
    positive_pair,
)
from jaxconv.geometry import WindowGeometry, pool_geometry
from jaxconv.kernels import maxpool
from jaxconv.kernels.windows import pool_windows, spatial_constant

__all__ = ["max_pool2d", "avg_pool2d", "pool2d"]


def _check_input(x: Any, layout: str) -> Any:
    """Validate ``x`` (rank, dtype, non-empty C and spatial axes) and return it as an array."""
    layout = check_layout(layout)
    x = as_array(x, "x")
    if layout == "CHWN" and np.ndim(x) != 4:
        raise ValueError(f"x must have rank 4 (batched CHWN: C, H, W, N), got shape {x.shape}")
    ndim = check_rank(x, "x", (3, 4))
    check_floating(x, "x")
    channel, axes = layout_axes(layout, batched=ndim == 4)
    if min(x.shape[a] for a in (channel, *axes)) == 0:
        # As PyTorch: only the batch axis may be empty.
        raise ValueError(
            f"x must have non-empty channel and spatial axes ({layout}), got shape {x.shape}"
        )
    return jnp.asarray(x)


# --- max pooling -----------------------------------------------------------------------------


def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
    return_indices: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """2-D max pooling, as ``torch.nn.functional.max_pool2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); (N, H, W, C) / (H, W, C) with ``layout="NHWC"``;
        (C, H, W, N) with ``layout="CHWN"``. Real floating dtype.
      kernel_size: window ``k`` or ``(kh, kw)``.
      stride: int or pair; None (default) means stride = kernel_size, as in the chapter.
      padding: ``p``, ``(ph, pw)`` or per side ``((top, bottom), (left, right))``; each side at
        most half the window (``p <= k // 2``). Padding is -inf, so it never wins.
      dilation: spacing between window taps (int or pair).
      ceil_mode: round the output size up; the extra last window, which must start inside the
        input or the top/left padding, overhangs into -inf.
      layout: "NCHW" (default), "NHWC" or "CHWN" (batch last, batched only).
      return_indices: also return, per output element, the flat index ``h * W + w`` of the
        maximum in the unpadded input plane (int32), as PyTorch's ``return_indices``.

    Returns:
      The pooled array, ``(N, C, OH, OW)`` (or the matching layout / unbatched shape) with
      ``OH = floor((H + pt + pb - (dh*(kh-1)+1)) / sh) + 1`` (ceil with ``ceil_mode``); and the
      indices of the same shape if ``return_indices``.
    """
    x = _check_input(x, layout)
    geom = pool_geometry(x.shape, layout, kernel_size, stride, padding, dilation, ceil_mode)
    if check_bool(return_indices, "return_indices"):
        return maxpool.max_pool_with_indices(x, geom)
    return maxpool.max_pool(x, geom)


# --- average pooling -------------------------------------------------------------------------


def _avg_divisor(geom: WindowGeometry, count_include_pad: bool) -> np.ndarray:
    """(OH, OW) float64 divisors, PyTorch's rule, computed per axis and multiplied.

    A window ``[start, start + k)`` in input coordinates counts, with ``count_include_pad``,
    its part inside the padded input (the end is clipped to ``n + pad_end``, so a ceil-mode
    overhang past the padding is not counted); without it, only its part inside the input.
    """
    counts = []
    for a in range(2):
        (lo, hi), n, k, s = geom.padding[a], geom.in_size[a], geom.kernel[a], geom.stride[a]
        start = np.arange(geom.out_size[a]) * s - lo
        end = np.minimum(start + k, n + hi)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return np.outer(counts[0], counts[1]).astype(np.float64)


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
) -> jax.Array:
    """2-D average pooling, as ``torch.nn.functional.avg_pool2d``.

    Args:
      x: (N, C, H, W) or unbatched (C, H, W); (N, H, W, C) / (H, W, C) with ``layout="NHWC"``;
        (C, H, W, N) with ``layout="CHWN"``. Real floating dtype (float16/bfloat16 are summed
        in float32).
      kernel_size, stride, padding, ceil_mode, layout: as in :func:`max_pool2d` (no dilation).
        Padding is zeros.
      count_include_pad: divide by the window's size within the padded input (True, default:
        the user's padding counts, a ceil-mode overhang beyond it does not) or by the number
        of input elements in the window (False).
      divisor_override: a non-zero int that replaces the divisor everywhere (PyTorch refuses
        only 0; a negative divisor is accepted, as there).

    Returns:
      ``(N, C, OH, OW)`` (or the matching layout / unbatched shape), sizes as in max_pool2d.
    """
    x = _check_input(x, layout)
    geom = pool_geometry(x.shape, layout, kernel_size, stride, padding, 1, ceil_mode)
    include = check_bool(count_include_pad, "count_include_pad")
    if divisor_override is not None:
        divisor_override = as_int(divisor_override, "divisor_override")
        if divisor_override == 0:
            raise ValueError("divisor_override must be a non-zero int (as in PyTorch), got 0")

    return _avg_pool(x, geom, include, divisor_override)


@partial(jax.jit, static_argnums=(1, 2, 3))  # one compiled program for eager callers too
def _avg_pool(
    x: jax.Array, geom: WindowGeometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    ndim = x.ndim
    acc = jnp.promote_types(x.dtype, jnp.float32)  # low-precision inputs sum in float32
    sums = lax.reduce_window(
        x.astype(acc),
        np.array(0, dtype=acc),  # a concrete 0: JAX's differentiable add monoid
        lax.add,
        geom.expand(ndim, geom.kernel, 1),
        geom.expand(ndim, geom.stride, 1),
        geom.full_padding(ndim),
    )
    if divisor_override is not None:
        out = sums / np.array(divisor_override, dtype=acc)
    else:
        out = sums / spatial_constant(geom, _avg_divisor(geom, count_include_pad), ndim, acc)
    return out.astype(x.dtype)


# --- the chapter's pool2d --------------------------------------------------------------------


def pool2d(X: Any, pool_size: Any, mode: str = "max") -> jax.Array:
    """The chapter's ``pool2d``: max or mean of every ``(ph, pw)`` window of a 2-D ``X``.

    Stride 1, no padding: ``(h, w) -> (h - ph + 1, w - pw + 1)``. The manual version: one
    ``dynamic_slice`` per output position, vmapped over rows and columns (no Python loop over
    pixels). Same values as ``max_pool2d`` / ``avg_pool2d`` with ``stride=1`` on ``X[None]``.
    """
    if mode not in ("max", "avg"):
        raise ValueError(f"mode must be 'max' or 'avg', got {mode!r}")
    X = as_array(X, "X")
    check_rank(X, "X", (2,))
    check_floating(X, "X")
    ph, pw = positive_pair(pool_size, "pool_size")
    h, w = X.shape
    if ph > h or pw > w:
        raise ValueError(f"pool_size {(ph, pw)} is larger than X, shape {(h, w)}")
    return _pool2d_vmap(jnp.asarray(X), (ph, pw), mode)


@partial(jax.jit, static_argnums=(1, 2))  # eager callers get one program, not a vmap per op
def _pool2d_vmap(X: jax.Array, size: Pair, mode: str) -> jax.Array:
    return pool_windows(X, size, mode)
