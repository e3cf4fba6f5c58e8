"""NumPy float64 oracles for every op in jaxconv, with the same names and signatures.

Written independently of the JAX code: explicit loops over output positions (vectorised over
batch and channels), the way the chapter and PyTorch's C++ kernels describe each op. Slow, but
obviously right; use it on small inputs only. Every function returns float64 arrays. One module
per family: :mod:`.chapter` (corr2d and the manual pool2d), :mod:`.conv`, :mod:`.pool`,
:mod:`.adaptive`, :mod:`.fold` (unfold / fold, pixel shuffles, max unpooling).
"""

from jaxconv.reference.adaptive import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
)
from jaxconv.reference.chapter import (
    conv1x1,
    convolve2d,
    corr2d,
    corr2d_multi_in,
    corr2d_multi_in_out,
    corr2d_vmap,
    pool2d,
)
from jaxconv.reference.conv import (
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from jaxconv.reference.fold import (
    fold,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
    pixel_shuffle,
    pixel_unshuffle,
    unfold,
)
from jaxconv.reference.pool import (
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

__all__ = [
    "corr2d",
    "corr2d_vmap",
    "corr2d_multi_in",
    "corr2d_multi_in_out",
    "conv1x1",
    "convolve2d",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "pool2d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "unfold",
    "fold",
    "pixel_shuffle",
    "pixel_unshuffle",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
]
