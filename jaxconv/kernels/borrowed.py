"""A conv whose values come from one formulation and whose derivatives come from another.

Why: on XLA:CPU the fastest forward of a layer is not always a formulation whose derivatives
are fast (a ``lax.map`` over chunks, differentiated by JAX, adds every chunk's input gradient
into a full-size buffer); jaxconv's registry already has paths with fast derivatives.

How: a ``custom_jvp`` whose primal output is ``forward``'s and whose tangent is the tangent of
``tangent_conv`` (an entry of the conv registry computing the same function). Forward mode,
reverse mode (JAX transposes that tangent) and higher derivatives are then those of
``tangent_conv``; the values ``tangent_conv`` computes alongside its tangent are unused, and
XLA removes them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxconv.geometry import ConvGeometry

Array = jax.Array

ConvImpl = Callable[[Array, Array, ConvGeometry, Any], Array]
BorrowingConv = Callable[[Array, Array, ConvGeometry, Any, ConvImpl], Array]


def with_derivatives_of(forward: ConvImpl) -> BorrowingConv:
    """``f(x, w, geom, precision, tangent_conv)``: ``forward(x, w, geom, precision)``'s values
    with ``tangent_conv``'s derivatives (``geom``, ``precision`` and ``tangent_conv`` are
    static)."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
    def conv(x: Array, w: Array, geom: ConvGeometry, precision: Any, tangent_conv: ConvImpl):
        return forward(x, w, geom, precision)

    @functools.partial(conv.defjvp, symbolic_zeros=True)
    def conv_jvp(
        geom: ConvGeometry,
        precision: Any,
        tangent_conv: ConvImpl,
        primals: tuple[Array, Array],
        tangents: tuple[Any, Any],
    ) -> tuple[Array, Array]:
        (x, w), (tx, tw) = primals, tangents
        y = forward(x, w, geom, precision)
        terms = []  # a symbolic-zero tangent (e.g. the input data) costs nothing
        if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
            terms.append(jax.jvp(lambda a: tangent_conv(a, w, geom, precision), (x,), (tx,))[1])
        if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
            terms.append(jax.jvp(lambda b: tangent_conv(x, b, geom, precision), (w,), (tw,))[1])
        return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)

    return conv
