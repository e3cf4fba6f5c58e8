"""Convolution layers: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``, as torch.nn's.

``layout`` picks the activations' layout: torch's channels first (``"NCL"``, ``"NCHW"``,
``"NCDHW"``, the default) or channels last (``"NLC"``, ``"NHWC"``, ``"NDHWC"``). Channels last
stores the weight in the kernel form jaxconv's functional ops take in that layout (a conv's
OIHW as HWIO, a transposed conv's (C_in, C_out // groups, kh, kw) as (kh, kw, C_out // groups,
C_in)), so its gradient comes out in the stored order and no transpose runs in the step. The
channels-last weight is drawn as torch's and then transposed: the same key gives the same
values in both layouts. :mod:`jaxconv.convert` transposes to and from torch's state_dict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxconv._args import as_int, layout_axes
from jaxconv.conv import conv1d, conv2d, conv3d
from jaxconv.conv_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from jaxconv.nn._common import (
    Array,
    channels_last_kernel,
    check_layer_layout,
    ntuple,
    positive,
    torch_bias_init,
    torch_to_channels_last,
    torch_weight_init,
)

_PADDING_MODES = {"zeros": None, "reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _check_channels_and_window(layer: nn.Module) -> str:
    """Construction checks every conv layer shares (channels, groups, kernel, stride,
    dilation), raising ValueError/TypeError as torch.nn refuses them; returns the layer's
    class name for the caller's own messages."""
    name = type(layer).__name__
    for arg in ("in_channels", "out_channels", "groups"):
        if as_int(getattr(layer, arg), arg) < 1:
            raise ValueError(f"{name}: {arg} must be >= 1, got {getattr(layer, arg)}")
    for arg in ("in_channels", "out_channels"):
        if getattr(layer, arg) % layer.groups:
            raise ValueError(
                f"{name}: {arg} ({getattr(layer, arg)}) must be divisible by groups "
                f"({layer.groups})"
            )
    positive(layer.kernel_size, layer._nd, "kernel_size")
    positive(layer.stride, layer._nd, "stride")
    positive(layer.dilation, layer._nd, "dilation")
    check_layer_layout(name, layer.layout, layer._nd)
    return name


def _channels_last_init(key: Any, torch_shape: tuple[int, ...], dtype: Any) -> Array:
    """torch's weight draw in torch's shape, transposed to the channels-last kernel form."""
    return channels_last_kernel(torch_weight_init(key, torch_shape, dtype))


def _weight(layer: nn.Module, torch_shape: tuple[int, ...]) -> Array:
    """The layer's ``weight`` parameter: torch's shape and draw, stored channels last (see
    the module docstring) when the layer's layout is."""
    if check_layer_layout(type(layer).__name__, layer.layout, layer._nd):
        return layer.param("weight", _channels_last_init, torch_shape, layer.dtype)
    return layer.param("weight", torch_weight_init, torch_shape, layer.dtype)


def torch_param_axes(layer: nn.Module) -> dict[str, tuple[int, ...]]:
    """``{"weight": perm}`` for a channels-last conv layer (stored = torch's weight transposed
    by ``perm``), ``{}`` for a channels-first one: what :mod:`jaxconv.convert` reads."""
    if check_layer_layout(type(layer).__name__, layer.layout, layer._nd):
        return {"weight": torch_to_channels_last(layer._nd)}
    return {}


