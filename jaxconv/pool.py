"""Max, average and power-average pooling in 1-D, 2-D and 3-D with PyTorch's semantics, and
the chapter's pool2d (6.5).

``max_pool{1,2,3}d``, ``avg_pool{1,2,3}d`` and ``lp_pool{1,2,3}d`` have
``torch.nn.functional``'s names, positional order and keyword names, plus a keyword-only
``layout``. Each validates its arguments and builds the window's geometry
(:func:`jaxconv.geometry.pool_geometry`: output size, ceil-mode overhang) from static ints
before tracing, so a bad argument raises a ValueError/TypeError naming it, and hands over to
one N-D implementation: average pooling is one ``lax.reduce_window`` sum and a constant divisor
(computed here with NumPy; on CPU its derivative sums the tangent's taps, ``_avg_pool_jvp``);
max pooling, whose derivative and indices follow PyTorch's choice of element, is
:mod:`jaxconv.kernels.maxpool`; power-average pooling is average pooling of ``x ** p``,
rescaled as PyTorch does. ``pool2d`` is the chapter's manual version, one window
per output position.
"""

from __future__ import annotations

import math
import numbers
import textwrap
from functools import partial, reduce
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._args import (
    LAYOUTS_BY_NDIM,
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
from jaxconv.kernels import dispatch, maxpool
from jaxconv.kernels.windows import pool_windows, spatial_constant, window_taps

__all__ = [
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "pool2d",
]


def _check_input(x: Any, layout: Any, n: int) -> Any:
    """Validate the input of an ``n``-D pool (layout, rank, dtype, non-empty C and spatial
    axes) and return it as an array."""
    layout = check_layout(layout, LAYOUTS_BY_NDIM[n])
    x = as_array(x, "input")
    if layout[0] != "N":  # batch not first (CHWN): batched only
        if np.ndim(x) != len(layout):
            raise ValueError(
                f"input must have rank {len(layout)} (batched {layout}: {', '.join(layout)}), "
                f"got shape {tuple(np.shape(x))}"
            )
    ndim = check_rank(x, "input", (n + 1, n + 2))
    check_floating(x, "input")
    channel, axes = layout_axes(layout, batched=ndim == n + 2)
    if min(x.shape[a] for a in (channel, *axes)) == 0:
        # As PyTorch: only the batch axis may be empty.
        raise ValueError(
            f"input must have non-empty channel and spatial axes ({layout}), got shape {x.shape}"
        )
    return jnp.asarray(x)


# --- max pooling -----------------------------------------------------------------------------


def _max_pool(
    n: int, input: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
    ceil_mode: Any, return_indices: Any, layout: Any,
) -> jax.Array | tuple[jax.Array, jax.Array]:  # fmt: skip
    """Max pooling over the ``n`` spatial axes of ``input`` in ``layout``."""
    x = _check_input(input, layout, n)
    geom = pool_geometry(x.shape, layout, kernel_size, stride, padding, dilation, ceil_mode)
    if check_bool(return_indices, "return_indices"):
        return maxpool.max_pool_with_indices(x, geom)
    return maxpool.max_pool(x, geom)


_MAX_DOC = """{n}-D max pooling, as ``torch.nn.functional.max_pool{n}d``.

    Args:
      input: {shapes}. Real floating dtype.
      kernel_size: window ``k``, ``(k,)`` or {tuple}.
      stride: int, 1-tuple or {n}-tuple; None (default) or an empty sequence means stride =
        kernel_size.
      padding: int, 1-tuple, {n}-tuple, or per side {sides};
        each side at most half the window (``p <= k // 2``). Padding is -inf, so it never
        wins.
      dilation: spacing between window taps (int, 1-tuple or {n}-tuple).
      ceil_mode: round the output size up; the extra last window must start inside the input
        or the left padding (a window that would start in the right padding is dropped), and
        its overhang is -inf.
      return_indices: also return, per output element, the flat index
        {flat} of the maximum in the unpadded input plane (int32), as PyTorch's
        ``return_indices``.
      layout: keyword-only; {layouts}.

    Returns:
      The pooled array in the input's layout, batched or not, with per spatial axis
      ``out = floor((n + p_lo + p_hi - (d * (k - 1) + 1)) / s) + 1`` (ceil with
      ``ceil_mode``, less one if the last window would start in the right padding); and the
      indices of the same shape if ``return_indices``.

    Gradients (reverse, forward, any order, dilation included) flow to the element PyTorch
    selects: the first maximum in window scan order among the taps inside the input (ties go
    to the first), or the window's last NaN, whose value the output then is.
    """

_SHAPES = {
    1: ("(N, C, L) or unbatched (C, L); (N, L, C) / (L, C) with ``layout=\"NLC\"``",
        "(kl,)", "``((lo, hi),)``", "``l``",
        '"NCL" (default) or "NLC" (channels last)'),
    2: ("(N, C, H, W) or unbatched (C, H, W); (N, H, W, C) / (H, W, C) with "
        '``layout="NHWC"``; (C, H, W, N) with ``layout="CHWN"`` (batched only)',
        "(kh, kw)", "``((top, bottom), (left, right))``", "``h * W + w``",
        '"NCHW" (default), "NHWC" or "CHWN" (batch last)'),
    3: ("(N, C, D, H, W) or unbatched (C, D, H, W); (N, D, H, W, C) / (D, H, W, C) with "
        '``layout="NDHWC"``', "(kd, kh, kw)", "three ``(lo, hi)`` pairs",
        "``(d * H + h) * W + w``", '"NCDHW" (default) or "NDHWC" (channels last)'),
}  # fmt: skip


def _wrapped(doc: str, width: int = 96) -> str:
    """``doc`` with each over-long line wrapped, its continuation indented two more spaces
    (an Args entry), so the filled-in templates read like the hand-written docstrings."""
    lines = []
    for line in doc.split("\n"):
        indent = " " * (len(line) - len(line.lstrip()))
        more = indent + ("  " if line.lstrip()[:1].isalpha() and ":" in line else "")
        lines += textwrap.wrap(line, width, initial_indent="", subsequent_indent=more) or [""]
    return "\n".join(lines)


def _max_doc(n: int) -> str:
    shapes, tup, sides, flat, layouts = _SHAPES[n]
    doc = _MAX_DOC.format(n=n, shapes=shapes, tuple=tup, sides=sides, flat=flat,
                          layouts=layouts)  # fmt: skip
    return _wrapped(doc)


def max_pool1d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False, *, layout: str = "NCL",
) -> jax.Array | tuple[jax.Array, jax.Array]:  # fmt: skip
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


