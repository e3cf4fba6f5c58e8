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

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


def _larger(a: tuple[Array, Array], b: tuple[Array, Array]) -> tuple[Array, Array]:
    return jnp.maximum(a[0], b[0]), jnp.maximum(a[1], b[1])


def stored(x: Array) -> Array:
    """``x`` itself (an integer or boolean array of any shape), as the result of a two-operand
    reduction over a new axis of length 2 (``x`` and the dtype's minimum, so the maximum is
    ``x``): the same values, computed once and written out by XLA:CPU."""
    dtype = x.dtype
    if dtype == jnp.bool_:
        return stored(x.astype(jnp.int8)).astype(jnp.bool_)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"stored: x must be an integer or boolean array, got {dtype}")
    low = np.array(jnp.iinfo(dtype).min, dtype)
    pair = jnp.stack([x, jnp.full_like(x, low)])  # (2, *x.shape)
    out, _ = lax.reduce((pair, pair), (low, low), _larger, (0,))
    return out
