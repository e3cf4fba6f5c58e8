"""Float64 oracle of the general convolution, as ``torch.nn.functional.conv2d``."""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxconv.reference._layout import (
    as_tuple,
    from_channels_first,
    pad_spatial,
    sides,
    to_channels_first,
)


def _conv_padding(padding: Any, k: tuple[int, int], d: tuple[int, int]):
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0), (0, 0))
        # "same" (stride 1): PyTorch puts the odd extra element at the end.
        tot = [d[i] * (k[i] - 1) for i in range(2)]
        return ((tot[0] // 2, tot[0] - tot[0] // 2), (tot[1] // 2, tot[1] - tot[1] // 2))
    return sides(padding, 2)


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
    x, unbatched = to_channels_first(x, layout, 2)
    w = np.asarray(w, dtype=np.float64)
    if layout == "NHWC":
        w = w.transpose(3, 2, 0, 1)
    n_out, cg, kh, kw = w.shape
    sh, sw = as_tuple(stride, 2)
    dh, dw = as_tuple(dilation, 2)
    x = pad_spatial(x, _conv_padding(padding, (kh, kw), (dh, dw)), 0.0)
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
    return from_channels_first(y, layout, unbatched)
