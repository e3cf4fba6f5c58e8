"""The benchmark's one door into jaxconv's internals: every private or engine name it uses.

The benchmark otherwise calls only public functions (``jaxconv.conv2d(..., impl=, layout=)``,
``jaxconv.max_pool2d``, ``jaxconv.train.train_epoch``, ...). What it needs beyond them, which
path ``impl="auto"`` picks and which layout training uses, is asked here, so that a move of
the speed paths into an engine package re-points this module alone.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from jaxconv import geometry as _geometry
from jaxconv.kernels import dispatch as _dispatch


def conv_auto_impl(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    dtype: Any,
    platform: str,
    *,
    padding: Any = 0,
    layout: str = "NHWC",
) -> str:
    """The ``conv2d`` implementation ``impl="auto"`` runs for these shapes on ``platform``
    (``"cpu"``, ``"gpu"``, ...); ``x_shape``/``w_shape`` as :func:`jaxconv.conv2d` takes them
    in ``layout``."""
    geom = _geometry.conv_geometry(x_shape, w_shape, padding=padding, layout=layout)
    return _dispatch.select_impl(geom, dtype, platform)


def training_layout(platform: str) -> str:
    """LeNet's activation layout that ``jaxconv train`` uses on ``platform`` by default."""
    return _dispatch.default_layout(platform)


def pool_geometry(
    x_shape: tuple[int, ...],
    layout: str,
    kernel_size: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
) -> Any:
    """The resolved pooling geometry of ``max_pool2d``'s arguments for an input of ``x_shape``
    in ``layout``."""
    return _geometry.pool_geometry(
        x_shape, layout, kernel_size, stride, padding, dilation, ceil_mode
    )


def pool_tiles(geometry: Any) -> bool:
    """Whether max pooling takes its rule for windows that tile the input (XLA:CPU)."""
    return _dispatch.tiles(geometry)


def pool_tiles_switch() -> tuple[ModuleType, str]:
    """(module, attribute) a test patches to ``lambda geometry: False`` to force max
    pooling's general derivative rule instead of the tiled one."""
    return _dispatch, "tiles"
