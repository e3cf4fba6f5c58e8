"""Float64 oracles of the convolutions, as ``torch.nn.functional.conv1d/2d/3d`` and
``conv_transpose1d/2d/3d``.

The forward conv loops over output positions and takes the dot product of each window with the
kernel; the transposed conv loops over *input* positions and scatter-adds each element times the
kernel into its output window (its definition, not the forward conv's gradient), then crops
``padding`` from both sides. Both compute channels-first; channels-last layouts ("NLC", "NHWC",
"NDHWC") take spatial-first kernels (the layout's kernel in :data:`jaxconv._args.LAYOUT_KERNELS`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from jaxconv.reference._layout import (
    CHANNELS_LAST,
    as_tuple,
    from_channels_first,
    pad_spatial,
    sides,
    to_channels_first,
)


def _weight(w: Any, layout: str) -> np.ndarray:
    """The kernel as float64 ``(O, I, *k)``; channels-last layouts give ``(*k, I, O)``."""
    w = np.asarray(w, dtype=np.float64)
    if layout in CHANNELS_LAST:
        n = w.ndim - 2
        w = w.transpose(n + 1, n, *range(n))
    return w


def _conv_padding(padding: Any, k: tuple[int, ...], d: tuple[int, ...]):
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * len(k)
        # "same" (stride 1): PyTorch puts the odd extra element at the end.
        totals = [d[i] * (k[i] - 1) for i in range(len(k))]
        return tuple((t // 2, t - t // 2) for t in totals)
    return sides(padding, len(k))


def _conv(x, w, b, stride, padding, dilation, groups, layout, n) -> np.ndarray:
    x, unbatched = to_channels_first(x, layout, n)
    w = _weight(w, layout)
    n_out, cg, *k = w.shape
    s, d = as_tuple(stride, n), as_tuple(dilation, n)
    x = pad_spatial(x, _conv_padding(padding, tuple(k), d), 0.0)
    size = x.shape[2:]
    out = [(size[a] - d[a] * (k[a] - 1) - 1) // s[a] + 1 for a in range(n)]
    og = n_out // groups
    y = np.zeros((x.shape[0], n_out, *out))
    for pos in itertools.product(*(range(o) for o in out)):
        win = tuple(
            slice(pos[a] * s[a], pos[a] * s[a] + d[a] * (k[a] - 1) + 1, d[a]) for a in range(n)
        )
        for g in range(groups):
            xs = x[(slice(None), slice(g * cg, (g + 1) * cg), *win)]  # (N, cg, *k)
            ws = w[g * og : (g + 1) * og]  # (og, cg, *k)
            y[(slice(None), slice(g * og, (g + 1) * og), *pos)] = np.tensordot(
                xs, ws, axes=(list(range(1, n + 2)), list(range(1, n + 2)))
            )
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * n)
    return from_channels_first(y, layout, unbatched)


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
) -> np.ndarray:
    """1-D grouped, strided, dilated, padded cross-correlation, as ``F.conv1d``.

    input: (N, C, L) or (C, L) (NLC: channels last); weight: (O, C // groups, k) (NLC:
    (k, C // groups, O)); bias: (O,) or None. Returns (N, O, OL) (or NLC).
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, layout, 1)


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
) -> np.ndarray:
    """2-D grouped, strided, dilated, padded cross-correlation, as ``F.conv2d``.

    input: (N, C, H, W) or (C, H, W) (NHWC: channels last); weight: (O, C // groups, kh, kw)
    (NHWC: (kh, kw, C // groups, O)); bias: (O,) or None. Returns (N, O, OH, OW) (or NHWC).
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, layout, 2)


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
) -> np.ndarray:
    """3-D grouped, strided, dilated, padded cross-correlation, as ``F.conv3d``.

    input: (N, C, D, H, W) or (C, D, H, W) (NDHWC: channels last); weight:
    (O, C // groups, kd, kh, kw) (NDHWC: (kd, kh, kw, C // groups, O)); bias: (O,) or None.
    Returns (N, O, OD, OH, OW) (or NDHWC).
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, layout, 3)


def _conv_transpose(
    x, w, b, stride, padding, output_padding, groups, dilation, layout, n
) -> np.ndarray:
    x, unbatched = to_channels_first(x, layout, n)
    w = _weight(w, layout)  # (C_in, C_out // groups, *k): the O axis holds C_in
    c_in, og, *k = w.shape
    s, p, d = as_tuple(stride, n), as_tuple(padding, n), as_tuple(dilation, n)
    op = as_tuple(output_padding, n)
    size = x.shape[2:]
    full = [(size[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1 + op[a] for a in range(n)]
    cg = c_in // groups
    y = np.zeros((x.shape[0], og * groups, *full))
    for pos in itertools.product(*(range(m) for m in size)):
        win = tuple(
            slice(pos[a] * s[a], pos[a] * s[a] + d[a] * (k[a] - 1) + 1, d[a]) for a in range(n)
        )
        for g in range(groups):
            xs = x[(slice(None), slice(g * cg, (g + 1) * cg), *pos)]  # (N, cg)
            ws = w[g * cg : (g + 1) * cg]  # (cg, og, *k)
            y[(slice(None), slice(g * og, (g + 1) * og), *win)] += np.tensordot(xs, ws, 1)
    out = [full[a] - 2 * p[a] for a in range(n)]  # full already holds output_padding
    y = y[(slice(None), slice(None), *(slice(p[a], p[a] + out[a]) for a in range(n)))]
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64).reshape((1, -1) + (1,) * n)
    return from_channels_first(y, layout, unbatched)


def conv_transpose1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCL",
) -> np.ndarray:
    """1-D transposed convolution, as ``F.conv_transpose1d``: every input element adds its
    value times the kernel into the output, ``stride`` apart; then ``padding`` is cropped from
    both ends. input: (N, C_in, L) or (C_in, L) (NLC: channels last); weight:
    (C_in, C_out // groups, k) (NLC: (k, C_out // groups, C_in)); bias: (C_out,) or None.
    Returns (N, C_out, (L - 1) * s - 2p + d(k - 1) + output_padding + 1) (or NLC)."""
    return _conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, layout, 1
    )


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCHW",
) -> np.ndarray:
    """2-D transposed convolution, as ``F.conv_transpose2d`` (see :func:`conv_transpose1d`).
    input: (N, C_in, H, W) or (C_in, H, W) (NHWC: channels last); weight:
    (C_in, C_out // groups, kh, kw) (NHWC: (kh, kw, C_out // groups, C_in))."""
    return _conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, layout, 2
    )


def conv_transpose3d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
    *,
    layout: str = "NCDHW",
) -> np.ndarray:
    """3-D transposed convolution, as ``F.conv_transpose3d`` (see :func:`conv_transpose1d`).
    input: (N, C_in, D, H, W) or (C_in, D, H, W) (NDHWC: channels last); weight:
    (C_in, C_out // groups, kd, kh, kw) (NDHWC: (kd, kh, kw, C_out // groups, C_in))."""
    return _conv_transpose(
        input, weight, bias, stride, padding, output_padding, groups, dilation, layout, 3
    )