class _ConvNd(nn.Module):
    """torch.nn.ConvNd on jaxconv's functional conv. Input (N, C_in, *spatial) or unbatched
    (C_in, *spatial); output (N, C_out, *out). Parameters ``weight`` (C_out, C_in // groups,
    *kernel_size) and ``bias`` (C_out,), drawn as torch's defaults. ``dtype`` is the
    parameters' dtype (torch's ``dtype=``). ``layout`` channels last: input (N, *spatial,
    C_in) or (*spatial, C_in), output (N, *out, C_out), ``weight`` (*kernel_size, C_in //
    groups, C_out)."""

    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    dtype: Any = jnp.float32
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _nd: ClassVar[int]
    _op: ClassVar[Callable[..., Array]]  # (x, w, b, *, stride, padding, dilation, groups, layout)

    def __post_init__(self) -> None:
        name = _check_channels_and_window(self)
        if self.padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"{name}: padding_mode must be one of {tuple(_PADDING_MODES)}, "
                f"got {self.padding_mode!r}"
            )
        if isinstance(self.padding, str):
            if self.padding not in ("same", "valid"):
                raise ValueError(f"{name}: padding must be 'same' or 'valid', got {self.padding!r}")
            if self.padding == "same" and max(ntuple(self.stride, self._nd, "stride")) > 1:
                raise ValueError(f"{name}: padding='same' needs stride 1, got {self.stride!r}")
        elif min(ntuple(self.padding, self._nd, "padding")) < 0:
            raise ValueError(f"{name}: padding must be non-negative, got {self.padding!r}")
        super().__post_init__()

    def _explicit_padding(self) -> list[tuple[int, int]]:
        """Per spatial axis (lo, hi): torch's split for "same" (the odd one at the end)."""
        k = ntuple(self.kernel_size, self._nd, "kernel_size")
        d = ntuple(self.dilation, self._nd, "dilation")
        if self.padding == "valid":
            return [(0, 0)] * self._nd
        if self.padding == "same":
            totals = [di * (ki - 1) for ki, di in zip(k, d, strict=True)]
            return [(t // 2, t - t // 2) for t in totals]
        return [(p, p) for p in ntuple(self.padding, self._nd, "padding")]

    @nn.compact
    def __call__(self, x: Any) -> Array:
        k = ntuple(self.kernel_size, self._nd, "kernel_size")
        fan_in = self.in_channels // self.groups * math.prod(k)
        weight = _weight(self, (self.out_channels, self.in_channels // self.groups) + k)
        bias = (
            self.param("bias", torch_bias_init(fan_in), (self.out_channels,), self.dtype)
            if self.bias
            else None
        )
        padding = self.padding
        mode = _PADDING_MODES[self.padding_mode]
        if mode is not None:  # pad the input as torch does, then convolve without padding
            x = jnp.asarray(x)
            _, spatial = layout_axes(self.layout, batched=x.ndim == self._nd + 2)
            pads = [(0, 0)] * x.ndim
            for axis, pad in zip(spatial, self._explicit_padding(), strict=True):
                pads[axis] = pad
            x, padding = jnp.pad(x, pads, mode=mode), 0
        return type(self)._op(
            x,
            weight,
            bias,
            stride=self.stride,
            padding=padding,
            dilation=self.dilation,
            groups=self.groups,
            layout=self.layout,
        )

    def torch_param_axes(self) -> dict[str, tuple[int, ...]]:
        """How the stored parameters permute torch's (see :func:`torch_param_axes`)."""
        return torch_param_axes(self)


class Conv2d(_ConvNd):
    """torch.nn.Conv2d: input (N, C_in, H, W) or (C_in, H, W); weight OIHW. ``layout="NHWC"``:
    input (N, H, W, C_in) or (H, W, C_in); weight HWIO."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(conv2d)


class Conv1d(_ConvNd):
    """torch.nn.Conv1d: input (N, C_in, L) or (C_in, L); weight (C_out, C_in // groups, k).
    ``layout="NLC"``: input (N, L, C_in) or (L, C_in); weight (k, C_in // groups, C_out)."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(conv1d)


class Conv3d(_ConvNd):
    """torch.nn.Conv3d: input (N, C_in, D, H, W) or (C_in, D, H, W); weight OIDHW.
    ``layout="NDHWC"``: input (N, D, H, W, C_in) or (D, H, W, C_in); weight DHWIO."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(conv3d)


class _ConvTransposeNd(nn.Module):
    """torch.nn.ConvTransposeNd on jaxconv's functional transposed conv (the gradient of the
    forward conv with respect to its input). Input (N, C_in, *spatial) or unbatched (C_in,
    *spatial); output (N, C_out, *out) with per axis ``out = (n - 1) * stride - 2 * padding +
    dilation * (k - 1) + output_padding + 1``.

    Parameters as torch's: ``weight`` (C_in, C_out // groups, *kernel_size) (the forward
    conv's layout, this layer's input channels first) and ``bias`` (C_out,). torch draws them
    with the fan computed from weight axis 1, so ``fan_in = C_out // groups * prod(kernel)``
    here (not C_in): both bounds are ``1 / sqrt(fan_in)`` of that.

    ``__call__(x, output_size=None)`` is torch's ``forward(input, output_size=None)``: an
    ``output_size`` of ``n`` spatial sizes (or the whole shape, batch and channels included)
    picks the output_padding that gives it, in place of ``output_padding``; each size must lie
    in ``[out_0, out_0 + stride - 1]`` (``out_0`` the size without output_padding), else
    ValueError. Only ``padding_mode="zeros"`` exists, as in torch.

    ``layout`` channels last: input (N, *spatial, C_in) or (*spatial, C_in), output (N,
    *out, C_out), ``weight`` (*kernel_size, C_out // groups, C_in); a whole-shape
    ``output_size`` is then in that layout too.
    """

    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    output_padding: Any = 0
    groups: int = 1
    bias: bool = True
    dilation: Any = 1
    padding_mode: str = "zeros"
    dtype: Any = jnp.float32
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _nd: ClassVar[int]
    _op: ClassVar[Callable[..., Array]]

    def __post_init__(self) -> None:
        name = _check_channels_and_window(self)
        if self.padding_mode != "zeros":
            raise ValueError(
                f'{name}: only padding_mode="zeros" is supported, got {self.padding_mode!r}'
            )
        for arg in ("padding", "output_padding"):
            if isinstance(getattr(self, arg), str):
                raise TypeError(f"{name}: {arg} must be an int or ints, got a string")
            if min(ntuple(getattr(self, arg), self._nd, arg)) < 0:
                raise ValueError(f"{name}: {arg} must be non-negative, got {getattr(self, arg)!r}")
        super().__post_init__()

    def _output_padding(self, shape: tuple[int, ...], output_size: Any) -> tuple[int, ...]:
        """torch's ``_output_padding``: ``output_padding``, or the one that gives
        ``output_size`` (validated against the input's spatial sizes)."""
        n, name = self._nd, type(self).__name__
        if output_size is None:
            return ntuple(self.output_padding, n, "output_padding")
        if isinstance(output_size, str) or not isinstance(output_size, Sequence):
            raise TypeError(f"{name}: output_size must be a sequence of ints, got {output_size!r}")
        lead = len(shape) - n  # 2 batched, 1 unbatched
        _, spatial = layout_axes(self.layout, batched=lead == 2)
        sizes = list(output_size)
        if len(sizes) == lead + n:
            sizes = [sizes[a] for a in spatial]
        if len(sizes) != n:
            raise ValueError(
                f"{name}: for {len(shape)}-D input, output_size must have {n} or {lead + n} "
                f"elements, got {output_size!r}"
            )
        sizes = [as_int(v, f"output_size[{i}]") for i, v in enumerate(sizes)]
        k = ntuple(self.kernel_size, n, "kernel_size")
        s = ntuple(self.stride, n, "stride")
        p = ntuple(self.padding, n, "padding")
        d = ntuple(self.dilation, n, "dilation")
        low = [(shape[spatial[i]] - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + 1 for i in range(n)]
        high = [lo + si - 1 for lo, si in zip(low, s, strict=True)]
        if any(not lo <= v <= hi for v, lo, hi in zip(sizes, low, high, strict=True)):
            raise ValueError(
                f"{name}: requested an output_size of {tuple(sizes)}, but valid sizes range "
                f"from {tuple(low)} to {tuple(high)} (for an input of "
                f"{tuple(shape[a] for a in spatial)})"
            )
        return tuple(v - lo for v, lo in zip(sizes, low, strict=True))

    @nn.compact
    def __call__(self, x: Any, output_size: Any = None) -> Array:
        k = ntuple(self.kernel_size, self._nd, "kernel_size")
        c_out = self.out_channels // self.groups
        # torch_weight_init reads fan_in off axis 1: C_out // groups here, torch's rule.
        weight = _weight(self, (self.in_channels, c_out) + k)
        bias = (
            self.param(
                "bias", torch_bias_init(c_out * math.prod(k)), (self.out_channels,), self.dtype
            )
            if self.bias
            else None
        )
        x = jnp.asarray(x)
        return type(self)._op(
            x,
            weight,
            bias,
            stride=self.stride,
            padding=self.padding,
            output_padding=self._output_padding(x.shape, output_size),
            groups=self.groups,
            dilation=self.dilation,
            layout=self.layout,
        )

    def torch_param_axes(self) -> dict[str, tuple[int, ...]]:
        """How the stored parameters permute torch's (see :func:`torch_param_axes`)."""
        return torch_param_axes(self)


class ConvTranspose1d(_ConvTransposeNd):
    """torch.nn.ConvTranspose1d: input (N, C_in, L) or (C_in, L); weight (C_in, C_out //
    groups, k). ``layout="NLC"``: input (N, L, C_in); weight (k, C_out // groups, C_in)."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(conv_transpose1d)


class ConvTranspose2d(_ConvTransposeNd):
    """torch.nn.ConvTranspose2d: input (N, C_in, H, W) or (C_in, H, W); weight (C_in, C_out //
    groups, kh, kw). ``layout="NHWC"``: input (N, H, W, C_in); weight (kh, kw, C_out //
    groups, C_in)."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(conv_transpose2d)


class ConvTranspose3d(_ConvTransposeNd):
    """torch.nn.ConvTranspose3d: input (N, C_in, D, H, W) or (C_in, D, H, W); weight (C_in,
    C_out // groups, kd, kh, kw). ``layout="NDHWC"``: input (N, D, H, W, C_in); weight (kd,
    kh, kw, C_out // groups, C_in)."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(conv_transpose3d)
