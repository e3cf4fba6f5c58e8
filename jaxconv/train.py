"""Training LeNet on Fashion-MNIST with optax: one jitted call per epoch, data kept on device.

Reads top to bottom: config -> optimizer -> state -> ``train_step`` -> ``train_epoch`` (a
``lax.scan`` of ``train_step`` over every batch of an epoch, one device call) -> ``evaluate``
(every test example, one device call) -> ``fit`` (checkpoints, metrics, plots, progress).

Determinism: epoch ``e`` (counted from 0) shuffles with ``fold_in(state.key, e)``, and the
state (params, optimizer state, key, epoch, step) is all a checkpoint needs, so a resumed run
computes exactly what an uninterrupted one would (bit for bit on CPU).

Data parallelism (:mod:`jaxconv.distributed`): with ``devices`` > 1 (default: every device,
of every process) the state and the data set are replicated over a mesh, ``batch_sharding``
(``NamedSharding(mesh, P(None, "batch"))``) splits the batch axis of the epoch's ``(nb, B, ...)``
batches, and XLA inserts the gradient all-reduce. ``batch_size`` stays global. One device runs
the plain program, with no sharding at all.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from tqdm.auto import tqdm

from jaxconv import conv as conv_lib
from jaxconv import data as data_lib
from jaxconv import distributed
from jaxconv._args import as_int
from jaxconv.checkpoint import CHECKPOINT_DIR, CheckpointError, Checkpoints, resolve
from jaxconv.metrics import (
    CURVES_FILE,
    METRICS_FILE,
    MetricsLog,
    TensorBoardLog,
    plot_curves,
    plotting_available,
    read_metrics,
    tensorboard_available,
)
from jaxconv.models import (
    NO_BACKEND_OPTIMIZATION,
    LeNet,
    check_layout,
    check_variant,
    default_layout,
)

logger = logging.getLogger("jaxconv.train")

Array = jax.Array
Batch = tuple[Array, Array]  # images (B, 28, 28) uint8, labels (B,) int32


class TrainingDiverged(RuntimeError):
    """An epoch's training loss was NaN or infinite; the run stopped without saving it."""


