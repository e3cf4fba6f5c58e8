"""The book's modern CNNs (chapter 7) in Flax, layer for layer the PyTorch networks of the
book (``reference_torch/book_models.py``): AlexNet, VGG, NiN, GoogLeNet, LeNet with batch
normalization, ResNet-18 and DenseNet.

Every factory takes ``num_classes=10, in_channels=1`` and returns a :class:`jaxconv.nn.Sequential`
whose layers, paddings and nesting are the PyTorch network's, so that each variable's path is
its torch ``state_dict`` key (``"1.0.conv1.weight"`` is ``params["1"]["0"]["conv1"]["weight"]``)
and :mod:`jaxconv.convert` moves weights either way by name. Input is NCHW,
``(N, in_channels, H, W)``; output ``(N, num_classes)`` logits::

    net = resnet18()
    variables = net.init(jax.random.key(0), jnp.zeros((1, 1, 96, 96)))
    logits = net.apply(variables, x)                                   # evaluation
    logits, updates = net.apply(variables, x, train=True, mutable=["batch_stats"],
                                rngs={"dropout": key})                 # training

Layout: every factory also takes ``layout="NCHW"`` (torch's, the default) or ``"NHWC"``
(channels last: input ``(N, H, W, in_channels)``, every layer channels last, conv weights
stored HWIO; the network's ``example_input_shape`` follows). The two compute the
same function: ``Flatten`` keeps torch's C-major order, so the Linear layers' weights are
torch's in both, and :mod:`jaxconv.convert` transposes the conv weights. On XLA:CPU channels
last runs each conv without the NCHW <-> NHWC transposes around it, and the optimizer reads
each weight gradient in its stored order.

Image sizes: the first Linear layer of AlexNet and VGG fixes the flattened size (6400 =
256 * 5 * 5 and c * 7 * 7), so AlexNet takes 193 to 224 pixels and VGG 224 to 255 (the book:
224). NiN, GoogLeNet, ResNet and DenseNet end in an adaptive average pool and take any size
from a minimum up: NiN 67, DenseNet 29, GoogLeNet and ResNet 1 (the book: NiN 224, the others
96).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxconv.kernels.dispatch import run_once_options
from jaxconv.nn import (
    AdaptiveAvgPool2d,
    AvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Sigmoid,
)

__all__ = [
    "LAYOUTS",
    "MODELS",
    "VGG11",
    "VGG11_SMALL",
    "DenseBlock",
    "Inception",
    "Residual",
    "alexnet",
    "check_layout",
    "densenet",
    "example_input_shape",
    "googlenet",
    "init_variables",
    "lenet_bn",
    "nin",
    "resnet18",
    "vgg11",
]

Array = jax.Array


#: The layouts the networks take: torch's channels first (the default) and channels last.
LAYOUTS = ("NCHW", "NHWC")


def check_layout(layout: Any) -> str:
    """``layout`` if it is one of :data:`LAYOUTS`, else ValueError naming ``layout``."""
    if not isinstance(layout, str) or layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout


def example_input_shape(in_channels: int, size: int, layout: str = "NCHW") -> tuple[int, ...]:
    """One batched input shape of side ``size`` in ``layout``: (1, C, S, S) or (1, S, S, C)."""
    if check_layout(layout) == "NHWC":
        return (1, size, size, in_channels)
    return (1, in_channels, size, size)


def channel_axis(layout: str) -> int:
    """The channel axis of an activation in ``layout``, counted from the end (so it holds
    batched or not): -3 for NCHW, -1 for NHWC."""
    return -1 if layout == "NHWC" else -3


# --- 7.1 AlexNet -----------------------------------------------------------------------------


def alexnet(num_classes: int = 10, in_channels: int = 1, layout: str = "NCHW") -> Sequential:
    """AlexNet (7.1) for 224x224 input: five convs, three max pools, three linear layers
    with dropout 0.5. 46.8M parameters at 10 classes."""
    check_layout(layout)
    return Sequential(
        (
            Conv2d(in_channels, 96, kernel_size=11, stride=4, padding=1, layout=layout),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, layout=layout),
            Conv2d(96, 256, kernel_size=5, padding=2, layout=layout),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, layout=layout),
            Conv2d(256, 384, kernel_size=3, padding=1, layout=layout),
            ReLU(),
            Conv2d(384, 384, kernel_size=3, padding=1, layout=layout),
            ReLU(),
            Conv2d(384, 256, kernel_size=3, padding=1, layout=layout),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, layout=layout),
            Flatten(layout=layout),
            Linear(6400, 4096),  # 256 * 5 * 5 at 224x224
            ReLU(),
            Dropout(p=0.5),
            Linear(4096, 4096),
            ReLU(),
            Dropout(p=0.5),
            Linear(4096, num_classes),
        ),
        example_input_shape=example_input_shape(in_channels, 224, layout),
    )


# --- 7.2 VGG ---------------------------------------------------------------------------------

#: VGG-11's convolutional part: (number of 3x3 convs, output channels) per block.
VGG11 = ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))
#: What the book trains: VGG-11 with a quarter of the channels.
VGG11_SMALL = tuple((n, c // 4) for n, c in VGG11)


def _vgg_block(num_convs: int, c_in: int, c_out: int, layout: str) -> Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [Conv2d(c_in, c_out, kernel_size=3, padding=1, layout=layout), ReLU()]
        c_in = c_out
    layers.append(MaxPool2d(kernel_size=2, stride=2, layout=layout))
    return Sequential(tuple(layers))


def vgg11(
    num_classes: int = 10,
    in_channels: int = 1,
    conv_arch: Sequence[tuple[int, int]] = VGG11,
    layout: str = "NCHW",
) -> Sequential:
    """VGG (7.2) for 224x224 input: one block per ``(num_convs, channels)`` of ``conv_arch``
    (``VGG11``, 128.8M parameters; ``VGG11_SMALL``, the book's quarter-width one), each
    halving the size, then three linear layers with dropout 0.5 (the first from c * 7 * 7).
    The torch reference's ``vgg(conv_arch, num_classes, in_channels)``."""
    check_layout(layout)
    blocks, c_in = [], in_channels
    for num_convs, c_out in conv_arch:
        blocks.append(_vgg_block(num_convs, c_in, c_out, layout))
        c_in = c_out
    return Sequential(
        (
            *blocks,
            Flatten(layout=layout),
            Linear(c_in * 7 * 7, 4096),
            ReLU(),
            Dropout(0.5),
            Linear(4096, 4096),
            ReLU(),
            Dropout(0.5),
            Linear(4096, num_classes),
        ),
        example_input_shape=example_input_shape(in_channels, 224, layout),
    )


# --- 7.3 NiN ---------------------------------------------------------------------------------


def _nin_block(
    c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, layout: str
) -> Sequential:
    return Sequential(
        (
            Conv2d(c_in, c_out, kernel_size, stride, padding, layout=layout),
            ReLU(),
            Conv2d(c_out, c_out, kernel_size=1, layout=layout),
            ReLU(),
            Conv2d(c_out, c_out, kernel_size=1, layout=layout),
            ReLU(),
        )
    )


def nin(num_classes: int = 10, in_channels: int = 1, layout: str = "NCHW") -> Sequential:
    """Network in Network (7.3): four NiN blocks (a conv and two 1x1 convs each), the last
    with ``num_classes`` channels, then a global average pool: no linear layer. The book's
    input is 224x224; any size from 67 works."""
    check_layout(layout)
    return Sequential(
        (
            _nin_block(in_channels, 96, 11, 4, 0, layout),
            MaxPool2d(3, stride=2, layout=layout),
            _nin_block(96, 256, 5, 1, 2, layout),
            MaxPool2d(3, stride=2, layout=layout),
            _nin_block(256, 384, 3, 1, 1, layout),
            MaxPool2d(3, stride=2, layout=layout),
            Dropout(0.5),
            _nin_block(384, num_classes, 3, 1, 1, layout),
            AdaptiveAvgPool2d((1, 1), layout=layout),
            Flatten(layout=layout),
        ),
        example_input_shape=example_input_shape(in_channels, 224, layout),
    )


# --- 7.4 GoogLeNet ---------------------------------------------------------------------------


class Inception(nn.Module):
    """The Inception block (7.4): four parallel paths (1x1; 1x1 then 3x3; 1x1 then 5x5; 3x3
    max pool then 1x1), each ReLU'd, joined on the channel axis:
    (N, c_in, H, W) -> (N, c1 + c2[1] + c3[1] + c4, H, W) (joined on the last axis for
    ``layout="NHWC"``)."""

    c_in: int
    c1: int
    c2: tuple[int, int]
    c3: tuple[int, int]
    c4: int
    layout: str = "NCHW"

    @nn.compact
    def __call__(self, x: Any) -> Array:
        relu = jax.nn.relu
        conv = functools.partial(Conv2d, layout=self.layout)
        p1 = relu(conv(self.c_in, self.c1, kernel_size=1, name="p1_1")(x))
        p2 = relu(conv(self.c_in, self.c2[0], kernel_size=1, name="p2_1")(x))
        p2 = relu(conv(self.c2[0], self.c2[1], kernel_size=3, padding=1, name="p2_2")(p2))
        p3 = relu(conv(self.c_in, self.c3[0], kernel_size=1, name="p3_1")(x))
        p3 = relu(conv(self.c3[0], self.c3[1], kernel_size=5, padding=2, name="p3_2")(p3))
        p4 = MaxPool2d(kernel_size=3, stride=1, padding=1, name="p4_1", layout=self.layout)(x)
        p4 = relu(conv(self.c_in, self.c4, kernel_size=1, name="p4_2")(p4))
        return jnp.concatenate((p1, p2, p3, p4), axis=channel_axis(self.layout))


def googlenet(num_classes: int = 10, in_channels: int = 1, layout: str = "NCHW") -> Sequential:
    """GoogLeNet (7.4): a 7x7 stem, a 1x1 + 3x3 block, nine Inception blocks in three
    stages, a global average pool and a linear layer. The book's input is 96x96; any size
    works."""
    check_layout(layout)

    def pool() -> MaxPool2d:
        return MaxPool2d(kernel_size=3, stride=2, padding=1, layout=layout)

    b1 = Sequential(
        (Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, layout=layout), ReLU(), pool())
    )
    b2 = Sequential(
        (
            Conv2d(64, 64, kernel_size=1, layout=layout),
            ReLU(),
            Conv2d(64, 192, kernel_size=3, padding=1, layout=layout),
            ReLU(),
            pool(),
        )
    )
    b3 = Sequential(
        (
            Inception(192, 64, (96, 128), (16, 32), 32, layout),
            Inception(256, 128, (128, 192), (32, 96), 64, layout),
            pool(),
        )
    )
    b4 = Sequential(
        (
            Inception(480, 192, (96, 208), (16, 48), 64, layout),
            Inception(512, 160, (112, 224), (24, 64), 64, layout),
            Inception(512, 128, (128, 256), (24, 64), 64, layout),
            Inception(512, 112, (144, 288), (32, 64), 64, layout),
            Inception(528, 256, (160, 320), (32, 128), 128, layout),
            pool(),
        )
    )
    b5 = Sequential(
        (
            Inception(832, 256, (160, 320), (32, 128), 128, layout),
            Inception(832, 384, (192, 384), (48, 128), 128, layout),
            AdaptiveAvgPool2d((1, 1), layout=layout),
            Flatten(layout=layout),
        )
    )
    return Sequential(
        (b1, b2, b3, b4, b5, Linear(1024, num_classes)),
        example_input_shape=example_input_shape(in_channels, 96, layout),
    )


