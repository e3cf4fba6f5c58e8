"""NumPy float64 oracles for every op in jaxconv, with the same names and signatures.

Written independently of the JAX code: explicit loops over output positions (vectorised over
batch and channels), the way the chapter and PyTorch's C++ kernels describe each op. Slow, but
obviously right; use it on small inputs only. Every function returns float64 arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "corr2d",
    "corr2d_vmap",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "conv1x1",
    "convolve2d",
    "conv2d",
    "max_pool2d",
    "avg_pool2d",
    "pool2d",
]


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1]))


def _sides(padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Numeric padding -> ((top, bottom), (left, right))."""
    if np.isscalar(padding):
        p = int(padding)
        return ((p, p), (p, p))
    a, b = padding
    if np.isscalar(a):
        return ((int(a), int(a)), (int(b), int(b)))
    return ((int(a[0]), int(a[1])), (int(b[0]), int(b[1])))


def _to_nchw(x: Any, layout: str) -> tuple[np.ndarray, bool]:
    """float64 (N, C, H, W) view of ``x``; also whether ``x`` was unbatched."""
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == 3
    if unbatched:
        x = x[None]
    if layout == "NHWC":
        x = x.transpose(0, 3, 1, 2)
    return x, unbatched


def _from_nchw(y: np.ndarray, layout: str, unbatched: bool) -> np.ndarray:
    if layout == "NHWC":
        y = y.transpose(0, 2, 3, 1)
    return y[0] if unbatched else y


def _pad(x: np.ndarray, pads: tuple[tuple[int, int], tuple[int, int]], value: float) -> np.ndarray:
    (t, b), (left, r) = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (left, r)), constant_values=value)


# --- the chapter's 2-D functions --------------------------------------------------------------


def corr2d(X: Any, K: Any) -> np.ndarray:
    """(h, w) * (kh, kw) -> (h - kh + 1, w - kw + 1): the chapter's double loop."""
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    h, w = K.shape
    Y = np.zeros((X.shape[0] - h + 1, X.shape[1] - w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            Y[i, j] = (X[i : i + h, j : j + w] * K).sum()
    return Y


corr2d_vmap = corr2d  # the manual JAX version computes the same function


def convolve2d(X: Any, K: Any) -> np.ndarray:
    """True (flipped-kernel) 2-D convolution, 'valid' part.

    Y[i, j] = sum_{a, b} X[i + kh - 1 - a, j + kw - 1 - b] * K[a, b].
    """
    X = np.asarray(X, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    kh, kw = K.shape
    Y = np.zeros((X.shape[0] - kh + 1, X.shape[1] - kw + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            for a in range(kh):
                for b in range(kw):
                    Y[i, j] += X[i + kh - 1 - a, j + kw - 1 - b] * K[a, b]
    return Y


def corr2d_multi_in(X: Any, K: Any) -> np.ndarray:
    """(ci, h, w) * (ci, kh, kw) -> (oh, ow): cross-correlate each channel, then sum."""
    return sum(corr2d(x, k) for x, k in zip(np.asarray(X), np.asarray(K), strict=True))


def corr2d_multi_in_out(X: Any, K: Any) -> np.ndarray:
    """(ci, h, w) * (co, ci, kh, kw) -> (co, oh, ow): one multi-input result per output channel."""
    return np.stack([corr2d_multi_in(X, k) for k in np.asarray(K)], 0)


def conv1x1(X: Any, K: Any) -> np.ndarray:
    """(ci, h, w) or (n, ci, h, w) * (co, ci, 1, 1): a per-pixel linear map over channels."""
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 4:
        return np.stack([conv1x1(x, K) for x in X])
    return corr2d_multi_in_out(X, K)


# --- general convolution -----------------------------------------------------------------------


def _conv_padding(padding: Any, k: tuple[int, int], d: tuple[int, int]):
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        # "same" (stride 1): PyTorch puts the odd extra element at the end.
        tot = [d[i] * (k[i] - 1) for i in range(2)]
        return ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))
    return _sides(padding)


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
) -> np.ndarray:
    """Grouped, strided, dilated, padded cross-correlation, as ``torch.nn.functional.conv2d``.

    x: (N, C, H, W) or (C, H, W) (NHWC: channels last); w: (O, C // groups, kh, kw)
    (NHWC: (kh, kw, C // groups, O)); b: (O,) or None. Returns (N, O, OH, OW) (or NHWC).
    """
    x, unbatched = _to_nchw(x, layout)
    w = np.asarray(w, dtype=np.float64)
    if layout == "NHWC":
        w = w.transpose(3, 2, 0, 1)
    n_out, cg, kh, kw = w.shape
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    x = _pad(x, _conv_padding(padding, (kh, kw), (dh, dw)), 0.0)
    n, _, H, W = x.shape
    oh = (H - dh * (kh - 1) - 1) // sh + 1
    ow = (W - dw * (kw - 1) - 1) // sw + 1
    og = n_out // groups
    y = np.zeros((n, n_out, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh, j * sw
            win = x[:, :, hs : hs + dh * (kh - 1) + 1 : dh, ws : ws + dw * (kw - 1) + 1 : dw]
            for g in range(groups):
                xs = win[:, g * cg : (g + 1) * cg]  # (n, cg, kh, kw)
                ws_ = w[g * og : (g + 1) * og]  # (og, cg, kh, kw)
                y[:, g * og : (g + 1) * og, i, j] = np.einsum("ncab,ocab->no", xs, ws_)
    if b is not None:
        y += np.asarray(b, dtype=np.float64)[None, :, None, None]
    return _from_nchw(y, layout, unbatched)


# --- pooling -----------------------------------------------------------------------------------


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
    x, unbatched = _to_nchw(x, layout)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    dh, dw = _pair(dilation)
    (t, bt), (lf, rt) = _sides(padding)
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
    return _from_nchw(y, layout, unbatched)


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
    x, unbatched = _to_nchw(x, layout)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(kernel_size if stride is None else stride)
    (t, bt), (lf, rt) = _sides(padding)
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
    return _from_nchw(y, layout, unbatched)


def pool2d(X: Any, pool_size: Any, mode: str = "max") -> np.ndarray:
    """The chapter's pool2d: 2-D input, stride 1, no padding, max or mean of each window."""
    X = np.asarray(X, dtype=np.float64)
    p_h, p_w = _pair(pool_size)
    Y = np.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            win = X[i : i + p_h, j : j + p_w]
            Y[i, j] = win.max() if mode == "max" else win.mean()
    return Y
