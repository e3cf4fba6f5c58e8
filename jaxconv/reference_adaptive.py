"""NumPy float64 oracles for adaptive average and max pooling, with the same names and
signatures as :mod:`jaxconv.adaptive`.

Independent of the JAX code: explicit loops over every output position (vectorised over batch
and channels), each bin from PyTorch's formula, the max's element found by the scan PyTorch's
CPU kernel runs. Slow, obviously right; small inputs only. Values are float64, indices int64.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

__all__ = [
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
]


def _sizes(output_size: Any, spatial: tuple[int, ...]) -> tuple[int, ...]:
    if np.isscalar(output_size):
        return (int(output_size),) * len(spatial)
    return tuple(n if o is None else int(o) for o, n in zip(output_size, spatial, strict=True))


def _bin(i: int, length: int, out: int) -> slice:
    """Input range of output ``i``: [floor(i * L / out), ceil((i + 1) * L / out))."""
    return slice(math.floor(i * length / out), math.ceil((i + 1) * length / out))


def _pool(x: Any, output_size: Any, nd: int, kind: str):
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == nd + 1
    if unbatched:
        x = x[None]
    spatial = x.shape[2:]
    out = _sizes(output_size, spatial)
    y = np.zeros(x.shape[:2] + out)
    index = np.zeros(x.shape[:2] + out, dtype=np.int64)
    plane = x.reshape(x.shape[:2] + (-1,))  # (N, C, prod(spatial)), row-major
    flat_of = np.arange(int(np.prod(spatial))).reshape(spatial)
    for pos in itertools.product(*(range(o) for o in out)):
        bins = tuple(_bin(i, n, o) for i, n, o in zip(pos, spatial, out, strict=True))
        taps = flat_of[bins].reshape(-1)  # the bin's flat positions in row-major scan order
        if kind == "avg":
            y[(...,) + pos] = plane[..., taps].mean(axis=-1)
            continue
        best = np.full(x.shape[:2], -np.inf)
        arg = np.full(x.shape[:2], taps[0])
        for t in taps:  # torch's scan: greater than the best so far, or NaN
            v = plane[..., t]
            take = (v > best) | np.isnan(v)
            best = np.where(take, v, best)
            arg = np.where(take, t, arg)
        y[(...,) + pos], index[(...,) + pos] = best, arg
    if unbatched:
        y, index = y[0], index[0]
    return y if kind == "avg" else (y, index)


def _layout(f: Any, x: Any, layout: str, nd: int, *args: Any) -> Any:
    """``f`` on the channels-first view of ``x``; channels-last layouts ("NLC", "NHWC",
    "NDHWC": names ending in C) are moved there and the results moved back."""
    last = layout.endswith("C")
    x = np.moveaxis(np.asarray(x, dtype=np.float64), -1, -nd - 1) if last else x
    out = f(x, *args)
    back = (lambda a: np.moveaxis(a, -nd - 1, -1)) if last else (lambda a: a)
    return tuple(back(a) for a in out) if isinstance(out, tuple) else back(out)


def adaptive_avg_pool1d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCL",
) -> np.ndarray:
    return _layout(_pool, input, layout, 1, output_size, 1, "avg")


def adaptive_avg_pool2d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCHW",
) -> np.ndarray:
    return _layout(_pool, input, layout, 2, output_size, 2, "avg")


def adaptive_avg_pool3d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    layout: str = "NCDHW",
) -> np.ndarray:
    return _layout(_pool, input, layout, 3, output_size, 3, "avg")


def adaptive_max_pool1d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCL",
):
    y, index = _layout(_pool, input, layout, 1, output_size, 1, "max")
    return (y, index) if return_indices else y


def adaptive_max_pool2d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCHW",
):
    y, index = _layout(_pool, input, layout, 2, output_size, 2, "max")
    return (y, index) if return_indices else y


def adaptive_max_pool3d(
    input: Any,  # noqa: A002 (torch's name)
    output_size: Any,
    return_indices: bool = False,
    layout: str = "NCDHW",
):
    y, index = _layout(_pool, input, layout, 3, output_size, 3, "max")
    return (y, index) if return_indices else y