# --- 7.5 batch normalization -----------------------------------------------------------------


def lenet_bn(num_classes: int = 10, in_channels: int = 1, layout: str = "NCHW") -> Sequential:
    """LeNet with batch normalization after every conv and linear layer but the last (7.5,
    the concise version), sigmoid activations, 2x2 average pools; 28x28 input."""
    check_layout(layout)
    return Sequential(
        (
            Conv2d(in_channels, 6, kernel_size=5, layout=layout),
            BatchNorm2d(6, layout=layout),
            Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2, layout=layout),
            Conv2d(6, 16, kernel_size=5, layout=layout),
            BatchNorm2d(16, layout=layout),
            Sigmoid(),
            AvgPool2d(kernel_size=2, stride=2, layout=layout),
            Flatten(layout=layout),
            Linear(256, 120),
            BatchNorm1d(120),
            Sigmoid(),
            Linear(120, 84),
            BatchNorm1d(84),
            Sigmoid(),
            Linear(84, num_classes),
        ),
        example_input_shape=example_input_shape(in_channels, 28, layout),
    )


# --- 7.6 ResNet ------------------------------------------------------------------------------


class Residual(nn.Module):
    """The residual block (7.6): two 3x3 convs with batch norm, added to the input (through a
    strided 1x1 conv ``conv3`` when ``use_1x1conv``), then ReLU; every layer in ``layout``."""

    c_in: int
    c_out: int
    use_1x1conv: bool = False
    strides: int = 1
    layout: str = "NCHW"

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        s = self.strides
        conv = functools.partial(Conv2d, layout=self.layout)
        norm = functools.partial(BatchNorm2d, layout=self.layout)
        y = conv(self.c_in, self.c_out, kernel_size=3, padding=1, stride=s, name="conv1")(x)
        y = jax.nn.relu(norm(self.c_out, name="bn1")(y, train=train))
        y = conv(self.c_out, self.c_out, kernel_size=3, padding=1, name="conv2")(y)
        y = norm(self.c_out, name="bn2")(y, train=train)
        if self.use_1x1conv:
            x = conv(self.c_in, self.c_out, kernel_size=1, stride=s, name="conv3")(x)
        return jax.nn.relu(y + x)


