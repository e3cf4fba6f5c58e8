"""Float64 oracles of max, average and power-average pooling in 1-D, 2-D and 3-D, as
``torch.nn.functional``.

Written from PyTorch's C++ kernels' description, one output position and one window tap at a
time (vectorised over batch and channels only): the output size rule of
``pooling_output_shape_pad_lr``, the max kernel's scan (``val > max || isnan(val)``, starting
from the first in-input tap), the average kernel's divisor and ``lp_pool``'s formula.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from jaxconv.reference._layout import as_tuple, from_channels_first, sides, to_channels_first


def _pool_out(n: int, k_eff: int, s: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """PyTorch's pooling_output_shape_pad_lr, written out."""
    num = n + lo + hi - k_eff
    out = (num + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + lo:
        out -= 1
    return out


def _strides(stride: Any, kernel: tuple[int, ...], n: int) -> tuple[int, ...]:
    """None or an empty sequence means the kernel, as in PyTorch."""
    if stride is None or (not np.isscalar(stride) and len(stride) == 0):
        return kernel
    return as_tuple(stride, n)


def _out_sizes(
    size: tuple[int, ...],
    k: tuple[int, ...],
    s: tuple[int, ...],
    d: tuple[int, ...],
    pads: tuple[tuple[int, int], ...],
    ceil_mode: bool,
) -> tuple[int, ...]:
    return tuple(
        _pool_out(size[a], d[a] * (k[a] - 1) + 1, s[a], *pads[a], ceil_mode)
        for a in range(len(size))
    )


def _flat(pos: tuple[int, ...], size: tuple[int, ...]) -> int:
    """Row-major index of ``pos`` in a plane of ``size`` (also past the plane: PyTorch's start
    index of a window with no tap inside the input)."""
    flat = 0
    for p, n in zip(pos, size, strict=True):
        flat = flat * n + p
    return flat


def _max_pool(
    n: int,
    x: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: bool,
    return_indices: bool,
    layout: str,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """PyTorch's max kernel: per window, start at the first tap at or past 0 along every axis
    with -inf; a tap inside the input replaces the maximum if larger or NaN."""
    x, unbatched = to_channels_first(x, layout, n)
    k = as_tuple(kernel_size, n)
    s, d, pads = _strides(stride, k, n), as_tuple(dilation, n), sides(padding, n)
    size = x.shape[2:]
    out = _out_sizes(size, k, s, d, pads, ceil_mode)
    y = np.full(x.shape[:2] + out, -np.inf)
    idx = np.zeros(x.shape[:2] + out, np.int64)
    for o in itertools.product(*(range(m) for m in out)):
        starts = [o[a] * s[a] - pads[a][0] for a in range(n)]
        first = []
        for a in range(n):
            st = starts[a]
            while st < 0:  # as PyTorch: move the start forward by whole dilations
                st += d[a]
            first.append(st)
        best = np.full(x.shape[:2], -np.inf)
        where = np.full(x.shape[:2], _flat(tuple(first), size))
        for tap in itertools.product(*(range(m) for m in k)):
            pos = tuple(starts[a] + tap[a] * d[a] for a in range(n))
            if not all(0 <= p < m for p, m in zip(pos, size, strict=True)):
                continue
            val = x[(slice(None), slice(None), *pos)]
            take = (val > best) | np.isnan(val)
            best = np.where(take, val, best)
            where = np.where(take, _flat(pos, size), where)
        y[(..., *o)] = best
        idx[(..., *o)] = where
    y = from_channels_first(y, layout, unbatched)
    if return_indices:
        return y, from_channels_first(idx, layout, unbatched)
    return y


def _avg_pool(
    n: int,
    x: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    ceil_mode: bool,
    count_include_pad: bool,
    divisor_override: int | None,
    layout: str,
) -> np.ndarray:
    """PyTorch's average kernel: the window's sum over the input, divided by the window's
    size clipped to the padded input (count_include_pad), its input elements (not), or the
    override."""
    x, unbatched = to_channels_first(x, layout, n)
    k = as_tuple(kernel_size, n)
    s, pads = _strides(stride, k, n), sides(padding, n)
    size = x.shape[2:]
    out = _out_sizes(size, k, s, (1,) * n, pads, ceil_mode)
    y = np.zeros(x.shape[:2] + out)
    for o in itertools.product(*(range(m) for m in out)):
        lo = [o[a] * s[a] - pads[a][0] for a in range(n)]
        hi = [min(lo[a] + k[a], size[a] + pads[a][1]) for a in range(n)]
        pool_size = int(np.prod([h - b for b, h in zip(lo, hi, strict=True)]))
        lo = [max(b, 0) for b in lo]
        hi = [min(h, m) for h, m in zip(hi, size, strict=True)]
        window = x[(slice(None), slice(None), *(slice(b, h) for b, h in zip(lo, hi, strict=True)))]
        total = window.sum(axis=tuple(range(2, 2 + n)))
        if divisor_override is not None:
            div = divisor_override
        elif count_include_pad:
            div = pool_size
        else:
            div = int(np.prod([h - b for b, h in zip(lo, hi, strict=True)]))
        y[(..., *o)] = total / div
    return from_channels_first(y, layout, unbatched)


def _lp_pool(
    n: int,
    x: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any,
    ceil_mode: bool,
    layout: str,
) -> np.ndarray:
    """PyTorch's lp_pool: ``(sum x^p * K / count)^(1/p)`` with ``K`` the kernel's size and
    ``count`` the window's elements inside the input (they differ only for a ceil-mode
    overhang), a negative sum clipped by relu only in magnitude (its sign kept); ±inf norms
    are the max / min of ``|x|``."""
    k = as_tuple(kernel_size, n)
    p = float(norm_type)
    if np.isinf(p):
        mx = _max_pool(n, np.abs(np.asarray(x, np.float64)) * np.sign(p), k, stride, 0, 1,
                       ceil_mode, False, layout)  # fmt: skip
        return mx * np.sign(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        powered = np.power(np.asarray(x, np.float64), p)
        sums = _avg_pool(n, powered, k, stride, 0, ceil_mode, True, 1, layout)
        ones = np.ones_like(np.asarray(x, np.float64))
        counts = _avg_pool(n, ones, k, stride, 0, ceil_mode, True, 1, layout)
        scaled = sums * np.prod(k) / counts
        return np.power(scaled, 1.0 / p)


def max_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    layout: str = "NCL",
) -> Any:
    """1-D max pooling (and PyTorch's flat indices ``l``)."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


def max_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    layout: str = "NCHW",
) -> Any:
    """2-D max pooling (and PyTorch's flat indices ``h * W + w``)."""
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


def max_pool3d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
    *,
    layout: str = "NCDHW",
) -> Any:
    """3-D max pooling (and PyTorch's flat indices ``(d * H + h) * W + w``)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices, layout)  # fmt: skip


def avg_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    *,
    layout: str = "NCL",
) -> np.ndarray:
    """1-D average pooling with PyTorch's divisor rules."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     None, layout)  # fmt: skip


def avg_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    layout: str = "NCHW",
) -> np.ndarray:
    """2-D average pooling with PyTorch's divisor rules (count_include_pad counts the window
    clipped to the padded input, so a ceil-mode overhang past the padding is not counted)."""
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, layout)  # fmt: skip


def avg_pool3d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    layout: str = "NCDHW",
) -> np.ndarray:
    """3-D average pooling with PyTorch's divisor rules."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, layout)  # fmt: skip


def lp_pool1d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    ceil_mode: bool = False,
    *,
    layout: str = "NCL",
) -> np.ndarray:
    """1-D power-average pooling, PyTorch's formula."""
    return _lp_pool(1, input, norm_type, kernel_size, stride, ceil_mode, layout)


def lp_pool2d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    ceil_mode: bool = False,
    *,
    layout: str = "NCHW",
) -> np.ndarray:
    """2-D power-average pooling, PyTorch's formula."""
    return _lp_pool(2, input, norm_type, kernel_size, stride, ceil_mode, layout)


def lp_pool3d(
    input: Any,
    norm_type: float,
    kernel_size: Any,
    stride: Any = None,
    ceil_mode: bool = False,
    *,
    layout: str = "NCDHW",
) -> np.ndarray:
    """3-D power-average pooling, PyTorch's formula."""
    return _lp_pool(3, input, norm_type, kernel_size, stride, ceil_mode, layout)