def max_pool2d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False, *, layout: str = "NCHW",
) -> jax.Array | tuple[jax.Array, jax.Array]:  # fmt: skip
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


def max_pool3d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
    ceil_mode: bool = False, return_indices: bool = False, *, layout: str = "NCDHW",
) -> jax.Array | tuple[jax.Array, jax.Array]:  # fmt: skip
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


max_pool1d.__doc__, max_pool2d.__doc__, max_pool3d.__doc__ = (_max_doc(n) for n in (1, 2, 3))


# --- average pooling -------------------------------------------------------------------------


def _avg_divisor(geom: WindowGeometry, count_include_pad: bool) -> np.ndarray:
    """Output-shaped float64 divisors, PyTorch's rule, computed per axis and multiplied.

    A window ``[start, start + k)`` in input coordinates counts, with ``count_include_pad``,
    its part inside the padded input (the end is clipped to ``n + pad_end``, so a ceil-mode
    overhang past the padding is not counted); without it, only its part inside the input.
    """
    counts = []
    for a in range(len(geom.kernel)):
        (lo, hi), n, k, s = geom.padding[a], geom.in_size[a], geom.kernel[a], geom.stride[a]
        start = np.arange(geom.out_size[a]) * s - lo
        end = np.minimum(start + k, n + hi)
        if not count_include_pad:
            start, end = np.maximum(start, 0), np.minimum(end, n)
        counts.append(end - start)
    return reduce(np.multiply.outer, counts).astype(np.float64)


def _check_kernel_fits_input(geom: WindowGeometry) -> None:
    """PyTorch's 3-D average pooling (and lp_pool3d, built on it) refuses an input shorter than
    the kernel along any axis, before padding; its 1-D/2-D pools and max_pool3d do not."""
    if any(n < k for n, k in zip(geom.in_size, geom.kernel, strict=True)):
        raise ValueError(
            f"input {geom.in_size} is smaller than kernel_size {geom.kernel} along a spatial "
            "axis: 3-D average and power-average pooling need input >= kernel_size before "
            "padding (as PyTorch)"
        )


def _avg_pool_nd(
    n: int, input: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: Any,
    count_include_pad: Any, divisor_override: Any, layout: Any,
) -> jax.Array:  # fmt: skip
    """Average pooling over the ``n`` spatial axes of ``input`` in ``layout``."""
    x = _check_input(input, layout, n)
    geom = pool_geometry(x.shape, layout, kernel_size, stride, padding, 1, ceil_mode)
    if n == 3:
        _check_kernel_fits_input(geom)
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
    return _avg_pool_rule(x, geom, count_include_pad, divisor_override)