def _resnet_stage(
    c_in: int, c_out: int, num_residuals: int, layout: str, first: bool = False
) -> Sequential:
    return Sequential(
        tuple(
            Residual(c_in, c_out, use_1x1conv=True, strides=2, layout=layout)
            if (i == 0 and not first)
            else Residual(c_out, c_out, layout=layout)
            for i in range(num_residuals)
        )
    )


def _stem(in_channels: int, layout: str) -> Sequential:
    """ResNet's and DenseNet's first block: 7x7 conv stride 2, batch norm, ReLU, 3x3 max pool
    stride 2 (torch's explicit paddings 3 and 1)."""
    return Sequential(
        (
            Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, layout=layout),
            BatchNorm2d(64, layout=layout),
            ReLU(),
            MaxPool2d(kernel_size=3, stride=2, padding=1, layout=layout),
        )
    )


def resnet18(num_classes: int = 10, in_channels: int = 1, layout: str = "NCHW") -> Sequential:
    """ResNet-18 (7.6): the stem, four stages of two residual blocks (64, 128, 256, 512
    channels; each stage after the first halves the size), a global average pool and a
    linear layer. The book's input is 96x96; any size works."""
    check_layout(layout)
    return Sequential(
        (
            _stem(in_channels, layout),
            _resnet_stage(64, 64, 2, layout, first=True),
            _resnet_stage(64, 128, 2, layout),
            _resnet_stage(128, 256, 2, layout),
            _resnet_stage(256, 512, 2, layout),
            AdaptiveAvgPool2d((1, 1), layout=layout),
            Flatten(layout=layout),
            Linear(512, num_classes),
        ),
        example_input_shape=example_input_shape(in_channels, 96, layout),
    )


