"""Float64 oracles of the rearranging ops: unfold / fold (im2col / col2im), pixel_shuffle /
pixel_unshuffle and max_unpool1d/2d/3d, as ``torch.nn.functional``.

Plain loops over output positions and kernel taps (fold: a scatter-add per block and tap;
unpooling: one write per input element, in order, so the last of equal indices wins, as
torch's CPU kernel does).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from jaxconv.reference._layout import (
    as_tuple,
    from_channels_first,
    pad_spatial,
    sides,
    to_channels_first,
)


def _blocks(
    size: tuple[int, int], kernel: tuple[int, int], dilation: Any, padding: Any, stride: Any
) -> tuple[tuple[int, int], tuple[int, int], tuple[tuple[int, int], ...], tuple[int, int]]:
    """Dilation, stride, per-side padding and the block grid (OH, OW) of an (H, W) plane."""
    d, s, p = as_tuple(dilation, 2), as_tuple(stride, 2), sides(padding, 2)
    grid = tuple((size[a] + sum(p[a]) - d[a] * (kernel[a] - 1) - 1) // s[a] + 1 for a in range(2))
    return d, s, p, grid  # type: ignore[return-value]


def unfold(
    input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> np.ndarray:
    """(N, C, H, W) or (C, H, W) -> (N, C*kh*kw, L): column ``i*OW + j``, row
    ``c*kh*kw + a*kw + b`` is the padded input at ``(i*sh + a*dh, j*sw + b*dw)``."""
    x, unbatched = to_channels_first(input, "NCHW", 2)
    kh, kw = as_tuple(kernel_size, 2)
    (dh, dw), (sh, sw), pads, (oh, ow) = _blocks(x.shape[2:], (kh, kw), dilation, padding, stride)
    xp = pad_spatial(x, pads, 0.0)
    n, c = x.shape[:2]
    cols = np.zeros((n, c, kh, kw, oh, ow))
    for i, j, a, b in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        cols[:, :, a, b, i, j] = xp[:, :, i * sh + a * dh, j * sw + b * dw]
    cols = cols.reshape(n, c * kh * kw, oh * ow)
    return cols[0] if unbatched else cols


def fold(
    input: Any,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> np.ndarray:
    """(N, C*kh*kw, L) or (C*kh*kw, L) -> (N, C, H, W): each column entry added at the padded
    position its tap reads in :func:`unfold`; the padding is cut off at the end."""
    cols = np.asarray(input, dtype=np.float64)
    unbatched = cols.ndim == 2
    if unbatched:
        cols = cols[None]
    H, W = as_tuple(output_size, 2)
    kh, kw = as_tuple(kernel_size, 2)
    (dh, dw), (sh, sw), pads, (oh, ow) = _blocks((H, W), (kh, kw), dilation, padding, stride)
    n, rows, _ = cols.shape
    c = rows // (kh * kw)
    cols = cols.reshape(n, c, kh, kw, oh, ow)
    (t, bt), (lf, rt) = pads
    out = np.zeros((n, c, H + t + bt, W + lf + rt))
    for i, j, a, b in itertools.product(range(oh), range(ow), range(kh), range(kw)):
        out[:, :, i * sh + a * dh, j * sw + b * dw] += cols[:, :, a, b, i, j]
    out = out[:, :, t : t + H, lf : lf + W]
    return out[0] if unbatched else out


def pixel_shuffle(input: Any, upscale_factor: int, *, layout: str = "NCHW") -> np.ndarray:
    """(*, C*r*r, H, W) -> (*, C, H*r, W*r): ``out[..., c, h*r + i, w*r + j] =
    in[..., c*r*r + i*r + j, h, w]``; NHWC: channels last on both sides."""
    x = np.asarray(input, dtype=np.float64)
    if layout == "NHWC":
        x = np.moveaxis(x, -1, -3)
    r = int(upscale_factor)
    *lead, rows, h, w = x.shape
    c = rows // (r * r)
    out = np.zeros((*lead, c, h * r, w * r))
    for ch, i, j in itertools.product(range(c), range(r), range(r)):
        out[..., ch, i::r, j::r] = x[..., ch * r * r + i * r + j, :, :]
    return np.moveaxis(out, -3, -1) if layout == "NHWC" else out


def pixel_unshuffle(input: Any, downscale_factor: int, *, layout: str = "NCHW") -> np.ndarray:
    """(*, C, H*r, W*r) -> (*, C*r*r, H, W): ``out[..., c*r*r + i*r + j, h, w] =
    in[..., c, h*r + i, w*r + j]``; NHWC: channels last on both sides."""
    x = np.asarray(input, dtype=np.float64)
    if layout == "NHWC":
        x = np.moveaxis(x, -1, -3)
    r = int(downscale_factor)
    *lead, c, hr, wr = x.shape
    out = np.zeros((*lead, c * r * r, hr // r, wr // r))
    for ch, i, j in itertools.product(range(c), range(r), range(r)):
        out[..., ch * r * r + i * r + j, :, :] = x[..., ch, i::r, j::r]
    return np.moveaxis(out, -3, -1) if layout == "NHWC" else out


def _max_unpool(
    n: int,
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    output_size: Any,
    layout: str,
) -> np.ndarray:
    x, unbatched = to_channels_first(input, layout, n)
    idx, _ = to_channels_first(indices, layout, n)
    idx = idx.astype(np.int64)
    k = as_tuple(kernel_size, n)
    s = k if stride is None else as_tuple(stride, n)
    p = as_tuple(padding, n)
    if output_size is None:
        size = tuple((x.shape[2 + a] - 1) * s[a] - 2 * p[a] + k[a] for a in range(n))
    else:
        size = tuple(int(v) for v in output_size)[-n:]
    batch, c = x.shape[:2]
    out = np.zeros((batch, c, int(np.prod(size))))
    flat_x, flat_i = x.reshape(batch, c, -1), idx.reshape(batch, c, -1)
    for b, ch in itertools.product(range(batch), range(c)):
        for q in range(flat_x.shape[2]):  # in order: the last of equal indices wins
            out[b, ch, flat_i[b, ch, q]] = flat_x[b, ch, q]
    return from_channels_first(out.reshape(batch, c, *size), layout, unbatched)


def max_unpool1d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCL",
) -> np.ndarray:
    """Each input value at its flat index in a zero (N, C, L_out) output."""
    return _max_unpool(1, input, indices, kernel_size, stride, padding, output_size, layout)


def max_unpool2d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCHW",
) -> np.ndarray:
    """Each input value at its flat index ``h*W + w`` in a zero (N, C, H, W) output."""
    return _max_unpool(2, input, indices, kernel_size, stride, padding, output_size, layout)


def max_unpool3d(
    input: Any,
    indices: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    output_size: Any = None,
    *,
    layout: str = "NCDHW",
) -> np.ndarray:
    """Each input value at its flat index ``(d*H + h)*W + w`` in a zero (N, C, D, H, W)
    output."""
    return _max_unpool(3, input, indices, kernel_size, stride, padding, output_size, layout)
