"""Float64 oracles of max and average pooling, as ``torch.nn.functional``."""

from __future__ import annotations

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


def max_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    layout: str = "NCHW",
) -> np.ndarray:
    """Max over each (dilated) window; padding and ceil-mode overhang never win (-inf)."""
    x, unbatched = to_channels_first(x, layout, 2)
    kh, kw = as_tuple(kernel_size, 2)
    sh, sw = as_tuple(kernel_size if stride is None else stride, 2)
    dh, dw = as_tuple(dilation, 2)
    (t, bt), (lf, rt) = sides(padding, 2)
    n, c, H, W = x.shape
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    oh = _pool_out(H, eh, sh, t, bt, ceil_mode)
    ow = _pool_out(W, ew, sw, lf, rt, ceil_mode)
    y = np.full((n, c, oh, ow), -np.inf)
    for i in range(oh):
        for j in range(ow):
            for a in range(kh):
                for b in range(kw):
                    r, q = i * sh - t + a * dh, j * sw - lf + b * dw
                    if 0 <= r < H and 0 <= q < W:
                        y[:, :, i, j] = np.maximum(y[:, :, i, j], x[:, :, r, q])
    return from_channels_first(y, layout, unbatched)


def avg_pool2d(
    x: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    layout: str = "NCHW",
) -> np.ndarray:
    """Window mean with PyTorch's divisor rules (see avg_pool2d's C++ kernel).

    With count_include_pad the divisor counts the padded window clipped to the padded input
    (so a ceil-mode overhang past the padding is not counted); without it, only input
    elements; ``divisor_override`` replaces either.
    """
    x, unbatched = to_channels_first(x, layout, 2)
    kh, kw = as_tuple(kernel_size, 2)
    sh, sw = as_tuple(kernel_size if stride is None else stride, 2)
    (t, bt), (lf, rt) = sides(padding, 2)
    n, c, H, W = x.shape
    oh = _pool_out(H, kh, sh, t, bt, ceil_mode)
    ow = _pool_out(W, kw, sw, lf, rt, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, w0 = i * sh - t, j * sw - lf
            h1, w1 = min(h0 + kh, H + bt), min(w0 + kw, W + rt)
            pool_size = (h1 - h0) * (w1 - w0)
            h0, w0, h1, w1 = max(h0, 0), max(w0, 0), min(h1, H), min(w1, W)
            total = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3))
            if divisor_override is not None:
                div = divisor_override
            elif count_include_pad:
                div = pool_size
            else:
                div = (h1 - h0) * (w1 - w0)
            y[:, :, i, j] = total / div
    return from_channels_first(y, layout, unbatched)