# --- 7.7 DenseNet ----------------------------------------------------------------------------


def _conv_block(c_in: int, c_out: int, layout: str) -> Sequential:
    return Sequential(
        (
            BatchNorm2d(c_in, layout=layout),
            ReLU(),
            Conv2d(c_in, c_out, kernel_size=3, padding=1, layout=layout),
        )
    )


class _DenseLayers(nn.Module):
    """DenseBlock's ``net``: conv block ``i`` (named ``"i"``) sees the concatenation of the
    input and every earlier block's output."""

    blocks: tuple[nn.Module, ...]
    layout: str = "NCHW"

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        for i, block in enumerate(self.blocks):
            y = block.clone(parent=self, name=str(i))(x, train=train)
            x = jnp.concatenate((x, y), axis=channel_axis(self.layout))  # channels grow
        return x


class DenseBlock(nn.Module):
    """The dense block (7.7): ``num_convs`` conv blocks (batch norm, ReLU, 3x3 conv to
    ``growth`` channels), each joined to its input: (N, c_in, H, W) ->
    (N, c_in + num_convs * growth, H, W) (channels last for ``layout="NHWC"``)."""

    num_convs: int
    c_in: int
    growth: int
    layout: str = "NCHW"

    @nn.compact
    def __call__(self, x: Any, train: bool = False) -> Array:
        blocks = tuple(
            _conv_block(self.c_in + i * self.growth, self.growth, self.layout)
            for i in range(self.num_convs)
        )
        return _DenseLayers(blocks, self.layout, name="net")(x, train=train)