def _window_means(
    sums: jax.Array, geom: WindowGeometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    """The window sums (in the accumulation dtype) divided by PyTorch's divisors."""
    if divisor_override is not None:
        return sums / np.array(divisor_override, dtype=sums.dtype)
    divisor = _avg_divisor(geom, count_include_pad)
    return sums / spatial_constant(geom, divisor, sums.ndim, sums.dtype)


def _avg_values(
    x: jax.Array, geom: WindowGeometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    """One ``reduce_window`` sum (in float32 at least) and the divisors."""
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
    return _window_means(sums, geom, count_include_pad, divisor_override).astype(x.dtype)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def _avg_pool_rule(
    x: jax.Array, geom: WindowGeometry, count_include_pad: bool, divisor_override: int | None
) -> jax.Array:
    """:func:`_avg_values`, differentiated by ``_avg_pool_jvp``."""
    return _avg_values(x, geom, count_include_pad, divisor_override)


@_avg_pool_rule.defjvp
def _avg_pool_jvp(
    geom: WindowGeometry,
    count_include_pad: bool,
    divisor_override: int | None,
    primals: tuple[jax.Array],
    tangents: tuple[jax.Array],
) -> tuple[jax.Array, jax.Array]:
    """Where :func:`~jaxconv.kernels.dispatch.avg_pool_tangent_by_taps` says so (XLA:CPU,
    windows that do not tile the input, at most 64 taps), the tangent's window sums are the
    sum of its taps, contiguous slices of its stride phases
    (:func:`~jaxconv.kernels.windows.phase_taps`; strided slices at stride 1). Reverse mode
    transposes them into plain pads of each phase and one concatenate. Why: JAX's rule
    transposes ``reduce_window``'s sum into a pad with interior padding and another
    ``reduce_window``, and XLA:CPU ran that forward+backward 4.4-4.9x (2-D, 8x32x32x32) and
    8.6x (3-D) slower, 1.4x on ResNet's 64x64x48x48 (docs/BENCHMARKS.md). Elsewhere, JAX's
    rule.
    """
    (x,), (t,) = primals, tangents
    y = _avg_pool_rule(x, geom, count_include_pad, divisor_override)
    if not dispatch.avg_pool_tangent_by_taps(geom):
        _, t_y = jax.jvp(lambda a: _avg_values(a, geom, count_include_pad, divisor_override),
                         (x,), (t,))  # fmt: skip
        return y, t_y
    acc = jnp.promote_types(t.dtype, jnp.float32)
    taps = window_taps(t.astype(acc), geom, phases=any(s > 1 for s in geom.stride))
    sums = reduce(jnp.add, taps)
    return y, _window_means(sums, geom, count_include_pad, divisor_override).astype(t.dtype)


_AVG_DOC = """{n}-D average pooling, as ``torch.nn.functional.avg_pool{n}d``.

    Args:
      input: {shapes}. Real floating dtype (float16/bfloat16 are summed in float32).
      kernel_size, stride, padding, ceil_mode, layout: as in :func:`max_pool{n}d` (no
        dilation). Padding is zeros.
      count_include_pad: divide by the window's size within the padded input (True, default:
        the user's padding counts, a ceil-mode overhang beyond it does not) or by the number
        of input elements in the window (False).{override}

    Returns:
      The pooled array in the input's layout, batched or not, sizes as in max_pool{n}d.
    """

_OVERRIDE = """
      divisor_override: a non-zero int that replaces the divisor everywhere (PyTorch refuses
        only 0; a negative divisor is accepted, as there)."""


def avg_pool1d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, *, layout: str = "NCL",
) -> jax.Array:  # fmt: skip
    return _avg_pool_nd(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        None, layout)  # fmt: skip


def avg_pool2d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: int | None = None, *, layout: str = "NCHW",
) -> jax.Array:  # fmt: skip
    return _avg_pool_nd(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, layout)  # fmt: skip


def avg_pool3d(
    input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0,
    ceil_mode: bool = False, count_include_pad: bool = True,
    divisor_override: int | None = None, *, layout: str = "NCDHW",
) -> jax.Array:  # fmt: skip
    return _avg_pool_nd(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                        divisor_override, layout)  # fmt: skip


avg_pool1d.__doc__, avg_pool2d.__doc__, avg_pool3d.__doc__ = (
    _wrapped(_AVG_DOC.format(n=n, shapes=_SHAPES[n][0], override="" if n == 1 else _OVERRIDE))
    for n in (1, 2, 3)
)


# --- power-average pooling -------------------------------------------------------------------


