"""Argument normalisers shared by every op, and the errors they raise.

Each helper turns one user-facing argument into a canonical static form (an int pair, a
per-side padding pair of pairs, a layout string) and raises a ValueError or TypeError that
names the argument and the rule it broke. Ops call these before tracing, so bad input never
reaches XLA.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]  # ((top, bottom), (left, right))

LAYOUTS = ("NCHW", "NHWC", "CHWN")


def _is_int(value: Any) -> bool:
    # bool is an int subclass; a True stride is always a bug.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


#: Geometry beyond int32 cannot index any array XLA will build; refuse it before tracing.
MAX_GEOMETRY = 2**31 - 1


def as_int(value: Any, name: str) -> int:
    """Return ``value`` as a Python int, or raise TypeError naming ``name``.

    Raises ValueError if ``|value|`` exceeds :data:`MAX_GEOMETRY` (XLA would overflow).
    """
    if not _is_int(value):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if abs(int(value)) > MAX_GEOMETRY:
        raise ValueError(f"{name} must be at most 2**31 - 1 in magnitude, got {value!r}")
    return int(value)


def as_pair(value: Any, name: str) -> Pair:
    """Normalise an int or a length-2 sequence of ints to ``(h, w)``."""
    if _is_int(value):
        return (int(value), int(value))
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return (as_int(value[0], f"{name}[0]"), as_int(value[1], f"{name}[1]"))
    raise TypeError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")


def positive_pair(value: Any, name: str) -> Pair:
    """Like :func:`as_pair`, and every entry must be >= 1."""
    pair = as_pair(value, name)
    if min(pair) < 1:
        raise ValueError(f"{name} must be positive (>= 1), got {value!r}")
    return pair


def padding_pairs(value: Any, name: str = "padding") -> Padding:
    """Normalise numeric padding to ``((top, bottom), (left, right))``, all >= 0.

    Accepts ``p`` (every side), ``(ph, pw)`` (symmetric per axis) and
    ``((top, bottom), (left, right))``. Strings are handled by the caller.
    """
    if _is_int(value):
        p = int(value)
        pads: Padding = ((p, p), (p, p))
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if all(_is_int(v) for v in value):
            ph, pw = int(value[0]), int(value[1])
            pads = ((ph, ph), (pw, pw))
        elif all(isinstance(v, Sequence) and not isinstance(v, str) and len(v) == 2 for v in value):
            (t, b), (left, r) = value
            pads = (
                (as_int(t, f"{name}[0][0]"), as_int(b, f"{name}[0][1]")),
                (as_int(left, f"{name}[1][0]"), as_int(r, f"{name}[1][1]")),
            )
        else:
            raise TypeError(
                f"{name} must be an int, (ph, pw) or ((top, bottom), (left, right)), got {value!r}"
            )
    else:
        raise TypeError(
            f"{name} must be an int, (ph, pw) or ((top, bottom), (left, right)), got {value!r}"
        )
    if min(min(pads[0]), min(pads[1])) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return pads


def as_array(value: Any, name: str) -> Any:
    """``value`` itself if it is an array, else ``np.asarray(value)``; a ragged nested list
    raises ValueError naming ``name`` (NumPy's own message does not say which argument)."""
    if hasattr(value, "dtype") and hasattr(value, "shape"):
        return value
    try:
        return np.asarray(value)
    except ValueError as err:
        raise ValueError(
            f"{name} must be a rectangular array (nested lists of equal lengths): {err}"
        ) from None


def check_bool(value: Any, name: str) -> bool:
    """Return ``value`` as a bool; anything but a bool (``1``, ``"no"``, None) is a TypeError."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def check_layout(layout: Any) -> str:
    """Return ``layout`` if it is one of :data:`LAYOUTS`, else raise ValueError."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def check_rank(x: Any, name: str, ranks: Sequence[int]) -> int:
    """Return ``x.ndim`` if it is one of ``ranks``, else raise ValueError with the shape."""
    ndim = np.ndim(x)
    if ndim not in ranks:
        want = " or ".join(str(r) for r in ranks)
        raise ValueError(f"{name} must have rank {want}, got shape {tuple(np.shape(x))}")
    return ndim


def check_floating(x: Any, name: str) -> None:
    """Raise TypeError unless ``x`` has a real floating dtype (ints and complex are refused)."""
    # np.result_type would read a list as dtype specs; np.asarray reads it as data.
    dtype = x.dtype if hasattr(x, "dtype") else as_array(x, name).dtype
    if not jnp.issubdtype(dtype, jnp.floating):  # jnp knows bfloat16 is floating
        raise TypeError(f"{name} must have a real floating dtype, got {dtype}")
