"""jaxconv: the convolutional-network chapter of Dive into Deep Learning, in JAX.

Functional ops (NCHW/OIHW by default, as in the chapter's PyTorch code; ``layout="NHWC"`` for
JAX's native layout), their NumPy float64 oracles in :mod:`jaxconv.reference`, a Flax LeNet,
an optax training loop and the ``jaxconv`` command line.

Names are imported lazily so that ``import jaxconv`` stays cheap and the ops do not pull in
Flax, optax or the data loaders.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "corr2d": "conv",
    "corr2d_vmap": "conv",
    "corr2d_multi_in": "conv",
    "corr2d_multi_in_out": "conv",
    "conv1x1": "conv",
    "convolve2d": "conv",
    "conv1d": "conv",
    "conv2d": "conv",
    "conv3d": "conv",
    "conv_transpose1d": "conv_transpose",
    "conv_transpose2d": "conv_transpose",
    "conv_transpose3d": "conv_transpose",
    "max_pool1d": "pool",
    "max_pool2d": "pool",
    "max_pool3d": "pool",
    "avg_pool1d": "pool",
    "avg_pool2d": "pool",
    "avg_pool3d": "pool",
    "lp_pool1d": "pool",
    "lp_pool2d": "pool",
    "lp_pool3d": "pool",
    "pool2d": "pool",
    "adaptive_avg_pool1d": "adaptive",
    "adaptive_avg_pool2d": "adaptive",
    "adaptive_avg_pool3d": "adaptive",
    "adaptive_max_pool1d": "adaptive",
    "adaptive_max_pool2d": "adaptive",
    "adaptive_max_pool3d": "adaptive",
    "unfold": "folding",
    "fold": "folding",
    "pixel_shuffle": "folding",
    "pixel_unshuffle": "folding",
    "max_unpool1d": "unpool",
    "max_unpool2d": "unpool",
    "max_unpool3d": "unpool",
    "conv_output_shape": "shapes",
    "pool_output_shape": "shapes",
    "receptive_field": "shapes",
    "jit": "compile",
}
_SUBMODULES = (
    "reference",
    "shapes",
    "conv",
    "conv_transpose",
    "pool",
    "adaptive",
    "models",
    "nn",
    "networks",
    "convert",
    "data",
    "train",
    "distributed",
    "cli",
)

__all__ = sorted(_EXPORTS) + list(_SUBMODULES)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(f"jaxconv.{_EXPORTS[name]}")
        return getattr(module, name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jaxconv.{name}")
    raise AttributeError(f"module 'jaxconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
