"""The pure training core: optimizer, state, ``train_step``, ``train_epoch``, ``evaluate``.

Reads top to bottom as Flax's MNIST example: optimizers by name -> :class:`TrainState` (params,
optimizer state, key, counters) -> ``train_step`` (one pure optimizer step) -> ``train_epoch``
(a ``lax.scan`` of ``train_step`` over every batch of an epoch, one device call) ->
``evaluate`` (every test example, one device call). Nothing here touches the disk; the run
around it (config, checkpoints, metrics, progress) is :mod:`jaxconv.train`.

Models: the chapter-6 :class:`~jaxconv.models.LeNet` takes NHWC ``(B, 28, 28, 1)`` images and
has no training mode; a chapter-7 network (:mod:`jaxconv.networks`) takes NCHW ``(B, 1, S, S)``
or, built channels last, NHWC ``(B, S, S, 1)`` images, as its ``example_input_shape`` says
(``S`` its side; the batch is resized on device, in the jit),
updates its ``batch_stats`` in training and uses them in evaluation, and draws dropout masks.
:func:`model_input` and :func:`apply_model` are the only places that tell them apart.

Determinism: epoch ``e`` (counted from 0) shuffles with ``fold_in(state.key, e)``, step ``s``
(counted from 0 over the run) draws its dropout masks from ``fold_in(fold_in(state.key,
DROPOUT_STREAM), s)``, and the state (params, batch statistics, optimizer state, key, epoch,
step) is all a checkpoint needs, so a resumed run computes exactly what an uninterrupted one
would (bit for bit on CPU).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax

from jaxconv import data as data_lib
from jaxconv.errors import ConfigError, positive_float, positive_int
from jaxconv.kernels.dispatch import run_once_options
from jaxconv.models import INPUT_SHAPE, LeNet

Array = jax.Array
Batch = tuple[Array, Array]  # images (B, 28, 28) uint8, labels (B,) int32

#: Folded into the run's key to make the dropout stream, apart from the epochs' shuffling keys
#: ``fold_in(key, epoch)`` (an epoch count never reaches it).
DROPOUT_STREAM = 0x64726F70


# --------------------------------------------------------------------------- optimizer

#: Optimizer names: factory of a learning rate, and the learning rate used when none is given.
OPTIMIZERS: dict[str, tuple[Callable[[float], optax.GradientTransformation], float]] = {
    "sgd": (optax.sgd, 0.9),  # the book's classic LeNet: SGD, lr 0.9
    "momentum": (functools.partial(optax.sgd, momentum=0.9), 0.05),
    "nesterov": (functools.partial(optax.sgd, momentum=0.9, nesterov=True), 0.05),
    "adam": (optax.adam, 3e-3),  # the peak of the modern recipe's cosine schedule
    "adamw": (optax.adamw, 1e-3),
    "rmsprop": (optax.rmsprop, 1e-3),
    "adagrad": (optax.adagrad, 1e-2),
}


LR_SCHEDULES = ("constant", "cosine")


def check_optimizer(
    optimizer: Any, learning_rate: Any = None, schedule: Any = "constant"
) -> float | None:
    """Validate an optimizer setting; return its learning rate (None for a given optax one).

    ``optimizer`` is a name of :data:`OPTIMIZERS` or an ``optax.GradientTransformation``
    (which carries its own learning rate: ``learning_rate`` must then be None);
    ``learning_rate=None`` takes the name's default; ``schedule`` is one of
    :data:`LR_SCHEDULES`.

    Raises:
      ConfigError / TypeError: naming ``optimizer``, ``learning_rate`` or ``lr_schedule``.
    """
    if schedule not in LR_SCHEDULES:
        raise ConfigError("lr_schedule", f"must be one of {LR_SCHEDULES}, got {schedule!r}")
    if isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None:
            raise ConfigError(
                "learning_rate",
                "applies to a named optimizer; an optax.GradientTransformation carries its "
                f"own (got {learning_rate!r})",
            )
        return None
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ConfigError(
            "optimizer",
            f"must be one of {tuple(OPTIMIZERS)} or an optax.GradientTransformation, "
            f"got {optimizer!r}",
        )
    lr = OPTIMIZERS[optimizer][1] if learning_rate is None else learning_rate
    return positive_float(lr, "learning_rate")


def make_optimizer(
    optimizer: str | optax.GradientTransformation,
    learning_rate: float | None = None,
    schedule: str = "constant",
    total_steps: int | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer by name (see :data:`OPTIMIZERS`) or as given.

    ``learning_rate=None`` takes the name's default. ``schedule="cosine"`` decays it to 0 over
    ``total_steps`` optimizer steps (``optax.cosine_decay_schedule``).

    Raises:
      ConfigError / TypeError: a bad setting (:func:`check_optimizer`), or ``total_steps``
      missing for the cosine schedule.
    """
    lr = check_optimizer(optimizer, learning_rate, schedule)
    if lr is None:
        return optimizer  # type: ignore[return-value]
    steps = positive_int(total_steps, "total_steps") if schedule == "cosine" else None
    return named_optimizer(optimizer, lr, steps)  # type: ignore[arg-type]


