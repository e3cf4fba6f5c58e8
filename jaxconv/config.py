"""A training run's settings: :class:`TrainConfig`, its defaults, and their one resolution.

Every default has one meaning, filled in once by :meth:`TrainConfig.resolved` (``fit`` calls
it first), most of them from the model's recipe (:data:`jaxconv.recipes.RECIPES`):
``image_size=None`` the book's size for the model, ``optimizer=None`` and ``batch_size=None``
the model's, ``learning_rate=None`` the model's rate when the optimizer is the model's (else
the optimizer's default), ``lr_schedule=None`` constant (LeNet: the variant's schedule),
``layout=None`` the backend's layout for the model (LeNet:
:func:`jaxconv.kernels.dispatch.default_layout`, a chapter-7 network:
:func:`~jaxconv.kernels.dispatch.default_network_layout`),
``out_dir=None`` ``runs/lenet-<variant>`` or ``runs/<model>``. A resolved config has no None
left in those.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import optax

from jaxconv import conv as conv_lib
from jaxconv._args import as_int, check_bool
from jaxconv.errors import ConfigError, positive_int
from jaxconv.kernels.dispatch import default_layout, default_network_layout
from jaxconv.metrics import tensorboard_available
from jaxconv.models import check_variant
from jaxconv.recipes import check_image_size, check_layout, check_model
from jaxconv.steps import check_optimizer


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; every field has a default (``fit(TrainConfig())`` runs).

    ``model`` names a network of :data:`jaxconv.recipes.RECIPES`: ``"lenet"`` (chapter 6,
    ``variant`` applies to it only) or a chapter-7 network, trained on
    Fashion-MNIST resized on device to ``image_size`` (None: the book's size for it).
    ``optimizer``, ``batch_size`` and ``learning_rate`` None take the model's recipe (the
    book's: SGD and its rate for the chapter-7 networks; Adam 3e-3, batch 256 for LeNet).
    ``learning_rate=None`` takes the optimizer's default from :data:`jaxconv.steps.OPTIMIZERS`
    (Adam 3e-3, SGD 0.9 as in the book). ``lr_schedule`` is ``"constant"`` or ``"cosine"``
    (decay from the learning rate to 0 over ``epochs``); None: constant for the classic variant
    (the book), cosine for the modern one, which with Adam 3e-3 passes 0.90 test accuracy in 10
    epochs where constant Adam 1e-3 stays near 0.89 (docs/RESULTS.md). ``optimizer`` may also be
    an ``optax.GradientTransformation`` (then ``learning_rate`` must be None).
    ``out_dir=None`` means ``runs/lenet-<variant>``.
    ``layout`` is LeNet's activation layout, "NHWC" or "CHWN" (params do not depend on it); None:
    the backend's, CHWN on CPU, where it trains faster, NHWC elsewhere
    (:func:`jaxconv.kernels.dispatch.default_layout`). For a chapter-7 network it is the
    network's layout, "NCHW" (torch's) or "NHWC" (channels last: conv weights stored HWIO, so
    checkpoints differ between the two); None: NHWC on CPU, where the book's ResNet-18 step
    trains faster (docs/BENCHMARKS.md), NCHW elsewhere
    (:func:`jaxconv.kernels.dispatch.default_network_layout`).
    A layout the model does not take is a ConfigError naming ``layout``. Resuming a network's
    run with ``layout=None`` continues in its checkpoint's layout (:func:`jaxconv.train.fit`);
    an explicit layout other than the checkpoint's is refused (CheckpointError).
    ``devices=None`` trains data-parallel over every device (of every process, see
    :mod:`jaxconv.distributed`); ``batch_size`` is global and must divide evenly by them.
    """

    model: str = "lenet"
    variant: str = "modern"
    epochs: int = 10
    batch_size: int | None = None  # None: the model's (lenet 256)
    optimizer: str | optax.GradientTransformation | None = None  # None: the model's (lenet adam)
    learning_rate: float | None = None
    lr_schedule: str | None = None
    seed: int = 0
    out_dir: str | Path | None = None
    data_dir: str | Path | None = None
    data_source: str = "auto"
    verify: bool = True  # check the data's SHA-256 digests (False: data you trust as it is)
    train_subset: int | None = None  # first n training examples (quick runs)
    test_subset: int | None = None
    eval_batch_size: int = 1000
    checkpoint_every: int = 1  # epochs; the last epoch is always saved
    max_checkpoints: int = 3
    resume: bool = False
    tensorboard: bool = False
    plots: bool = True
    progress: bool = True
    conv_impl: str | None = None  # jaxconv.conv2d's impl; None: its default
    layout: str | None = None  # the model's layout (see above); None: the backend's for it
    scan_unroll: int = 1
    devices: int | None = None  # data-parallel over this many devices; None: all of them
    image_size: int | None = None  # chapter-7 networks: resize to this; None: the book's size

    def resolved(self) -> TrainConfig:
        """This config validated, every None default filled in (see the module docstring).

        Checks only what needs no data or disk (``train_subset`` against the data set's size
        is checked when the data is loaded). Resolving a resolved config changes nothing.

        Raises:
          ConfigError (a ValueError) / TypeError: naming the field and the rule it breaks.
        """
        recipe = check_model(self.model)
        check_variant(self.variant)
        size = recipe.image_size if self.image_size is None else self.image_size
        size = check_image_size(self.model, size)
        optimizer = recipe.optimizer if self.optimizer is None else self.optimizer
        batch_size = recipe.batch_size if self.batch_size is None else self.batch_size
        learning_rate = self.learning_rate
        if learning_rate is None and optimizer == recipe.optimizer:
            learning_rate = recipe.learning_rate  # None for LeNet: the optimizer's default
        if self.conv_impl is not None and self.conv_impl not in conv_lib.IMPLEMENTATIONS:
            raise ConfigError(
                "conv_impl",
                f"must be None or one of {tuple(conv_lib.IMPLEMENTATIONS)}, got {self.conv_impl!r}",
            )
        if self.layout is not None:
            layout = check_layout(self.model, self.layout)
        else:
            layout = default_layout() if self.is_lenet else default_network_layout()
        positive_int(batch_size, "batch_size")
        for name in _POSITIVE_INTS:
            positive_int(getattr(self, name), name)
        for name in _OPTIONAL_POSITIVE_INTS:
            if getattr(self, name) is not None:
                positive_int(getattr(self, name), name)
        check_bool(self.verify, "verify")
        seed = as_int(self.seed, "seed")
        if not 0 <= seed < 2**31:
            raise ConfigError("seed", f"must be in 0..2**31-1, got {seed}")
        schedule = self.lr_schedule if self.lr_schedule is not None else recipe.lr_schedule
        if schedule is None:  # LeNet: the book's constant rate, or the modern recipe's cosine
            schedule = "constant" if self.variant == "classic" else "cosine"
        lr = check_optimizer(optimizer, learning_rate, schedule)
        if self.tensorboard and not tensorboard_available():
            raise ConfigError(
                "tensorboard=True",
                "needs tensorboardX (pip install tensorboardX) or TensorFlow; neither is installed",
            )
        out_dir = self.out_dir
        if out_dir is None:
            out_dir = f"runs/lenet-{self.variant}" if self.is_lenet else f"runs/{self.model}"
        return dataclasses.replace(
            self,
            image_size=size,
            optimizer=optimizer,
            batch_size=batch_size,
            learning_rate=lr,
            lr_schedule=schedule,
            layout=layout,
            out_dir=Path(out_dir).expanduser(),
        )

    @property
    def is_lenet(self) -> bool:
        """Whether the model is the chapter-6 LeNet (NHWC input, no train mode)."""
        return self.model == "lenet"

    def meta(self) -> dict[str, Any]:
        """The settings a checkpoint records (JSON): enough to rebuild the model and check a
        resume. Call on a :meth:`resolved` config."""
        named = isinstance(self.optimizer, str)
        return {
            "model": "LeNet" if self.is_lenet else self.model,  # "LeNet": what earlier runs saved
            "variant": self.variant if self.is_lenet else None,
            "image_size": self.image_size,
            "num_classes": 10,
            "conv_impl": self.conv_impl,
            "layout": self.layout,
            # A network's layout decides how its conv weights are stored (OIHW or HWIO); a
            # checkpoint without this key is of a network that was always NCHW.
            "network_layout": None if self.is_lenet else self.layout,
            "optimizer": self.optimizer if named else "custom",
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "epochs": self.epochs if self.lr_schedule == "cosine" else None,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
        }


def saved_network_layout(meta: dict[str, Any]) -> str | None:
    """The layout of the network a checkpoint's ``meta`` records (None for LeNet, whose params
    are the same in every layout): its ``network_layout``, or NCHW for a checkpoint written
    before networks had a layout (they were all NCHW, whatever its ``layout`` field says)."""
    if meta.get("model") == "LeNet":
        return None
    return meta.get("network_layout") or "NCHW"


_POSITIVE_INTS = (
    "epochs",
    "eval_batch_size",
    "checkpoint_every",
    "max_checkpoints",
    "scan_unroll",
)
_OPTIONAL_POSITIVE_INTS = ("train_subset", "test_subset", "devices")
