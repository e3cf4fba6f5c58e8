"""Float64 oracles of the chapter's own functions: corr2d and its family, the manual pool2d."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxconv.reference._layout import as_tuple


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


def pool2d(X: Any, pool_size: Any, mode: str = "max") -> np.ndarray:
    """The chapter's pool2d: 2-D input, stride 1, no padding, max or mean of each window."""
    X = np.asarray(X, dtype=np.float64)
    p_h, p_w = as_tuple(pool_size, 2)
    Y = np.zeros((X.shape[0] - p_h + 1, X.shape[1] - p_w + 1))
    for i in range(Y.shape[0]):
        for j in range(Y.shape[1]):
            win = X[i : i + p_h, j : j + p_w]
            Y[i, j] = win.max() if mode == "max" else win.mean()
    return Y
