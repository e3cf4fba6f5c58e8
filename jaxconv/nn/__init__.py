"""Flax linen layers with torch.nn's names, arguments, defaults, NCHW layout and parameters.

Each layer takes what its torch.nn namesake takes (``Conv2d(1, 96, kernel_size=11, stride=4,
padding=1)``, ``BatchNorm2d(64)``, ``Linear(6400, 4096)``), holds its parameters in torch's
layouts under torch's names (a conv's ``weight`` OIHW and ``bias``; a linear's ``weight``
(out_features, in_features); batch norm's ``weight``, ``bias`` in ``params`` and
``running_mean``, ``running_var``, ``num_batches_tracked`` in ``batch_stats``) and draws them
as torch does by default, so that a network's variables and its torch ``state_dict`` are the
same tree under the same keys (see :mod:`jaxconv.convert`).

``layout`` (a keyword of the conv, transposed conv, batch norm, pooling and ``Flatten``
layers) is torch's channels first by default (``"NCL"``, ``"NCHW"``, ``"NCDHW"``) or channels
last (``"NLC"``, ``"NHWC"``, ``"NDHWC"``). Channels last stores conv weights in that layout's
kernel form (HWIO; drawn as torch's, then transposed), so XLA:CPU runs the convs and the
optimizer reads the gradients without transposes; ``Flatten`` then restores torch's C-major
order, so the layers after it keep torch's weights, and :mod:`jaxconv.convert` transposes the
conv weights to and from torch's state_dict (each layer's ``torch_param_axes()``).

Layers compute through jaxconv's functional ops (the conv, transposed conv, pooling,
unpooling, adaptive pooling, fold and pixel-shuffle families). A layer's dimension is a class
attribute and its op another, so the 1-D, 2-D and 3-D layers are a subclass each::

    class Conv1d(_ConvNd):
        _nd = 1
        _op = staticmethod(conv1d)

``train`` replaces torch's ``module.train()`` / ``module.eval()``: layers that behave
differently in training (batch norm, dropout, and the containers that hold them) take
``train: bool = False`` in their call; :class:`Sequential` passes it on to the layers that do.
In training, call ``apply(..., train=True, mutable=["batch_stats"], rngs={"dropout": key})``.
"""

from __future__ import annotations

from jaxconv.nn._common import (
    LAYER_LAYOUTS,
    takes_train,
    torch_bias_init,
    torch_weight_init,
)
from jaxconv.nn.basic import (
    Dropout,
    Flatten,
    Fold,
    Identity,
    Linear,
    PixelShuffle,
    PixelUnshuffle,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
    Unfold,
    count_params,
)
from jaxconv.nn.conv import (
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
)
from jaxconv.nn.norm import (
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
)
from jaxconv.nn.pooling import (
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AdaptiveMaxPool3d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    LPPool1d,
    LPPool2d,
    LPPool3d,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    MaxUnpool1d,
    MaxUnpool2d,
    MaxUnpool3d,
)

__all__ = [
    "LAYER_LAYOUTS",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Dropout",
    "Flatten",
    "Fold",
    "Identity",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "Linear",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
    "PixelShuffle",
    "PixelUnshuffle",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "Unfold",
    "count_params",
    "takes_train",
    "torch_bias_init",
    "torch_weight_init",
]
