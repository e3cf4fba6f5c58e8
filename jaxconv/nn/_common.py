"""What every layer shares: torch's default initialisation, construction-time argument
normalisers, and how a container passes ``train`` on."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconv._args import LAYOUTS_BY_NDIM, as_tuple

Array = jax.Array


#: torch's ``kaiming_uniform_(w, a=sqrt(5))`` for a weight whose axis 0 is the output and axis
#: 1 the input (OI... for convs, (out, in) for linear): gain sqrt(2 / (1 + 5)) = sqrt(1/3),
#: bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in), fan_in = shape[1] * prod(shape[2:]).
torch_weight_init = nn.initializers.variance_scaling(
    1 / 3, "fan_in", "uniform", in_axis=1, out_axis=0
)


def torch_bias_init(fan_in: int) -> Callable[..., Array]:
    """torch's default bias init: uniform in ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]`` (0 if
    ``fan_in`` is 0)."""
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: Array, shape: Sequence[int], dtype: Any = jnp.float32) -> Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


# --- argument normalisers (construction time, before any tracing) ----------------------------


def ntuple(value: Any, n: int, name: str) -> tuple[int, ...]:
    """An int, a 1-sequence (repeated, as torch's ops do) or a sequence of ``n`` ints -> an
    n-tuple of ints (TypeError naming ``name``)."""
    return as_tuple(value, n, name)


def positive(value: Any, n: int, name: str) -> tuple[int, ...]:
    t = ntuple(value, n, name)
    if min(t) < 1:
        raise ValueError(f"{name} must be positive (>= 1), got {value!r}")
    return t


#: The layouts a layer over ``n`` spatial axes takes: channels first (torch's, the default)
#: and channels last (JAX's native form, where XLA:CPU runs convs without transposes).
LAYER_LAYOUTS: dict[int, tuple[str, str]] = {
    n: (LAYOUTS_BY_NDIM[n][0], LAYOUTS_BY_NDIM[n][1]) for n in (1, 2, 3)
}

#: Every layout name a layer takes, channels-first ones first.
ALL_LAYER_LAYOUTS = tuple(v[0] for v in LAYER_LAYOUTS.values()) + tuple(
    v[1] for v in LAYER_LAYOUTS.values()
)


def check_layer_layout(layer: str, layout: Any, nd: int) -> bool:
    """Whether ``layout`` is the channels-last name of ``nd`` spatial axes (False: torch's
    channels-first one); ValueError naming ``layout`` and ``layer`` for anything else."""
    allowed = LAYER_LAYOUTS[nd]
    if not isinstance(layout, str) or layout not in allowed:
        raise ValueError(f"{layer}: layout must be one of {allowed}, got {layout!r}")
    return layout == allowed[1]


def channels_last_kernel(weight: Array) -> Array:
    """A conv weight in torch's order (axis 0, axis 1, *kernel) -> (*kernel, axis 1, axis 0):
    OIHW -> HWIO for a conv, (C_in, C_out // g, kh, kw) -> (kh, kw, C_out // g, C_in) for a
    transposed conv (the channels-last forms jaxconv's functional ops take)."""
    nd = weight.ndim - 2
    return jnp.transpose(weight, torch_to_channels_last(nd))


def torch_to_channels_last(nd: int) -> tuple[int, ...]:
    """The axes permutation from a torch conv weight to its channels-last form (see
    :func:`channels_last_kernel`): ``(2, ..., nd + 1, 1, 0)``."""
    return tuple(range(2, nd + 2)) + (1, 0)


@functools.cache
def takes_train(module_type: type) -> bool:
    """Whether a module type's ``__call__`` takes a ``train`` argument (so containers pass it)."""
    return "train" in inspect.signature(module_type.__call__).parameters


def call_layer(layer: nn.Module, x: Any, train: bool) -> Any:
    return layer(x, train=train) if takes_train(type(layer)) else layer(x)
