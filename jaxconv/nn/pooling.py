"""Pooling layers: max, average, power-average, adaptive and unpooling, in 1-D, 2-D and 3-D.

Each takes ``layout``: torch's channels first (``"NCL"``, ``"NCHW"``, ``"NCDHW"``, the default)
or channels last (``"NLC"``, ``"NHWC"``, ``"NDHWC"``: input and output (N, *spatial, C)), passed
to its functional op; indices stay flat per channel plane in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn

from jaxconv import adaptive, unpool
from jaxconv.nn._common import Array, check_layer_layout
from jaxconv.pool import (
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
)


class _Pooling(nn.Module):
    """What every pooling layer shares: its dimension and the construction check of its
    ``layout`` (a dataclass field each base declares last, so torch's positional order
    stays)."""

    _nd: ClassVar[int]

    def __post_init__(self) -> None:
        check_layer_layout(type(self).__name__, self.layout, self._nd)  # type: ignore[attr-defined]
        super().__post_init__()


class _MaxPoolNd(_Pooling):
    """torch.nn.MaxPoolNd; ``stride=None`` means the kernel size. Returns (values, indices)
    with ``return_indices``."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    dilation: Any = 1
    return_indices: bool = False
    ceil_mode: bool = False
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Any]]

    def __call__(self, x: Any) -> Any:
        return type(self)._op(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
            layout=self.layout,
        )


class MaxPool1d(_MaxPoolNd):
    """torch.nn.MaxPool1d on :func:`jaxconv.max_pool1d`: (N, C, L) or (C, L)."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """torch.nn.MaxPool2d on :func:`jaxconv.max_pool2d`."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(max_pool2d)


class MaxPool3d(_MaxPoolNd):
    """torch.nn.MaxPool3d on :func:`jaxconv.max_pool3d`: (N, C, D, H, W) or (C, D, H, W)."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(max_pool3d)


class _AvgPoolNd(_Pooling):
    """torch.nn.AvgPoolNd; ``stride=None`` means the kernel size."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    ceil_mode: bool = False
    count_include_pad: bool = True
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Array]]

    def _options(self) -> dict[str, Any]:
        """Keyword arguments the op takes beyond those of every dimension."""
        return {}

    def __call__(self, x: Any) -> Array:
        return type(self)._op(
            x,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            ceil_mode=self.ceil_mode,
            count_include_pad=self.count_include_pad,
            layout=self.layout,
            **self._options(),
        )


class _AvgPoolOverrideNd(_AvgPoolNd):
    """AvgPool2d/3d: torch's ``divisor_override`` (not in AvgPool1d)."""

    divisor_override: int | None = None

    def _options(self) -> dict[str, Any]:
        return {"divisor_override": self.divisor_override}


class AvgPool1d(_AvgPoolNd):
    """torch.nn.AvgPool1d on :func:`jaxconv.avg_pool1d`: (N, C, L) or (C, L); no
    ``divisor_override``, as torch's."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(avg_pool1d)


class AvgPool2d(_AvgPoolOverrideNd):
    """torch.nn.AvgPool2d on :func:`jaxconv.avg_pool2d`."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(avg_pool2d)


class AvgPool3d(_AvgPoolOverrideNd):
    """torch.nn.AvgPool3d on :func:`jaxconv.avg_pool3d`: (N, C, D, H, W) or (C, D, H, W)."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(avg_pool3d)


class _LPPoolNd(_Pooling):
    """torch.nn.LPPoolNd: ``(sum of x**p over each window) ** (1/p)`` (``p = norm_type``; no
    padding, as torch's); ``stride=None`` means the kernel size."""

    norm_type: float
    kernel_size: Any
    stride: Any = None
    ceil_mode: bool = False
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Array]]

    def __call__(self, x: Any) -> Array:
        return type(self)._op(
            x,
            self.norm_type,
            self.kernel_size,
            stride=self.stride,
            ceil_mode=self.ceil_mode,
            layout=self.layout,
        )


class LPPool1d(_LPPoolNd):
    """torch.nn.LPPool1d on :func:`jaxconv.lp_pool1d`: (N, C, L) or (C, L)."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(lp_pool1d)


class LPPool2d(_LPPoolNd):
    """torch.nn.LPPool2d on :func:`jaxconv.lp_pool2d`: (N, C, H, W) or (C, H, W)."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(lp_pool2d)


class LPPool3d(_LPPoolNd):
    """torch.nn.LPPool3d on :func:`jaxconv.lp_pool3d`: (N, C, D, H, W) or (C, D, H, W)."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(lp_pool3d)


class _MaxUnpoolNd(_Pooling):
    """torch.nn.MaxUnpoolNd: the partial inverse of MaxPoolNd. ``__call__(x, indices,
    output_size=None)`` as torch's ``forward``: each value goes to its flat index (as
    ``MaxPoolNd(..., return_indices=True)`` gives it) in a zero output of the default size
    ``(n - 1) * stride - 2 * padding + kernel_size`` per axis, or of ``output_size``;
    ``stride=None`` means the kernel size."""

    kernel_size: Any
    stride: Any = None
    padding: Any = 0
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Array]]

    def __call__(self, x: Any, indices: Any, output_size: Any = None) -> Array:
        return type(self)._op(
            x,
            indices,
            self.kernel_size,
            self.stride,
            self.padding,
            output_size=output_size,
            layout=self.layout,
        )


class MaxUnpool1d(_MaxUnpoolNd):
    """torch.nn.MaxUnpool1d on :func:`jaxconv.max_unpool1d`: (N, C, L) or (C, L)."""

    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(unpool.max_unpool1d)


class MaxUnpool2d(_MaxUnpoolNd):
    """torch.nn.MaxUnpool2d on :func:`jaxconv.max_unpool2d`: (N, C, H, W) or (C, H, W)."""

    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(unpool.max_unpool2d)


class MaxUnpool3d(_MaxUnpoolNd):
    """torch.nn.MaxUnpool3d on :func:`jaxconv.max_unpool3d`: (N, C, D, H, W) or (C, D, H,
    W)."""

    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(unpool.max_unpool3d)


class _AdaptiveAvgPoolNd(_Pooling):
    """torch.nn.AdaptiveAvgPoolNd: output (N, C, *output_size) ((N, *output_size, C) channels
    last); None keeps an axis."""

    output_size: Any
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Array]]

    def __call__(self, x: Any) -> Array:
        return type(self)._op(x, self.output_size, layout=self.layout)


class _AdaptiveMaxPoolNd(_Pooling):
    """torch.nn.AdaptiveMaxPoolNd; (values, indices) with ``return_indices``."""

    output_size: Any
    return_indices: bool = False
    layout: str = "NCHW"  # each dimension's class sets its own channels-first default

    _op: ClassVar[Callable[..., Any]]

    def __call__(self, x: Any) -> Any:
        return type(self)._op(
            x, self.output_size, return_indices=self.return_indices, layout=self.layout
        )


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(adaptive.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(adaptive.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptiveAvgPoolNd):
    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(adaptive.adaptive_avg_pool3d)


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    layout: str = "NCL"
    _nd = 1
    _op = staticmethod(adaptive.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    layout: str = "NCHW"
    _nd = 2
    _op = staticmethod(adaptive.adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    layout: str = "NCDHW"
    _nd = 3
    _op = staticmethod(adaptive.adaptive_max_pool3d)
