"""What ``jaxconv train --model NAME`` trains, and how: one table, :data:`RECIPES`.

Each entry is the book's recipe for one network of chapters 6 and 7: the factory, the image
size Fashion-MNIST is resized to (on device, in the jitted epoch), the sizes the network
accepts, and the optimizer, learning rate and batch size of the book's training call
(``d2l.train_ch6``: SGD at a constant rate, 10 epochs). ``lenet`` is the chapter-6 LeNet of
:mod:`jaxconv.models`, trained as ``jaxconv train`` always has (its variant, layouts and
Adam 3e-3 default); every other name is a :mod:`jaxconv.networks` factory.

Layouts: LeNet runs in :data:`jaxconv.models.MODEL_LAYOUTS` (its activations; params the same in
both), a chapter-7 network in :data:`jaxconv.networks.LAYOUTS` (NCHW or NHWC: input and every
layer, conv weights OIHW or HWIO); :func:`check_layout` says which a model takes.

VGG: ``vgg11`` is VGG-11 at full width (128.8M parameters, as ``networks.vgg11()``);
``vgg11_small`` is the quarter-width ``VGG11_SMALL`` the book trains (its ``ratio = 4``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn

from jaxconv import networks
from jaxconv._args import as_int
from jaxconv.errors import ConfigError
from jaxconv.models import MODEL_LAYOUTS

#: Fashion-MNIST's images are 28x28; the data set stays that size on device.
SOURCE_SIZE = 28


@dataclasses.dataclass(frozen=True)
class Recipe:
    """One network's training defaults.

    ``factory``: ``factory(num_classes=10, in_channels=1)`` builds the network (None: the
    chapter-6 LeNet, built from the run's ``variant`` and ``layout``). ``image_size``: the
    side the images are resized to (the book's). ``min_size``/``max_size``: the sides the
    network accepts (its flatten and pool sizes; ``max_size=None``: no upper bound).
    ``optimizer``/``learning_rate``/``batch_size``: the book's (``learning_rate=None``: the
    optimizer's own default, :data:`jaxconv.steps.OPTIMIZERS`). ``lr_schedule`` None: LeNet's
    variant decides (see :class:`jaxconv.config.TrainConfig`).
    """

    factory: Callable[..., nn.Module] | None
    image_size: int
    min_size: int
    max_size: int | None
    optimizer: str
    learning_rate: float | None
    batch_size: int
    lr_schedule: str | None = "constant"


#: name -> the book's recipe. Sizes from the networks' flatten and pool arithmetic (checked
#: by tests/test_train_models.py against the networks themselves).
RECIPES: dict[str, Recipe] = {
    "lenet": Recipe(None, 28, 28, 28, "adam", None, 256, None),
    "alexnet": Recipe(networks.alexnet, 224, 193, 224, "sgd", 0.01, 128),
    "vgg11": Recipe(networks.vgg11, 224, 224, 255, "sgd", 0.05, 128),
    "vgg11_small": Recipe(
        functools.partial(networks.vgg11, conv_arch=networks.VGG11_SMALL),
        224,
        224,
        255,
        "sgd",
        0.05,
        128,
    ),  # fmt: skip
    "nin": Recipe(networks.nin, 224, 67, None, "sgd", 0.1, 128),
    "googlenet": Recipe(networks.googlenet, 96, 1, None, "sgd", 0.1, 128),
    "lenet_bn": Recipe(networks.lenet_bn, 28, 28, 31, "sgd", 1.0, 256),
    "resnet18": Recipe(networks.resnet18, 96, 1, None, "sgd", 0.05, 256),
    "densenet": Recipe(networks.densenet, 96, 29, None, "sgd", 0.1, 256),
}

MODEL_NAMES = tuple(RECIPES)


def check_model(name: Any) -> Recipe:
    """The recipe of model ``name``; ConfigError naming ``model`` if there is none."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError("model", f"must be one of {MODEL_NAMES}, got {name!r}")
    return RECIPES[name]


def check_image_size(name: str, size: Any) -> int:
    """``size`` if model ``name`` accepts square images of that side, else ConfigError naming
    ``image_size`` and the accepted range (the smallest size first)."""
    recipe = check_model(name)
    size = as_int(size, "image_size")
    low, high = recipe.min_size, recipe.max_size
    if size < low or (high is not None and size > high):
        accepted = f"{low}..{high}" if high is not None else f"at least {low}"
        accepted = str(low) if low == high else accepted
        smallest = f"; the smallest accepted is {low}" if size < low else ""
        raise ConfigError(
            "image_size",
            f"must be {accepted} for {name} (its flatten and pool sizes){smallest}, got {size}",
        )
    return size


def layouts(name: str) -> tuple[str, ...]:
    """The layouts model ``name`` trains in: LeNet's activation layouts, or a network's."""
    return MODEL_LAYOUTS if check_model(name).factory is None else networks.LAYOUTS


def check_layout(name: str, layout: Any) -> str:
    """``layout`` if model ``name`` takes it (:func:`layouts`), else ConfigError naming
    ``layout``, the model and the layouts it takes."""
    allowed = layouts(name)
    if layout not in allowed:
        raise ConfigError("layout", f"must be one of {allowed} for {name}, got {layout!r}")
    return layout


def build_network(name: str, image_size: int, layout: str = "NCHW") -> nn.Module:
    """Chapter-7 network ``name`` (not ``lenet``) in ``layout`` for square ``image_size``
    input with one channel, ``(N, 1, S, S)`` or ``(N, S, S, 1)``: its
    ``example_input_shape`` records the run's size (a static field, so the training state
    carries it)."""
    recipe = check_model(name)
    if recipe.factory is None:
        raise ConfigError("model", f"{name!r} is built by jaxconv.models.LeNet, not here")
    layout = check_layout(name, layout)
    shape = networks.example_input_shape(1, image_size, layout)
    return recipe.factory(layout=layout).clone(example_input_shape=shape)


__all__ = [
    "MODEL_NAMES",
    "RECIPES",
    "SOURCE_SIZE",
    "Recipe",
    "build_network",
    "check_image_size",
    "check_layout",
    "check_model",
    "layouts",
]
