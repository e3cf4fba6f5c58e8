"""A value XLA:CPU computes once and stores, instead of recomputing it inside its consumers.

Why: XLA:CPU fuses an elementwise producer into every consumer loop that reads it, and
duplicates it where several consumers (or several reads of one consumer) need it. For a value
that is cheap to store but dear to recompute that is a loss: max pooling's selection (a chain
of compares over every tap of a window) was recomputed for each tap of each window in the
input-sized gradient loop of a 3x3 stride-2 pool, several times the cost of the pool itself.
``optimization_barrier`` does not stop it (XLA:CPU expands barriers before fusing); a variadic
reduction does: XLA:CPU does not fuse one into a consumer, so its result is written once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


def _larger(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
    return jnp.maximum(a[0], b[0]), jnp.maximum(a[1], b[1])


def _sum(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
    return a[0] + b[0], a[1] + b[1]


def _reduced_pair(x: Array, other: np.ndarray, reducer: Any) -> Array:
    """``x``, reduced by the two-operand ``reducer`` over a new axis of length 2 holding ``x``
    and ``other``, with ``other`` as the initial value too (``reducer``'s identity on x)."""
    pair = jnp.stack([x, jnp.full_like(x, other)])  # (2, *x.shape)
    out, _ = lax.reduce((pair, pair), (other, other), reducer, (0,))
    return out


@jax.custom_jvp
def _stored_float(x: Array) -> Array:
    # x + (-0.0) is x for every x, -0.0 and NaN included; XLA:CPU's maximum in a reduction
    # can drop NaN, so the floats are not stored by the maximum with -inf
    return _reduced_pair(x, np.array(-0.0, x.dtype), _sum)


@_stored_float.defjvp
def _stored_float_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    """The identity's derivative (the tangent is not stored: it is a different value)."""
    return _stored_float(primals[0]), tangents[0]


def stored(x: Array) -> Array:
    """``x`` itself (an integer, boolean or floating array of any shape), as the result of a
    two-operand reduction over a new axis of length 2: the maximum of ``x`` and the dtype's
    minimum for integers, the sum of ``x`` and -0.0 for floats (NaN, -0.0 and inf kept):
    the same values, computed once and written out by XLA:CPU. Differentiable (floats): the
    identity's derivative."""
    dtype = x.dtype
    if dtype == jnp.bool_:
        return stored(x.astype(jnp.int8)).astype(jnp.bool_)
    if jnp.issubdtype(dtype, jnp.floating):
        return _stored_float(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"stored: x must be an integer, boolean or floating array, got {dtype}")
    return _reduced_pair(x, np.array(jnp.iinfo(dtype).min, dtype), _larger)
