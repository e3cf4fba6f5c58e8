"""Layout and padding helpers shared by the float64 oracles (N spatial axes).

The oracles compute in channels-first float64 ``(N, C, *spatial)``; these helpers move an input
there from the caller's layout and back, and pad the spatial axes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Channels-last layouts: the channel axis is the last one; every other layout is channels-first.
CHANNELS_LAST = ("NLC", "NHWC", "NDHWC")


def as_tuple(value: Any, n: int) -> tuple[int, ...]:
    """An int, or a sequence of one or ``n`` ints, as an ``n``-tuple of ints."""
    if np.isscalar(value):
        return (int(value),) * n
    values = tuple(int(v) for v in value)
    return values * n if len(values) == 1 else values


def sides(padding: Any, n: int) -> tuple[tuple[int, int], ...]:
    """Numeric padding (``p``, per axis ``(p0, p1, ...)`` or per side ``((lo, hi), ...)``) as
    ``n`` ``(lo, hi)`` pairs."""
    if np.isscalar(padding):
        return ((int(padding), int(padding)),) * n
    values = list(padding)
    if len(values) == 1:
        values = values * n
    return tuple((int(v), int(v)) if np.isscalar(v) else (int(v[0]), int(v[1])) for v in values)


def to_channels_first(x: Any, layout: str, n: int) -> tuple[np.ndarray, bool]:
    """float64 ``(N, C, *spatial)`` view of ``x`` (``n`` spatial axes); also whether ``x`` was
    unbatched (rank ``n + 1``)."""
    x = np.asarray(x, dtype=np.float64)
    unbatched = x.ndim == n + 1
    if unbatched:
        x = x[None]
    if layout in CHANNELS_LAST:
        x = np.moveaxis(x, -1, 1)
    elif layout == "CHWN":  # batch last (batched only)
        x = np.moveaxis(x, -1, 0)
    return x, unbatched


def from_channels_first(y: np.ndarray, layout: str, unbatched: bool) -> np.ndarray:
    """Inverse of :func:`to_channels_first`."""
    if layout in CHANNELS_LAST:
        y = np.moveaxis(y, 1, -1)
    elif layout == "CHWN":
        y = np.moveaxis(y, 0, -1)
    return y[0] if unbatched else y


def pad_spatial(x: np.ndarray, pads: tuple[tuple[int, int], ...], value: float) -> np.ndarray:
    """Pad the trailing ``len(pads)`` axes of ``x`` by ``(lo, hi)`` each with ``value``."""
    lead = ((0, 0),) * (x.ndim - len(pads))
    return np.pad(x, lead + tuple(pads), constant_values=value)
