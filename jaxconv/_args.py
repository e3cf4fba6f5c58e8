"""Argument normalisers shared by every op, the errors they raise, and the layout table.

Each helper turns one user-facing argument into a canonical static form (an int tuple with one
entry per spatial axis, a per-side padding tuple of pairs, a layout string) and raises a
ValueError or TypeError that names the argument and the rule it broke. Ops call these before
tracing, so bad input never reaches XLA. The helpers take the number of spatial axes ``n``, so
1-D, 2-D and 3-D ops share them; 2-D keeps its own wording (``(h, w)``, ``(top, bottom)``).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

Pair = tuple[int, int]
Padding = tuple[Pair, Pair]  # ((top, bottom), (left, right))
Ints = tuple[int, ...]  # one int per spatial axis
Pads = tuple[tuple[int, int], ...]  # one (before, after) pair per spatial axis

#: Every layout string, with the kernel layout that goes with it. Axes are read off the
#: letters: N the batch, C the channels, every other letter a spatial axis (in order).
#: Channels-first layouts take O-I-spatial kernels (PyTorch's), the others spatial-I-O (JAX's).
LAYOUT_KERNELS: dict[str, str] = {
    "NCL": "OIL",
    "NLC": "LIO",
    "NCHW": "OIHW",
    "NHWC": "HWIO",
    "CHWN": "HWIO",  # batch last: XLA:CPU's fastest for small networks (kernels/batch_last.py)
    "NCDHW": "OIDHW",
    "NDHWC": "DHWIO",
}

#: The layouts the 2-D ops accept, in the order their error messages list them.
LAYOUTS = ("NCHW", "NHWC", "CHWN")

#: The layouts of the ops over ``n`` spatial axes, by ``n`` (channels-first first: the default).
LAYOUTS_BY_NDIM: dict[int, tuple[str, ...]] = {
    1: ("NCL", "NLC"),
    2: LAYOUTS,
    3: ("NCDHW", "NDHWC"),
}


def spatial_letters(layout: str) -> str:
    """The spatial axes' letters of ``layout``, in order ("HW" for NCHW and CHWN, "L" for NLC)."""
    return "".join(c for c in layout if c not in "NC")


def layout_axes(layout: str, batched: bool = True) -> tuple[int, Ints]:
    """``(channel axis, spatial axes)`` of an array in ``layout``; unbatched arrays have no N."""
    letters = layout if batched else layout.replace("N", "")
    spatial = tuple(i for i, c in enumerate(letters) if c not in "NC")
    return letters.index("C"), spatial


def _is_int(value: Any) -> bool:
    # bool is an int subclass; a True stride is always a bug.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_seq(value: Any, n: int) -> bool:
    # bytes are a Sequence of ints: b"2" would read as the int 50
    return isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == n


def _expand_single(value: Any, n: int) -> Any:
    """A one-element sequence of an int as ``n`` copies, as PyTorch expands ``stride=(2,)``."""
    if n != 1 and _is_seq(value, 1) and _is_int(value[0]):
        return tuple(value) * n
    return value


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


def as_tuple(value: Any, n: int, name: str) -> Ints:
    """Normalise an int, a one-element or a length-``n`` sequence of ints to an ``n``-tuple
    of ints (a one-element sequence is repeated, as in PyTorch)."""
    value = _expand_single(value, n)
    if _is_int(value):
        return (int(value),) * n
    if _is_seq(value, n):
        return tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(value))
    want = "a pair of ints (h, w)" if n == 2 else f"a sequence of {n} ints"
    raise TypeError(f"{name} must be an int or {want}, got {value!r}")


def positive_tuple(value: Any, n: int, name: str) -> Ints:
    """Like :func:`as_tuple`, and every entry must be >= 1 and at most :data:`MAX_GEOMETRY`."""
    values = as_tuple(value, n, name)
    if min(values) < 1:
        raise ValueError(f"{name} must be positive (>= 1), got {value!r}")
    return tuple(as_int(v, f"{name}[{i}]") for i, v in enumerate(values))


def as_pair(value: Any, name: str) -> Pair:
    """:func:`as_tuple` for the two axes ``(h, w)``."""
    return as_tuple(value, 2, name)  # type: ignore[return-value]


def positive_pair(value: Any, name: str) -> Pair:
    """:func:`positive_tuple` for the two axes ``(h, w)``."""
    return positive_tuple(value, 2, name)  # type: ignore[return-value]


def padding_sides(value: Any, n: int, name: str = "padding") -> Pads:
    """Normalise numeric padding to one ``(before, after)`` pair per axis, all >= 0 and at
    most :data:`MAX_GEOMETRY`.

    Accepts ``p`` (every side), ``(p,)`` (the same, as in PyTorch), ``n`` ints (symmetric per
    axis) and ``n`` pairs (per side; in 2-D ``((top, bottom), (left, right))``). Strings are
    handled by the caller.
    """
    value = _expand_single(value, n)
    if n == 2:
        want = "an int, (ph, pw) or ((top, bottom), (left, right))"
    else:
        want = f"an int, {n} ints or {n} (before, after) pairs"
    if _is_int(value):
        pads = ((int(value), int(value)),) * n
    elif _is_seq(value, n) and all(_is_int(v) for v in value):
        pads = tuple((int(v), int(v)) for v in value)
    elif _is_seq(value, n) and all(_is_seq(v, 2) for v in value):
        pads = tuple(
            (as_int(lo, f"{name}[{i}][0]"), as_int(hi, f"{name}[{i}][1]"))
            for i, (lo, hi) in enumerate(value)
        )
    else:
        raise TypeError(f"{name} must be {want}, got {value!r}")
    if min(min(side) for side in pads) < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}")
    return tuple(
        (as_int(lo, f"{name}[{i}][0]"), as_int(hi, f"{name}[{i}][1]"))
        for i, (lo, hi) in enumerate(pads)
    )


def padding_pairs(value: Any, name: str = "padding") -> Padding:
    """:func:`padding_sides` for two axes: ``((top, bottom), (left, right))``."""
    return padding_sides(value, 2, name)  # type: ignore[return-value]


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
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def check_layout(
    layout: Any, allowed: Sequence[str] = LAYOUTS, *, optional: bool = False
) -> str | None:
    """Return ``layout`` if it is one of ``allowed`` (or None, when ``optional``), else raise
    ValueError listing them."""
    if optional and layout is None:
        return None
    if layout not in allowed:
        either = "None or one of" if optional else "one of"
        raise ValueError(f"layout must be {either} {tuple(allowed)}, got {layout!r}")
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
