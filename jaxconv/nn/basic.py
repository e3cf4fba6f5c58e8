"""The containers and the simple layers: ``Sequential``, ``Linear``, reshaping (``Flatten``,
``Unfold``, ``Fold``, pixel shuffles), ``Dropout``, activations, and ``count_params``."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import folding
from jaxconv.nn._common import (
    ALL_LAYER_LAYOUTS,
    Array,
    call_layer,
    torch_bias_init,
    torch_weight_init,
)


class Sequential(nn.Module):
    """torch.nn.Sequential: applies ``layers`` in order; layer ``i`` is named ``"i"``, so a
    parameter's path is torch's key (``"3.weight"`` -> ``params["3"]["weight"]``).

    ``layers`` is a tuple of (unbound) modules, written as torch's argument list:
    ``Sequential((Conv2d(1, 6, 5), ReLU(), MaxPool2d(2)))``. ``train`` is passed to the
    layers whose call takes it. ``example_input_shape`` (optional) is a batched input shape
    the network accepts; :mod:`jaxconv.convert` traces the network on it to learn its
    variables' shapes.
    """

    layers: tuple[nn.Module, ...]
    example_input_shape: tuple[int, ...] | None = None

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Any:
        for i, layer in enumerate(self.layers):
            x = call_layer(layer.clone(parent=self, name=str(i)), x, train)
        return x


class Linear(nn.Module):
    """torch.nn.Linear: ``x @ weight.T + bias`` over the last axis, (*, in) -> (*, out).
    ``weight`` is torch's (out_features, in_features); both drawn as torch's defaults."""

    in_features: int
    out_features: int
    bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: Any) -> Array:
        x = jnp.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(
                f"Linear: input's last axis must have in_features={self.in_features} entries, "
                f"got shape {x.shape}"
            )
        shape = (self.out_features, self.in_features)
        weight = self.param("weight", torch_weight_init, shape, self.dtype)
        y = jnp.matmul(x, weight.T)
        if self.bias:
            init = torch_bias_init(self.in_features)
            y = y + self.param("bias", init, (self.out_features,), self.dtype)
        return y


class Unfold(nn.Module):
    """torch.nn.Unfold on :func:`jaxconv.unfold` (im2col): (N, C, H, W) or (C, H, W) ->
    (N, C * prod(kernel_size), L) or (C * prod(kernel_size), L), ``L`` the number of
    windows."""

    kernel_size: Any
    dilation: Any = 1
    padding: Any = 0
    stride: Any = 1

    def __call__(self, x: Any) -> Array:
        return folding.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)


class Fold(nn.Module):
    """torch.nn.Fold on :func:`jaxconv.fold` (col2im, overlapping windows summed):
    (N, C * prod(kernel_size), L) or (C * prod(kernel_size), L) -> (N, C, *output_size) or
    (C, *output_size)."""

    output_size: Any
    kernel_size: Any
    dilation: Any = 1
    padding: Any = 0
    stride: Any = 1

    def __call__(self, x: Any) -> Array:
        return folding.fold(
            x, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride
        )


class PixelShuffle(nn.Module):
    """torch.nn.PixelShuffle on :func:`jaxconv.pixel_shuffle`: (*, C * r**2, H, W) ->
    (*, C, H * r, W * r), ``r = upscale_factor``."""

    upscale_factor: int

    def __call__(self, x: Any) -> Array:
        return folding.pixel_shuffle(x, self.upscale_factor)


class PixelUnshuffle(nn.Module):
    """torch.nn.PixelUnshuffle on :func:`jaxconv.pixel_unshuffle`: (*, C, H * r, W * r) ->
    (*, C * r**2, H, W), ``r = downscale_factor``."""

    downscale_factor: int

    def __call__(self, x: Any) -> Array:
        return folding.pixel_unshuffle(x, self.downscale_factor)


class Flatten(nn.Module):
    """torch.nn.Flatten: merges axes ``start_dim`` .. ``end_dim`` (inclusive) into one.

    ``layout`` names the input's layout; channels first (any of ``"NCL"``, ``"NCHW"``,
    ``"NCDHW"``, the default ``"NCHW"``) flattens the axes as they are. Channels last
    (``"NLC"``, ``"NHWC"``, ``"NDHWC"``; input batched or unbatched in that layout) first moves
    the channels to torch's place, then flattens as torch does, so the result is torch's for
    the same data in torch's layout (C-major: a following ``Linear`` takes torch's weight as
    it is) and ``start_dim``/``end_dim`` count torch's axes. At the end of a network this is a
    small transpose (after a global pool, none at all).
    """

    start_dim: int = 1
    end_dim: int = -1
    layout: str = "NCHW"

    def __post_init__(self) -> None:
        if self.layout not in ALL_LAYER_LAYOUTS:
            raise ValueError(
                f"Flatten: layout must be one of {ALL_LAYER_LAYOUTS}, got {self.layout!r}"
            )
        super().__post_init__()

    def __call__(self, x: Any) -> Array:
        x = jnp.asarray(x)
        if self.layout.endswith("C"):  # channels last: move them to torch's place first
            if x.ndim not in (len(self.layout), len(self.layout) - 1):
                raise ValueError(
                    f"Flatten: layout={self.layout!r} takes input of rank {len(self.layout)} "
                    f"or {len(self.layout) - 1} (unbatched), got shape {x.shape}"
                )
            x = jnp.moveaxis(x, -1, 1 if x.ndim == len(self.layout) else 0)  # (N, C, *spatial)
        start, end = self.start_dim % max(x.ndim, 1), self.end_dim % max(x.ndim, 1)
        if start > end:
            raise ValueError(
                f"Flatten: start_dim ({self.start_dim}) comes after end_dim ({self.end_dim}) "
                f"for input of shape {x.shape}"
            )
        return x.reshape(x.shape[:start] + (-1,) + x.shape[end + 1 :])


class Dropout(nn.Module):
    """torch.nn.Dropout: in training zeroes each element with probability ``p`` and scales the
    rest by ``1 / (1 - p)`` (flax's ``nn.Dropout``, rng stream ``"dropout"``); identity in
    evaluation."""

    p: float = 0.5
    inplace: bool = False  # torch's argument; arrays are immutable here, so it changes nothing

    def __post_init__(self) -> None:
        if not 0 <= self.p <= 1:
            raise ValueError(f"Dropout: p must be in [0, 1], got {self.p}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        return nn.Dropout(rate=self.p, deterministic=not train)(x)


class ReLU(nn.Module):
    """torch.nn.ReLU."""

    inplace: bool = False  # torch's argument; no effect on immutable arrays

    def __call__(self, x: Any) -> Array:
        return jax.nn.relu(x)


class Sigmoid(nn.Module):
    """torch.nn.Sigmoid."""

    def __call__(self, x: Any) -> Array:
        return jax.nn.sigmoid(x)


class Tanh(nn.Module):
    """torch.nn.Tanh."""

    def __call__(self, x: Any) -> Array:
        return jnp.tanh(x)


class Identity(nn.Module):
    """torch.nn.Identity."""

    def __call__(self, x: Any) -> Any:
        return x


def count_params(variables: Any) -> int:
    """Number of trainable parameters (the ``params`` collection), as torch's
    ``sum(p.numel() for p in net.parameters())``."""
    params = variables.get("params", {}) if hasattr(variables, "get") else variables
    return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(params)))