def _check_norm_type(value: Any) -> float:
    """``norm_type`` as a float: a real number, non-zero and not NaN (±inf allowed)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"norm_type must be a real number (int or float), got {value!r} "
            f"({type(value).__name__})"
        )
    p = float(value)
    if p == 0 or math.isnan(p):
        raise ValueError(
            f"norm_type must be non-zero and not NaN (PyTorch divides 1 by it), got {value!r}"
        )
    return p


def _lp_pool_nd(
    n: int, input: Any, norm_type: Any, kernel_size: Any, stride: Any, ceil_mode: Any,
    layout: Any,
) -> jax.Array:  # fmt: skip
    """Power-average pooling over the ``n`` spatial axes of ``input`` in ``layout``."""
    p = _check_norm_type(norm_type)
    x = _check_input(input, layout, n)
    geom = pool_geometry(x.shape, layout, kernel_size, stride, 0, 1, ceil_mode)
    if n == 3:
        _check_kernel_fits_input(geom)
    if math.isinf(p):  # PyTorch's own special case: the max (or min) of |x|
        sign = 1 if p > 0 else -1
        return sign * _max_pool(n, sign * jnp.abs(x), kernel_size, stride, 0, 1, ceil_mode,
                                False, layout)  # fmt: skip
    return _lp_pool(x, geom, p)


@partial(jax.jit, static_argnums=(1, 2))
def _lp_pool(x: jax.Array, geom: WindowGeometry, p: float) -> jax.Array:
    """PyTorch's formula, step by step (its gradients too: zero where a window's sum is 0)."""
    mean = _avg_pool(x**p, geom, True, None)  # XLA's pow, as C's: (-2.0) ** 2.0 is 4
    # relu as torch's, whose backward passes a NaN gradient on (jax.nn.relu's zeroes it)
    magnitude = jnp.abs(mean)
    relu = jnp.where(magnitude <= 0, jnp.zeros_like(magnitude), magnitude)
    scaled = jnp.sign(mean) * relu * math.prod(geom.kernel)
    return scaled ** (1.0 / p)


_LP_DOC = """{n}-D power-average pooling, as ``torch.nn.functional.lp_pool{n}d``.

    ``out = (sum over the window of x ** p) ** (1 / p)``, computed as PyTorch does: the
    average pool of ``x ** p`` (no padding, count_include_pad), then
    ``(sign(a) * relu(|a|) * prod(kernel_size)) ** (1 / p)``. So, as there: a negative x with
    a non-integer p gives NaN, so does a negative window sum unless ``1 / p`` is an integer,
    a window whose sum is 0 has zero gradient (reverse mode), and with
    ``ceil_mode`` the last, overhanging window's sum is scaled by ``prod(kernel_size)`` over
    the number of its elements inside the input. ``norm_type`` ±inf is the max (min) of
    ``|x|`` over each window, through :func:`max_pool{n}d`.

    Args:
      input: {shapes}. Real floating dtype.
      norm_type: the power p: a non-zero int or float (±inf allowed).
      kernel_size: window ``k``, ``(k,)`` or {tuple}.
      stride: int, 1-tuple or {n}-tuple; None (default) or an empty sequence means stride =
        kernel_size.
      ceil_mode: round the output size up (the last window must start inside the input).
      layout: keyword-only; {layouts}.

    Returns:
      The pooled array in the input's layout, batched or not, with per spatial axis
      ``out = floor((n - k) / s) + 1`` (ceil with ``ceil_mode``). No padding argument, as in
      PyTorch.
    """


def lp_pool1d(
    input: Any, norm_type: float, kernel_size: Any, stride: Any = None,
    ceil_mode: bool = False, *, layout: str = "NCL",
) -> jax.Array:  # fmt: skip
    return _lp_pool_nd(1, input, norm_type, kernel_size, stride, ceil_mode, layout)


def lp_pool2d(
    input: Any, norm_type: float, kernel_size: Any, stride: Any = None,
    ceil_mode: bool = False, *, layout: str = "NCHW",
) -> jax.Array:  # fmt: skip
    return _lp_pool_nd(2, input, norm_type, kernel_size, stride, ceil_mode, layout)


def lp_pool3d(
    input: Any, norm_type: float, kernel_size: Any, stride: Any = None,
    ceil_mode: bool = False, *, layout: str = "NCDHW",
) -> jax.Array:  # fmt: skip
    return _lp_pool_nd(3, input, norm_type, kernel_size, stride, ceil_mode, layout)


lp_pool1d.__doc__, lp_pool2d.__doc__, lp_pool3d.__doc__ = (
    _wrapped(_LP_DOC.format(n=n, shapes=_SHAPES[n][0], tuple=_SHAPES[n][1], layouts=_SHAPES[n][4]))
    for n in (1, 2, 3)
)


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