# --------------------------------------------------------------------------- config

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


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's settings; every field has a default (``fit(TrainConfig())`` runs).

    ``learning_rate=None`` takes the optimizer's default from :data:`OPTIMIZERS` (Adam 3e-3,
    SGD 0.9 as in the book). ``lr_schedule`` is ``"constant"`` or ``"cosine"`` (decay from
    the learning rate to 0 over ``epochs``); None: constant for the classic variant (the
    book), cosine for the modern one, which with Adam 3e-3 passes 0.90 test accuracy in 10
    epochs where constant Adam 1e-3 stays near 0.89 (docs/RESULTS.md). ``optimizer`` may also
    be an ``optax.GradientTransformation`` (then ``learning_rate`` must be None).
    ``out_dir=None`` means ``runs/lenet-<variant>``.
    ``layout`` is LeNet's activation layout, "NHWC" or "CHWN"; None: CHWN on CPU, where it
    trains faster, NHWC elsewhere (:func:`jaxconv.models.default_layout`). Params do not
    depend on it. ``devices=None`` trains data-parallel over every device (of every process, see
    :mod:`jaxconv.distributed`); ``batch_size`` is global and must divide evenly by them.
    """

    variant: str = "modern"
    epochs: int = 10
    batch_size: int = 256
    optimizer: str | optax.GradientTransformation = "adam"
    learning_rate: float | None = None
    lr_schedule: str | None = None
    seed: int = 0
    out_dir: str | Path | None = None
    data_dir: str | Path | None = None
    data_source: str = "auto"
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
    layout: str | None = None  # LeNet's activation layout; None: default_layout()
    scan_unroll: int = 1
    devices: int | None = None  # data-parallel over this many devices; None: all of them

    def resolved(self) -> TrainConfig:
        """This config validated, with ``learning_rate`` and ``out_dir`` filled in.

        Raises:
          ValueError / TypeError: naming the field and the rule it breaks.
        """
        check_variant(self.variant)
        if self.conv_impl is not None and self.conv_impl not in conv_lib.IMPLEMENTATIONS:
            raise ValueError(
                f"conv_impl must be None or one of {tuple(conv_lib.IMPLEMENTATIONS)}, "
                f"got {self.conv_impl!r}"
            )
        check_layout(self.layout)
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "checkpoint_every",
            "max_checkpoints",
            "scan_unroll",
        ):
            _positive_int(getattr(self, name), name)
        for name in ("train_subset", "test_subset", "devices"):
            if getattr(self, name) is not None:
                _positive_int(getattr(self, name), name)
        seed = as_int(self.seed, "seed")
        if not 0 <= seed < 2**31:
            raise ValueError(f"seed must be in 0..2**31-1, got {seed}")
        if isinstance(self.optimizer, optax.GradientTransformation):
            if self.learning_rate is not None:
                raise ValueError(
                    "learning_rate applies to a named optimizer; an optax.GradientTransformation "
                    f"carries its own (got learning_rate={self.learning_rate!r})"
                )
            lr = None
        elif self.optimizer in OPTIMIZERS:
            lr = OPTIMIZERS[self.optimizer][1] if self.learning_rate is None else self.learning_rate
            _positive_float(lr, "learning_rate")
        else:
            raise ValueError(
                f"optimizer must be one of {tuple(OPTIMIZERS)} or an optax.GradientTransformation, "
                f"got {self.optimizer!r}"
            )
        schedule = self.lr_schedule
        if schedule is None:
            schedule = "constant" if self.variant == "classic" else "cosine"
        if schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
        if self.tensorboard and not tensorboard_available():
            raise ValueError(
                "tensorboard=True needs tensorboardX (pip install tensorboardX) or TensorFlow; "
                "neither is installed"
            )
        out_dir = self.out_dir if self.out_dir is not None else f"runs/lenet-{self.variant}"
        return dataclasses.replace(
            self, learning_rate=lr, lr_schedule=schedule, out_dir=Path(out_dir).expanduser()
        )

    def meta(self) -> dict[str, Any]:
        """The settings a checkpoint records (JSON): enough to rebuild the model and check a
        resume. Call on a :meth:`resolved` config."""
        named = isinstance(self.optimizer, str)
        return {
            "model": "LeNet",
            "variant": self.variant,
            "num_classes": 10,
            "conv_impl": self.conv_impl,
            "layout": self.layout,
            "optimizer": self.optimizer if named else "custom",
            "learning_rate": self.learning_rate,
            "lr_schedule": self.lr_schedule,
            "epochs": self.epochs if self.lr_schedule == "cosine" else None,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "train_subset": self.train_subset,
            "test_subset": self.test_subset,
        }


def _positive_int(value: Any, name: str) -> int:
    value = as_int(value, name)
    if value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {value}")
    return value


def _positive_float(value: Any, name: str) -> float:
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)


def make_optimizer(
    optimizer: str | optax.GradientTransformation,
    learning_rate: float | None = None,
    schedule: str = "constant",
    total_steps: int | None = None,
) -> optax.GradientTransformation:
    """An optax optimizer by name (see :data:`OPTIMIZERS`) or as given.

    ``learning_rate=None`` takes the name's default. ``schedule="cosine"`` decays it to 0 over
    ``total_steps`` optimizer steps (``optax.cosine_decay_schedule``).
    """
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {tuple(OPTIMIZERS)}, got {optimizer!r}")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}")
    lr = OPTIMIZERS[optimizer][1] if learning_rate is None else learning_rate
    lr = _positive_float(lr, "learning_rate")
    if schedule == "cosine":
        steps = _positive_int(total_steps, "total_steps")
        return _named_optimizer(optimizer, lr, steps)
    return _named_optimizer(optimizer, lr, None)


# jit keys its cache on the state's static fields; an optax optimizer compares by identity:
# building each once per setting lets repeated runs in one process reuse the compiled epoch.
@functools.lru_cache(maxsize=64)
def _named_optimizer(
    name: str, learning_rate: float, cosine_steps: int | None
) -> optax.GradientTransformation:
    if cosine_steps is None:
        return OPTIMIZERS[name][0](learning_rate)
    return OPTIMIZERS[name][0](optax.cosine_decay_schedule(learning_rate, cosine_steps))


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be written there (before training).

    Raises:
      ValueError: it cannot be created or written to (the OS error says why).
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(
            f"out_dir {str(path)!r} is not a writable directory: {err.strerror or err}"
        ) from None
    return path


def check_free_space(out_dir: Path, state: Any, max_checkpoints: int) -> None:
    """Refuse a run whose ``out_dir`` cannot hold its checkpoints (before training, not when
    the first save fails an epoch later).

    A run needs about ``max_checkpoints + 1`` states (one being written while the kept ones
    stay) of ``sum(leaf.nbytes)`` each (an upper bound: orbax compresses), plus 1 MiB for the
    metrics and plots.

    Raises:
      ValueError: less free space than that, naming ``out_dir``.
    """
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    needed = (max_checkpoints + 1) * state_bytes + (1 << 20)
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ValueError(
            f"out_dir {str(out_dir)!r} has {free} bytes of free space; a run needs about "
            f"{needed} ({max_checkpoints + 1} checkpoints of {state_bytes} bytes + 1 MiB)"
        )


# --------------------------------------------------------------------------- state and step


class TrainState(flax.struct.PyTreeNode):
    """Everything that changes during training, as one pytree (what a checkpoint saves).

    ``params`` is the model's ``"params"`` collection; ``key`` a raw uint32 (2,) key, the
    run's base key; ``epoch`` the number of epochs completed; ``step`` of optimizer steps.
    ``model`` and ``tx`` are static: not leaves, not saved. (jit compares static fields by
    value for a Flax module, so equal models share compiled functions.)
    """

    params: Any
    opt_state: Any
    key: Array
    epoch: Array  # int32 ()
    step: Array  # int32 ()
    model: nn.Module = flax.struct.field(pytree_node=False)
    tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

    @classmethod
    def create(cls, model: nn.Module, tx: optax.GradientTransformation, seed: int) -> TrainState:
        """Initialise params from ``seed`` (the book's init) and the optimizer state."""
        params, opt_state, key = _state_initializer(model, tx)(jnp.int32(seed))
        return cls(
            params=params,
            opt_state=opt_state,
            key=key,
            epoch=jnp.zeros((), jnp.int32),  # strong int32: the same avals a restore gives
            step=jnp.zeros((), jnp.int32),
            model=model,
            tx=tx,
        )


@functools.lru_cache(maxsize=16)
def _state_initializer(model: nn.Module, tx: optax.GradientTransformation) -> Callable[..., Any]:
    """A compiled ``seed -> (params, opt_state, key)``: the book's init from ``PRNGKey(seed)``."""

    def init(seed: Array) -> tuple[Any, Any, Array]:
        init_key, key = jax.random.split(jax.random.PRNGKey(seed))
        params = model.init(init_key, jnp.zeros((1, 28, 28, 1), jnp.float32))["params"]
        return params, tx.init(params), key

    # It runs once per run: compile it fast (see models.NO_BACKEND_OPTIMIZATION).
    return jax.jit(init).lower(jnp.int32(0)).compile(NO_BACKEND_OPTIMIZATION)


def to_input(images: Array) -> Array:
    """uint8 (B, 28, 28) -> float32 (B, 28, 28, 1) in [0, 1]; done on device, in the jit."""
    return images.astype(jnp.float32)[..., None] / 255.0


def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, Array]]:
    """One optimizer step on one batch; pure. Returns the new state and the batch's mean
    cross-entropy ``loss`` and number of ``correct`` predictions."""
    images, labels = batch  # (B, 28, 28) uint8, (B,) int32

    def loss_fn(params: Any) -> tuple[Array, Array]:
        logits = state.model.apply({"params": params}, to_input(images))  # (B, 10)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
    state = state.replace(
        params=optax.apply_updates(state.params, updates), opt_state=opt_state, step=state.step + 1
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
) -> dict[str, Array]:
    """Mean loss and accuracy over *every* example, in one jitted call.

    The last batch is padded and masked (``data.pad_to_batches``), so all n examples count
    once each whatever ``batch_size`` is (static; clipped to n).
    """
    batch_size = min(batch_size, images.shape[0])
    xb, yb, mask = data_lib.pad_to_batches(images, labels, batch_size)  # (nb, B, ...) each

    def body(totals: tuple[Array, Array], batch: tuple[Array, Array, Array]) -> Any:
        x, y, m = batch
        logits = model.apply({"params": params}, to_input(x))  # (B, 10)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y)  # (B,)
        correct = (jnp.argmax(logits, axis=-1) == y) & m
        return (totals[0] + jnp.sum(jnp.where(m, loss, 0.0)), totals[1] + jnp.sum(correct)), None

    zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
    (loss_sum, correct), _ = jax.lax.scan(body, zero, (xb, yb, mask))
    n = images.shape[0]
    return {"loss": loss_sum / n, "accuracy": correct / n}


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns: the final state, one metrics record per epoch of the whole
    run (a resumed run's earlier records included), where the files are, and how many epochs
    this call trained."""

    state: TrainState
    history: list[dict[str, Any]]
    out_dir: Path
    checkpoint_dir: Path
    epochs_trained: int


def _load_data(cfg: TrainConfig, dataset: data_lib.FashionMNIST | None) -> Any:
    ds = (
        dataset
        if dataset is not None
        else data_lib.load_fashion_mnist(cfg.data_dir, cfg.data_source)
    )
    if cfg.train_subset is not None or cfg.test_subset is not None:
        ds = data_lib.subset(ds, cfg.train_subset, cfg.test_subset)
    if cfg.batch_size > len(ds.train):
        raise ValueError(
            f"batch_size {cfg.batch_size} is larger than the {len(ds.train)} training examples"
        )
    return ds


class _Records:
    """:class:`MetricsLog`'s records without its file: the log of every process but process 0
    of a multi-host run (process 0 writes the file, in the ``out_dir`` they share)."""

    def __init__(self, out_dir: Path, keep_through_epoch: int | None) -> None:
        self.records: list[dict[str, Any]] = []
        if keep_through_epoch is not None:  # a resumed run: the records process 0 keeps
            records = read_metrics(out_dir / METRICS_FILE)
            self.records = [r for r in records if r.get("epoch", 0) <= keep_through_epoch]

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))

    def close(self) -> None:
        pass


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """A checkpoint of another model or optimizer cannot be continued; other differences
    (batch size, seed, ...) can, but the run is then not the uninterrupted one: warn."""
    for key in ("variant", "optimizer"):
        if saved.get(key) != now[key]:
            raise CheckpointError(
                f"the checkpoint in {str(where)!r} is of {key} {saved.get(key)!r}, this run's is "
                f"{now[key]!r}: use the same settings or another out_dir"
            )
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if changed:
        logger.warning(
            "resuming with settings that differ from the checkpointed run: %s",
            ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in changed),
        )


def _restore_or_start(
    cfg: TrainConfig, ckpts: Checkpoints, state: TrainState, meta: dict[str, Any]
) -> TrainState:
    """The state to continue from: a fresh one, or (resume) the newest readable checkpoint."""
    if not ckpts.epochs():
        if cfg.resume:
            logger.info("no checkpoint in %s: starting from scratch", ckpts.directory)
        return state
    if not cfg.resume:
        raise ValueError(
            f"out_dir {str(cfg.out_dir)!r} already holds checkpoints (epochs {ckpts.epochs()}): "
            "pass resume=True (--resume) to continue that run, or choose another out_dir"
        )
    state, saved_meta, _ = ckpts.restore(state, quarantine=True)
    _check_resumable(saved_meta, meta, ckpts.directory)
    logger.info("resumed from %s at epoch %d", ckpts.directory, int(state.epoch))
    return state


def _diverged(cfg: TrainConfig, epoch: int, loss: float, ckpts: Checkpoints) -> TrainingDiverged:
    ckpts.wait()  # the last good epoch's save may still be in flight
    last = ckpts.latest_epoch()
    where = (
        f"The last good checkpoint is epoch {last} in {ckpts.directory}."
        if last is not None
        else "No checkpoint was saved."
    )
    lr = f" (this run's: {cfg.learning_rate})" if cfg.learning_rate is not None else ""
    return TrainingDiverged(
        f"training diverged: epoch {epoch}'s train loss is {loss}; stopped without saving it. "
        f"{where} Try a smaller learning rate{lr}."
    )


def fit(
    config: TrainConfig | None = None, dataset: data_lib.FashionMNIST | None = None
) -> FitResult:
    """Train LeNet as ``config`` says, from scratch or (``resume``) from its last checkpoint.

    Per epoch: one jitted ``train_epoch``, one jitted ``evaluate`` over the whole test set, a
    line in ``<out_dir>/metrics.jsonl``, a checkpoint in ``<out_dir>/checkpoints/<epoch>``,
    ``curves.png`` redrawn, and a tick of the progress bar. Compilation happens once, before
    the first epoch, and is reported apart (``compile_seconds`` in the first record).

    Args:
      config: the settings (default ``TrainConfig()``).
      dataset: a loaded data set (default: ``data.load_fashion_mnist(config.data_dir)``).

    Raises:
      ValueError / TypeError: a bad setting, before any training (see ``TrainConfig``).
      CheckpointError: resume found no readable checkpoint, or one of another model.
      TrainingDiverged: an epoch's loss was not finite; the last good checkpoint is kept.
    """
    cfg = (config or TrainConfig()).resolved()
    mesh = distributed.make_mesh(cfg.devices)  # every device of every process, or cfg.devices
    distributed.check_batch_size(cfg.batch_size, mesh)
    parallel = mesh.size > 1  # one device: the plain program, nothing sharded
    primary = distributed.is_primary()  # process 0 writes the files of a multi-host run
    out_dir = prepare_out_dir(cfg.out_dir)
    ds = _load_data(cfg, dataset)
    meta = cfg.meta()
    model = LeNet(cfg.variant, conv_impl=cfg.conv_impl, layout=cfg.layout or default_layout())
    total_steps = cfg.epochs * (len(ds.train) // cfg.batch_size)  # the cosine schedule's length
    tx = make_optimizer(cfg.optimizer, cfg.learning_rate, cfg.lr_schedule, total_steps)
    state = TrainState.create(model, tx, cfg.seed)
    check_free_space(out_dir, state, cfg.max_checkpoints)
    if parallel:  # before a restore: orbax restores onto the target's (replicated) sharding
        state = distributed.replicate(state, mesh)

    ckpts = Checkpoints(out_dir / CHECKPOINT_DIR, max_to_keep=cfg.max_checkpoints)
    log = bar = tb = None
    try:
        state = _restore_or_start(cfg, ckpts, state, meta)
        start = int(state.epoch)
        keep = start if cfg.resume else None
        log = MetricsLog(out_dir / METRICS_FILE, keep) if primary else _Records(out_dir, keep)
        if start >= cfg.epochs:
            logger.info("%s is already at epoch %d: nothing to do", out_dir, start)
            return FitResult(state, list(log.records), out_dir, ckpts.directory, 0)
        plots = cfg.plots and plotting_available() and primary
        tb = TensorBoardLog(out_dir / "tensorboard") if cfg.tensorboard and primary else None

        if parallel:  # the whole set on every device, once (see jaxconv.distributed)
            (train_x, train_y), (test_x, test_y) = distributed.replicate(
                ((ds.train.images, ds.train.labels), (ds.test.images, ds.test.labels)), mesh
            )
            sharding = {"batch_sharding": distributed.batch_sharding(mesh)}
        else:
            train_x, train_y = data_lib.to_device(ds.train)  # uint8 stays uint8 on device
            test_x, test_y = data_lib.to_device(ds.test)
            sharding = {}
        t0 = time.perf_counter()
        run_epoch = train_epoch.lower(
            state, train_x, train_y, batch_size=cfg.batch_size, unroll=cfg.scan_unroll, **sharding
        ).compile()
        run_eval = evaluate.lower(
            state.model, state.params, test_x, test_y, batch_size=cfg.eval_batch_size
        ).compile()
        compile_seconds = time.perf_counter() - t0
        examples = (len(ds.train) // cfg.batch_size) * cfg.batch_size  # per epoch

        bar = tqdm(
            total=cfg.epochs,
            initial=start,
            unit="epoch",
            desc=f"lenet-{cfg.variant}",
            disable=not (cfg.progress and primary),
            dynamic_ncols=True,
        )
        for epoch in range(start + 1, cfg.epochs + 1):
            t = time.perf_counter()
            new_state, train_metrics = run_epoch(state, train_x, train_y)
            train_metrics = jax.device_get(train_metrics)  # waits for the epoch
            epoch_seconds = time.perf_counter() - t
            loss = float(train_metrics["loss"])
            if not math.isfinite(loss):
                raise _diverged(cfg, epoch, loss, ckpts)
            state = new_state

            t = time.perf_counter()
            test_metrics = jax.device_get(run_eval(state.params, test_x, test_y))
            record = {
                "epoch": epoch,
                "step": int(state.step),
                "train_loss": loss,
                "train_acc": float(train_metrics["accuracy"]),
                "test_loss": float(test_metrics["loss"]),
                "test_acc": float(test_metrics["accuracy"]),
                "epoch_seconds": epoch_seconds,
                "eval_seconds": time.perf_counter() - t,
                "examples_per_second": examples / epoch_seconds,
            }
            if epoch == start + 1:
                record["compile_seconds"] = compile_seconds
            log.write(record)
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                ckpts.save(epoch, state, meta)  # asynchronous: written during the next epoch
            if plots:
                plot_curves(log.records, out_dir / CURVES_FILE)
            if tb is not None:
                tb.write(record, [k for k in record if k not in ("epoch", "step")])
            bar.set_postfix(
                loss=f"{loss:.3f}",
                train_acc=f"{record['train_acc']:.3f}",
                test_acc=f"{record['test_acc']:.3f}",
                s_per_epoch=f"{epoch_seconds:.2f}",
            )
            bar.update(1)
        return FitResult(state, list(log.records), out_dir, ckpts.directory, cfg.epochs - start)
    finally:
        ckpts.close()  # waits for the last save
        for closable in (log, bar, tb):
            if closable is not None:
                closable.close()


# --------------------------------------------------------------------------- a checkpoint


def evaluate_checkpoint(
    path: str | Path,
    *,
    dataset: data_lib.FashionMNIST | None = None,
    data_dir: str | Path | None = None,
    test_subset: int | None = None,
    batch_size: int = 1000,
) -> dict[str, Any]:
    """Test loss and accuracy of a saved model on the (whole, or first ``test_subset``) test set.

    ``path``: a run's out_dir, its ``checkpoints/`` folder (newest readable epoch) or one
    epoch's folder. Returns ``{"epoch", "variant", "test_loss", "test_acc", "examples",
    "checkpoint"}``.

    Raises:
      CheckpointError: nothing readable there, or params that do not fit the recorded model.
    """
    _positive_int(batch_size, "batch_size")
    directory, epoch = resolve(path)
    with Checkpoints(directory, read_only=True) as ckpts:
        raw, meta, epoch = ckpts.restore(None, epoch)
    try:
        model = LeNet(meta["variant"], conv_impl=meta.get("conv_impl"))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {directory}/{epoch} has bad metadata: {err}") from None
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    params = raw.get("params") if isinstance(raw, dict) else None
    shapes = jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), params)
    if params is None or shapes != jax.tree.map(
        lambda a: (tuple(a.shape), str(a.dtype)), expected["params"]
    ):
        raise CheckpointError(
            f"checkpoint {directory}/{epoch} does not hold LeNet({meta['variant']!r}) params"
        )
    ds = dataset if dataset is not None else data_lib.load_fashion_mnist(data_dir)
    if test_subset is not None:
        ds = data_lib.subset(ds, None, test_subset)
    test_x, test_y = data_lib.to_device(ds.test)
    metrics = jax.device_get(evaluate(model, params, test_x, test_y, batch_size=batch_size))
    return {
        "epoch": epoch,
        "variant": meta["variant"],
        "test_loss": float(metrics["loss"]),
        "test_acc": float(metrics["accuracy"]),
        "examples": len(ds.test),
        "checkpoint": str(directory / str(epoch)),
    }