# jit keys its cache on the state's static fields; an optax optimizer compares by identity:
# building each once per setting lets repeated runs in one process reuse the compiled epoch.
@functools.lru_cache(maxsize=64)
def named_optimizer(
    name: str, learning_rate: float, cosine_steps: int | None
) -> optax.GradientTransformation:
    """The optimizer ``name`` at ``learning_rate``, decayed to 0 over ``cosine_steps`` steps
    (None: constant). Settings already validated (:func:`check_optimizer`)."""
    if cosine_steps is None:
        return OPTIMIZERS[name][0](learning_rate)
    return OPTIMIZERS[name][0](optax.cosine_decay_schedule(learning_rate, cosine_steps))


# --------------------------------------------------------------------------- state and step


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one pytree (what a checkpoint saves).

    ``params`` is the model's ``"params"`` collection; ``batch_stats`` its ``"batch_stats"``
    (batch norm's running statistics; ``{}`` for a model without, which adds no leaf);
    ``key`` a raw uint32 (2,) key, the run's base key; ``epoch`` the number of epochs
    completed; ``step`` of optimizer steps.
    ``model`` and ``tx`` are static: not leaves, not saved. (jit compares static fields by
    value for a Flax module, so equal models share compiled functions.)
    """

    params: Any
    batch_stats: Any
    opt_state: Any
    key: Array
    epoch: Array  # int32 ()
    step: Array  # int32 ()
    model: nn.Module = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: nn.Module, tx: optax.GradientTransformation, seed: int) -> TrainState:
        """Initialise the variables from ``seed`` (the book's init) and the optimizer state."""
        params, batch_stats, opt_state, key = _state_initializer(model, tx)(jnp.int32(seed))
        return cls(
            params=params,
            batch_stats=batch_stats,
            opt_state=opt_state,
            key=key,
            epoch=jnp.zeros((), jnp.int32),  # strong int32: the same avals a restore gives
            step=jnp.zeros((), jnp.int32),
            model=model,
            tx=tx,
        )


@functools.lru_cache(maxsize=16)
def _state_initializer(model: nn.Module, tx: optax.GradientTransformation) -> Callable[..., Any]:
    """A compiled ``seed -> (params, batch_stats, opt_state, key)``: the book's init from
    ``PRNGKey(seed)``."""

    def init(seed: Array) -> tuple[Any, Any, Any, Array]:
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        variables = model.init(init_key, jnp.zeros(input_shape(model), jnp.float32))
        params = variables["params"]
        return params, dict(variables.get("batch_stats", {})), tx.init(params), key

    # It runs once per run: compile it fast (see kernels.dispatch.run_once_options).
    return jax.jit(init).lower(jnp.int32(0)).compile(run_once_options())


def is_lenet(model: nn.Module) -> bool:
    """Whether ``model`` is the chapter-6 LeNet (NHWC 28x28 input, no training mode)."""
    return isinstance(model, LeNet)


def input_shape(model: nn.Module) -> tuple[int, ...]:
    """One example's batched input shape: LeNet's NHWC :data:`INPUT_SHAPE`, else the
    network's ``example_input_shape`` (``(1, 1, S, S)`` NCHW or ``(1, S, S, 1)`` NHWC)."""
    return INPUT_SHAPE if is_lenet(model) else tuple(model.example_input_shape)


def to_input(images: Array) -> Array:
    """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1]; done on device, in the jit."""
    return images.astype(jnp.float32)[..., None] / 255.0


def model_input(model: nn.Module, images: Array) -> Array:
    """uint8 (B, 28, 28) -> what ``model`` takes, on device: LeNet's NHWC :func:`to_input`;
    for a network float32 in [0, 1], resized bilinearly to its side S, shaped as its
    ``example_input_shape``: NCHW (B, 1, S, S) or NHWC (B, S, S, 1) (one channel: the same
    values in the same order, so a reshape).

    The book's transforms are ``Resize(S)`` then ``ToTensor()`` (x / 255); torchvision's
    resize is bilinear with half-pixel centres, as ``jax.image.resize``'s (which works in
    float: no rounding to uint8 between the two steps).
    """
    if is_lenet(model):
        return to_input(images)
    shape = input_shape(model)  # (1, 1, S, S) or (1, S, S, 1)
    x = images.astype(jnp.float32)[:, None] / 255.0  # (B, 1, 28, 28)
    size = shape[2]  # S in both layouts
    if size != x.shape[-1]:
        x = jax.image.resize(x, (*x.shape[:2], size, size), "bilinear")  # (B, 1, S, S)
    return x.reshape((x.shape[0], *shape[1:]))  # (B, 1, S, S) or (B, S, S, 1)


def apply_model(
    model: nn.Module,
    params: Any,
    batch_stats: Any,
    images: Array,
    train: bool = False,
    rng: Array | None = None,
) -> tuple[Array, Any]:
    """Logits ``(B, 10)`` of uint8 ``images`` (B, 28, 28) and the batch statistics after the
    call: updated from the batch in training (a network with batch norm), else as given.

    LeNet is applied exactly as it always was (``apply({"params": params}, x)``); a network in
    training mode needs ``rng``, its dropout key. ``batch_stats=None``: a network without
    batch norm (``{}``)."""
    x = model_input(model, images)
    if is_lenet(model):
        return model.apply({"params": params}, x), batch_stats
    batch_stats = {} if batch_stats is None else batch_stats
    variables = {"params": params, "batch_stats": batch_stats}
    if not train:
        return model.apply(variables, x), batch_stats
    logits, updates = model.apply(
        variables, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng}
    )
    return logits, updates.get("batch_stats", batch_stats)


def dropout_key(state: TrainState) -> Array:
    """The dropout key of the state's next step (see the module docstring)."""
    return jax.random.fold_in(jax.random.fold_in(state.key, DROPOUT_STREAM), state.step)


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on one batch; pure. Returns the new state (batch statistics
    updated from the batch) and the batch's mean cross-entropy ``loss`` and number of
    ``correct`` predictions."""
    images, labels = batch  # (B, 28, 28) uint8, (B,) int32
    key = None if is_lenet(state.model) else dropout_key(state)

    def loss_fn(params: Any) -> tuple[Array, tuple[Array, Any]]:
        logits, batch_stats = apply_model(
            state.model, params, state.batch_stats, images, train=True, rng=key
        )  # (B, 10)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
        return loss, (logits, batch_stats)

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        params=optax.apply_updates(state.params, updates),
        batch_stats=batch_stats,
        opt_state=opt_state,
        step=state.step + 1,
    )
    correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
    return state, {"loss": loss, "correct": correct}


@functools.partial(jax.jit, static_argnames=("batch_size", "unroll", "batch_sharding"))
def train_epoch(
    state: TrainState,
    images: Array,
    labels: Array,
    batch_size: int,
    unroll: int = 1,
    batch_sharding: jax.sharding.Sharding | None = None,
) -> tuple[TrainState, dict[str, Array]]:
    """One epoch, every batch, in one jitted call: shuffle with the epoch's key, scan steps.

    Args:
      state: the state after ``state.epoch`` epochs.
      images: (n, 28, 28) uint8 on device; labels: (n,) int32.
      batch_size: examples per step (static); the last ``n % batch_size`` are dropped.
      unroll: ``lax.scan``'s unroll (static; a tuning knob).
      batch_sharding: optional sharding of the batched ``(nb, B, ...)`` arrays, e.g.
        ``NamedSharding(mesh, P(None, "batch"))`` for data parallelism.

    Returns:
      ``(state, {"loss", "accuracy"})``: epoch + 1, and the mean training loss and accuracy
      over the epoch's ``nb * B`` examples (computed with the params of each step).
    """
    key = jax.random.fold_in(state.key, state.epoch)
    xb, yb = data_lib.shuffle_batches(key, images, labels, batch_size)  # (nb,B,28,28), (nb,B)
    if batch_sharding is not None:
        xb = jax.lax.with_sharding_constraint(xb, batch_sharding)
        yb = jax.lax.with_sharding_constraint(yb, batch_sharding)
    state, per_step = jax.lax.scan(train_step, state, (xb, yb), unroll=unroll)  # (nb,) each
    metrics = {
        "loss": per_step["loss"].mean(),  # equal batches: mean of means = mean over examples
        "accuracy": per_step["correct"].sum() / (yb.shape[0] * yb.shape[1]),
    }
    return state.replace(epoch=state.epoch + 1), metrics


@functools.partial(jax.jit, static_argnames=("model", "batch_size"))
def evaluate(
    model: nn.Module,
    params: Any,
    images: Array,
    labels: Array,
    batch_size: int = 1000,
    batch_stats: Any = None,
) -> dict[str, Array]:
    """Mean loss and accuracy over *every* example, in one jitted call, the model in
    evaluation mode (a network's batch norm on ``batch_stats``, its running statistics).

    The last batch is padded and masked (``data.pad_to_batches``), so all n examples count
    once each whatever ``batch_size`` is (static; clipped to n).
    """
    batch_size = min(batch_size, images.shape[0])
    xb, yb, mask = data_lib.pad_to_batches(images, labels, batch_size)  # (nb, B, ...) each

    def body(totals: tuple[Array, Array], batch: tuple[Array, Array, Array]) -> Any:
        x, y, m = batch
        logits, _ = apply_model(model, params, batch_stats, x)  # (B, 10)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # (B,)
        correct = (jnp.argmax(logits, axis=-1) == y) & m
        return (totals[0] + jnp.sum(jnp.where(m, loss, 0.0)), totals[1] + jnp.sum(correct)), None

    zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (loss_sum, correct), _ = jax.lax.scan(body, zero, (xb, yb, mask))
    n = images.shape[0]
    return {"loss": loss_sum / n, "accuracy": correct / n}