def _transition(c_in: int, c_out: int, layout: str) -> Sequential:
    """DenseNet's transition: batch norm, ReLU, 1x1 conv to ``c_out``, 2x2 average pool."""
    return Sequential(
        (
            BatchNorm2d(c_in, layout=layout),
            ReLU(),
            Conv2d(c_in, c_out, kernel_size=1, layout=layout),
            AvgPool2d(kernel_size=2, stride=2, layout=layout),
        )
    )


def densenet(
    num_classes: int = 10,
    in_channels: int = 1,
    growth_rate: int = 32,
    convs_per_block: Sequence[int] = (4, 4, 4, 4),
    layout: str = "NCHW",
) -> Sequential:
    """DenseNet (7.7): the ResNet stem, dense blocks with transitions halving channels and
    size between them, batch norm, ReLU, a global average pool and a linear layer. The
    book's input is 96x96; any size from 29 works."""
    check_layout(layout)
    blocks, c = [], 64
    for i, n in enumerate(convs_per_block):
        blocks.append(DenseBlock(n, c, growth_rate, layout))
        c += n * growth_rate
        if i != len(convs_per_block) - 1:
            blocks.append(_transition(c, c // 2, layout))
            c //= 2
    return Sequential(
        (
            _stem(in_channels, layout),
            *blocks,
            BatchNorm2d(c, layout=layout),
            ReLU(),
            AdaptiveAvgPool2d((1, 1), layout=layout),
            Flatten(layout=layout),
            Linear(c, num_classes),
        ),
        example_input_shape=example_input_shape(in_channels, 96, layout),
    )


def init_variables(
    model: nn.Module, seed: int = 0, input_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """``model.init(jax.random.key(seed), zeros(input_shape))`` compiled for a program that
    runs once: the same random draws (values equal up to float rounding: an unoptimised
    ``-b + 2b * u`` may round a bias differently in the last bit). ``input_shape`` defaults
    to the network's ``example_input_shape``."""
    shape = input_shape if input_shape is not None else model.example_input_shape
    x = jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
    # The compiled init holds no convolution (the forward pass it traces is dead code: init
    # returns the variables only) but thousands of threefry hashes: compile it as run-once.
    init = jax.jit(model.init).lower(jax.random.key(0), x).compile(run_once_options())
    return init(jax.random.key(seed), jnp.zeros(shape, jnp.float32))


#: name -> (factory, the image size the book trains it at), as the torch reference's MODELS.
MODELS = {
    "alexnet": (alexnet, 224),
    "vgg11": (vgg11, 224),
    "nin": (nin, 224),
    "googlenet": (googlenet, 96),
    "lenet_bn": (lenet_bn, 28),
    "resnet18": (resnet18, 96),
    "densenet": (densenet, 96),
}
