"""A conv whose values come from one formulation and whose derivatives come from another.

Why: on XLA:CPU the fastest forward of a layer is not always a formulation whose derivatives
are fast (a ``lax.map`` over chunks, differentiated by JAX, adds every chunk's input gradient
into a full-size buffer); jaxconv's registry already has paths with fast derivatives.

How: a ``custom_jvp`` whose primal output is ``forward``'s and whose tangent is the tangent of
``tangent_conv`` (an entry of the conv registry computing the same function). Forward mode,
reverse mode (JAX transposes that tangent) and higher derivatives are then those of
``tangent_conv``. The values of a differentiated call are ``forward``'s too, and XLA removes
the ones ``tangent_conv`` computes alongside its tangent.
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
    with ``tangent_conv``'s derivatives (every argument after ``w`` is static)."""

    @functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
    def conv(
        x: Array, w: Array, geom: ConvGeometry, precision: Any, tangent_conv: ConvImpl
    ) -> Array:
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
        # Only the arguments with a tangent are differentiated: a symbolic-zero tangent (e.g.
        # the input data's) costs nothing.
        live = [not isinstance(t, jax.custom_derivatives.SymbolicZero) for t in (tx, tw)]
        if not any(live):
            y = forward(x, w, geom, precision)
            return y, jnp.zeros_like(y)
        args = [a for a, keep in zip((x, w), live, strict=True) if keep]
        dots = [t for t, keep in zip((tx, tw), live, strict=True) if keep]

        def conv_of_live(*live_args: Array) -> Array:
            given = iter(live_args)
            a, b = (next(given) if keep else v for v, keep in zip((x, w), live, strict=True))
            return tangent_conv(a, b, geom, precision)

        return forward(x, w, geom, precision), jax.jvp(conv_of_live, args, dots)[1]

    return conv
