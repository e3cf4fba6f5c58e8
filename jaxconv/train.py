"""Training a run: :class:`TrainConfig` resolved once, then :func:`fit`, and
:func:`evaluate_checkpoint` for a saved model.

The pure core (optimizer, state, ``train_step``, ``train_epoch``, ``evaluate``) is
:mod:`jaxconv.steps`; the run's settings :mod:`jaxconv.config`; its folder on disk
:mod:`jaxconv.rundir`; checkpoints :mod:`jaxconv.checkpoint`; metrics and plots
:mod:`jaxconv.metrics`. This module ties them together, in the order a run goes: settings ->
data -> state (fresh or restored) -> compiled epoch and evaluation -> one record, checkpoint
and plot per epoch.

Data parallelism (:mod:`jaxconv.distributed`): with ``devices`` > 1 (default: every device,
of every process) the state and the data set are replicated over a mesh, ``batch_sharding``
(``NamedSharding(mesh, P(None, "batch"))``) splits the batch axis of the epoch's ``(nb, B, ...)``
batches, and XLA inserts the gradient all-reduce. ``batch_size`` stays global. One device runs
the plain program, with no sharding at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from jaxconv import data as data_lib
from jaxconv import distributed
from jaxconv.checkpoint import CHECKPOINT_DIR, CheckpointError, Checkpoints, resolve
from jaxconv.config import TrainConfig, saved_network_layout
from jaxconv.errors import ArgumentError, ConfigError, positive_int
from jaxconv.kernels.dispatch import compiler_options, default_layout
from jaxconv.metrics import (
    CURVES_FILE,
    METRICS_FILE,
    MetricsLog,
    TensorBoardLog,
    plot_curves,
    plotting_available,
)
from jaxconv.models import LeNet
from jaxconv.recipes import build_network, check_image_size
from jaxconv.rundir import CreatedPaths, FollowerRecords, check_free_space, prepare_out_dir
from jaxconv.steps import (
    LR_SCHEDULES,
    OPTIMIZERS,
    TrainState,
    evaluate,
    input_shape,
    make_optimizer,
    named_optimizer,
    to_input,
    train_epoch,
    train_step,
)

__all__ = [
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "FitResult",
    "TrainConfig",
    "TrainState",
    "TrainingDiverged",
    "default_layout",  # the backend's layout; kept here for existing callers
    "evaluate",
    "evaluate_checkpoint",
    "fit",
    "make_optimizer",
    "to_input",
    "train_epoch",
    "train_step",
]

logger = logging.getLogger("jaxconv.train")


class TrainingDiverged(RuntimeError):
    """An epoch's training loss was NaN or infinite; the run stopped without saving it."""


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


def fit(
    config: TrainConfig | None = None, dataset: data_lib.FashionMNIST | None = None
) -> FitResult:
    """Train LeNet as ``config`` says, from scratch or (``resume``) from its last checkpoint.

    Per epoch: one jitted ``train_epoch``, one jitted ``evaluate`` over the whole test set, a
    line in ``<out_dir>/metrics.jsonl``, a checkpoint in ``<out_dir>/checkpoints/<epoch>``,
    ``curves.png`` redrawn, and a tick of the progress bar. Compilation happens once, before
    the first epoch, and is reported apart (``compile_seconds`` in the first record). A run
    that fails or is interrupted before its first epoch is complete (recorded, checkpointed,
    plotted) leaves nothing it created (:class:`jaxconv.rundir.CreatedPaths`).

    Args:
      config: the settings (default ``TrainConfig()``). A resumed chapter-7 network run with
        ``layout=None`` continues in its checkpoint's layout.
      dataset: a loaded data set (default: ``data.load_fashion_mnist(config.data_dir)``).

    Raises:
      ConfigError (ValueError) / TypeError: a bad setting, before any training.
      DataError: the data is missing or corrupt, before anything is written.
      CheckpointError: resume found no readable checkpoint, or one of another model or of
        the network in another layout.
      TrainingDiverged: an epoch's loss was not finite; the last good checkpoint is kept.
    """
    cfg = _resume_layout(config or TrainConfig())
    mesh = distributed.make_mesh(cfg.devices)  # every device of every process, or cfg.devices
    distributed.check_batch_size(cfg.batch_size, mesh)
    ds = _load_data(cfg, dataset)  # before the disk is touched: a data error leaves nothing
    created = CreatedPaths(cfg.out_dir)
    trained = 0
    try:
        with contextlib.ExitStack() as resources:
            run = _Run(cfg, ds, mesh, resources)
            for epoch in range(run.start + 1, cfg.epochs + 1):
                run.train_one_epoch(epoch)
                trained += 1
            return run.result(trained)
    except BaseException:  # KeyboardInterrupt included: the files are closed by now
        if trained == 0 and distributed.is_primary():
            created.remove()
        raise


def _resume_layout(config: TrainConfig) -> TrainConfig:
    """``config`` resolved; a resumed chapter-7 network run that leaves ``layout`` None
    continues in its checkpoint's layout (a run from before networks had a layout: NCHW)
    rather than the backend's default, which would not fit its conv weights. An explicit
    layout is kept (and checked against the checkpoint when it is restored)."""
    cfg = config.resolved()
    if config.layout is not None or not config.resume or cfg.is_lenet:
        return cfg
    directory = cfg.out_dir / CHECKPOINT_DIR
    if not directory.is_dir():
        return cfg
    with Checkpoints(directory, read_only=True) as ckpts:
        meta = ckpts.read_meta()
    saved = saved_network_layout(meta) if meta and meta.get("model") == cfg.model else None
    if saved is None or saved == cfg.layout:
        return cfg
    logger.info("resuming %s in its checkpoint's layout %s", cfg.out_dir, saved)
    return dataclasses.replace(cfg, layout=saved)


def _load_data(cfg: TrainConfig, dataset: data_lib.FashionMNIST | None) -> data_lib.FashionMNIST:
    """The data set the run trains on: loaded (or given), cut to the subsets, checked against
    the batch size."""
    if dataset is None:
        ds = data_lib.load_fashion_mnist(
            cfg.data_dir,
            cfg.data_source,
            verify=cfg.verify,
            train_subset=cfg.train_subset,
            test_subset=cfg.test_subset,
        )
    else:
        names = ("train_subset", "test_subset")
        ds = data_lib.subset(dataset, cfg.train_subset, cfg.test_subset, names=names)
    if cfg.batch_size > len(ds.train):
        raise ConfigError(
            "batch_size", f"{cfg.batch_size} is larger than the {len(ds.train)} training examples"
        )
    return ds


class _Run:
    """One :func:`fit` call's live parts, set up in order: the out_dir, the state (fresh or
    restored), the metrics log, then the compiled epoch and evaluation. Everything that must
    be closed is entered into ``resources``."""

    def __init__(
        self,
        cfg: TrainConfig,
        ds: data_lib.FashionMNIST,
        mesh: jax.sharding.Mesh,
        resources: contextlib.ExitStack,
    ) -> None:
        self.cfg = cfg
        self.parallel = mesh.size > 1  # one device: the plain program, nothing sharded
        primary = distributed.is_primary()  # process 0 writes the files of a multi-host run
        self.out_dir = prepare_out_dir(cfg.out_dir)
        self.meta = cfg.meta()
        state = _initial_state(cfg, len(ds.train))
        check_free_space(self.out_dir, state, cfg.max_checkpoints)
        if self.parallel:  # before a restore: orbax restores onto the target's sharding
            state = distributed.replicate(state, mesh)
        else:  # committed to the device, as a restored state is: one compiled epoch for both
            state = jax.device_put(state, mesh.devices.flat[0])
        self.ckpts = resources.enter_context(
            Checkpoints(self.out_dir / CHECKPOINT_DIR, max_to_keep=cfg.max_checkpoints)
        )
        self.state = _restore_or_start(cfg, self.ckpts, state, self.meta)
        self.start = int(self.state.epoch)
        keep = self.start if cfg.resume else None
        self.log: MetricsLog | FollowerRecords = (
            MetricsLog(self.out_dir / METRICS_FILE, keep)
            if primary
            else FollowerRecords(self.out_dir, keep)
        )
        resources.callback(self.log.close)
        if self.start >= cfg.epochs:
            logger.info("%s is already at epoch %d: nothing to do", self.out_dir, self.start)
            return
        self.plots = cfg.plots and plotting_available() and primary
        self.title = f"{_model_title(cfg)} on Fashion-MNIST, {self.meta['optimizer']}"
        self.tb = None
        if cfg.tensorboard and primary:
            self.tb = TensorBoardLog(self.out_dir / "tensorboard")
            resources.callback(self.tb.close)
        self._compile(ds, mesh)
        self.examples = (len(ds.train) // cfg.batch_size) * cfg.batch_size  # per epoch
        self.bar = tqdm(
            total=cfg.epochs,
            initial=self.start,
            unit="epoch",
            desc=f"lenet-{cfg.variant}" if cfg.is_lenet else cfg.model,
            disable=not (cfg.progress and primary),
            dynamic_ncols=True,
        )
        resources.callback(self.bar.close)

    def _compile(self, ds: data_lib.FashionMNIST, mesh: jax.sharding.Mesh) -> None:
        """The data on device and the epoch and evaluation compiled for it, timed apart."""
        if self.parallel:  # the whole set on every device, once (see jaxconv.distributed)
            (train_x, train_y), (test_x, test_y) = distributed.replicate(
                ((ds.train.images, ds.train.labels), (ds.test.images, ds.test.labels)), mesh
            )
            sharding = {"batch_sharding": distributed.batch_sharding(mesh)}
        else:
            train_x, train_y = data_lib.to_device(ds.train)  # uint8 stays uint8 on device
            test_x, test_y = data_lib.to_device(ds.test)
            sharding = {}
        self.train_data, self.test_data = (train_x, train_y), (test_x, test_y)
        t0 = time.perf_counter()
        self.run_epoch = train_epoch.lower(
            self.state,
            train_x,
            train_y,
            batch_size=self.cfg.batch_size,
            unroll=self.cfg.scan_unroll,
            **sharding,
        ).compile(compiler_options())
        self.run_eval = evaluate.lower(
            self.state.model,
            self.state.params,
            test_x,
            test_y,
            batch_size=self.cfg.eval_batch_size,
            batch_stats=self.state.batch_stats,
        ).compile(compiler_options())
        self.compile_seconds = time.perf_counter() - t0

    def train_one_epoch(self, epoch: int) -> None:
        """Train and evaluate epoch ``epoch`` (counted from 1), then record, checkpoint, plot."""
        t = time.perf_counter()
        new_state, train_metrics = self.run_epoch(self.state, *self.train_data)
        train_metrics = jax.device_get(train_metrics)  # waits for the epoch
        epoch_seconds = time.perf_counter() - t
        loss = float(train_metrics["loss"])
        if not math.isfinite(loss):
            raise _diverged(self.cfg, epoch, loss, self.ckpts)
        self.state = new_state

        t = time.perf_counter()
        test_metrics = jax.device_get(
            self.run_eval(self.state.params, *self.test_data, batch_stats=self.state.batch_stats)
        )
        record = {
            "epoch": epoch,
            "step": int(self.state.step),
            "train_loss": loss,
            "train_acc": float(train_metrics["accuracy"]),
            "test_loss": float(test_metrics["loss"]),
            "test_acc": float(test_metrics["accuracy"]),
            "epoch_seconds": epoch_seconds,
            "eval_seconds": time.perf_counter() - t,
            "examples_per_second": self.examples / epoch_seconds,
        }
        if epoch == self.start + 1:
            record["compile_seconds"] = self.compile_seconds
        self.log.write(record)
        if epoch % self.cfg.checkpoint_every == 0 or epoch == self.cfg.epochs:
            self.ckpts.save(epoch, self.state, self.meta)  # asynchronous: during the next epoch
        if self.plots:
            plot_curves(self.log.records, self.out_dir / CURVES_FILE, title=self.title)
        if self.tb is not None:
            self.tb.write(record, [k for k in record if k not in ("epoch", "step")])
        self.bar.set_postfix(
            loss=f"{loss:.3f}",
            train_acc=f"{record['train_acc']:.3f}",
            test_acc=f"{record['test_acc']:.3f}",
            s_per_epoch=f"{epoch_seconds:.2f}",
        )
        self.bar.update(1)

    def result(self, epochs_trained: int) -> FitResult:
        return FitResult(
            self.state, list(self.log.records), self.out_dir, self.ckpts.directory, epochs_trained
        )


def _model_title(cfg: TrainConfig) -> str:
    return f"LeNet ({cfg.variant})" if cfg.is_lenet else f"{cfg.model} ({cfg.image_size}px)"


def _initial_state(cfg: TrainConfig, n_train: int) -> TrainState:
    """A fresh state of the resolved ``cfg``: its model (LeNet, or a chapter-7 network for
    ``image_size`` input), its optimizer (settings validated by ``cfg.resolved()``; a cosine
    schedule spans every step of the run), variables from its seed."""
    if cfg.is_lenet:
        model = LeNet(cfg.variant, conv_impl=cfg.conv_impl, layout=cfg.layout)
    else:
        model = build_network(cfg.model, cfg.image_size, cfg.layout)
    if isinstance(cfg.optimizer, str):
        steps = cfg.epochs * (n_train // cfg.batch_size) if cfg.lr_schedule == "cosine" else None
        tx = named_optimizer(cfg.optimizer, cfg.learning_rate, steps)
    else:
        tx = cfg.optimizer
    return TrainState.create(model, tx, cfg.seed)


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """A checkpoint of another model or optimizer cannot be continued; other differences
    (batch size, seed, ...) can, but the run is then not the uninterrupted one: warn."""
    for key in ("model", "variant", "optimizer"):
        if saved.get(key) != now[key]:
            raise CheckpointError(
                f"the checkpoint in {str(where)!r} is of {key} {saved.get(key)!r}, this run's is "
                f"{now[key]!r}: use the same settings or another out_dir",
                (key, "out_dir"),
            )
    changed = [k for k in now if k in saved and saved[k] != now[k]]
    if changed:
        logger.warning(
            "resuming with settings that differ from the checkpointed run: %s",
            ", ".join(f"{k} {saved[k]!r} -> {now[k]!r}" for k in changed),
        )


def _check_layout_resumable(saved: dict[str, Any], now: dict[str, Any], where: Path) -> None:
    """A network's checkpoint holds conv weights in its layout (OIHW for NCHW, HWIO for NHWC):
    continuing it in the other layout is refused, before the restore (which would take the
    mismatched shapes for an unreadable checkpoint). LeNet's params are the same in every
    layout."""
    if saved.get("model") != now["model"]:
        return  # _check_resumable names the model mismatch
    before, after = saved_network_layout(saved), now.get("network_layout")
    if before is not None and after is not None and before != after:
        raise CheckpointError(
            f"the checkpoint in {str(where)!r} is of a {before} {now['model']} (conv weights "
            f"stored {_KERNELS[before]}), this run's layout is {after} ({_KERNELS[after]}): "
            f"pass layout={before!r} to continue it, or use another out_dir",
            ("layout", "out_dir"),
        )


#: The stored conv weight layout of a network in each activation layout.
_KERNELS = {"NCHW": "OIHW", "NHWC": "HWIO"}


def _restore_or_start(
    cfg: TrainConfig, ckpts: Checkpoints, state: TrainState, meta: dict[str, Any]
) -> TrainState:
    """The state to continue from: a fresh one, or (resume) the newest readable checkpoint."""
    if not ckpts.epochs():
        if cfg.resume:
            logger.info("no checkpoint in %s: starting from scratch", ckpts.directory)
        return state
    if not cfg.resume:
        raise ArgumentError(
            f"out_dir {str(cfg.out_dir)!r} already holds checkpoints (epochs {ckpts.epochs()}): "
            "pass resume=True to continue that run, or choose another out_dir",
            ("out_dir", "resume=True"),
        )
    newest = ckpts.read_meta()
    if newest is not None:
        _check_layout_resumable(newest, meta, ckpts.directory)
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


def _shapes(tree: Any) -> Any:
    return jax.tree.map(lambda a: (tuple(a.shape), str(a.dtype)), tree)


def evaluate_checkpoint(
    path: str | Path,
    *,
    dataset: data_lib.FashionMNIST | None = None,
    data_dir: str | Path | None = None,
    test_subset: int | None = None,
    batch_size: int = 1000,
    verify: bool = True,
) -> dict[str, Any]:
    """Test loss and accuracy of a saved model on the (whole, or first ``test_subset``) test set.

    ``path``: a run's out_dir, its ``checkpoints/`` folder (newest readable epoch) or one
    epoch's folder. ``verify``: check the data's digests (see ``data.load_fashion_mnist``).
    Returns ``{"epoch", "model", "variant", "test_loss", "test_acc", "examples",
    "checkpoint"}`` (``variant`` None for a chapter-7 network).

    Raises:
      CheckpointError: nothing readable there, or params that do not fit the recorded model.
    """
    positive_int(batch_size, "batch_size")
    directory, epoch = resolve(path)
    with Checkpoints(directory, read_only=True) as ckpts:
        raw, meta, epoch = ckpts.restore(None, epoch)
    where = f"checkpoint {directory}/{epoch}"
    try:
        name = meta["model"]
        if name == "LeNet":
            model = LeNet(meta["variant"], conv_impl=meta.get("conv_impl"))
            label = f"LeNet({meta['variant']!r})"
        else:
            size = check_image_size(name, meta["image_size"])
            layout = saved_network_layout(meta)
            model, label = build_network(name, size, layout), f"{name} ({layout}) at {size}px"
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{where} has bad metadata: {err}") from None
    expected = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros(input_shape(model)))
    raw = raw if isinstance(raw, dict) else {}
    params, batch_stats = raw.get("params"), raw.get("batch_stats") or {}
    if _shapes(params) != _shapes(expected["params"]) or _shapes(batch_stats) != _shapes(
        dict(expected.get("batch_stats", {}))
    ):
        raise CheckpointError(f"{where} does not hold {label} variables")
    if dataset is None:
        ds = data_lib.load_fashion_mnist(data_dir, verify=verify, test_subset=test_subset)
    else:
        ds = data_lib.subset(dataset, None, test_subset, names=("train_subset", "test_subset"))
    test_x, test_y = data_lib.to_device(ds.test)
    # Compiled as fit compiles its evaluation: in a process that just trained this model, the
    # same program (no second compile).
    run_eval = evaluate.lower(
        model, params, test_x, test_y, batch_size=batch_size, batch_stats=batch_stats
    ).compile(compiler_options())
    metrics = jax.device_get(run_eval(params, test_x, test_y, batch_stats=batch_stats))
    return {
        "epoch": epoch,
        "model": "lenet" if name == "LeNet" else name,
        "variant": meta["variant"],
        "test_loss": float(metrics["loss"]),
        "test_acc": float(metrics["accuracy"]),
        "examples": len(ds.test),
        "checkpoint": str(directory / str(epoch)),
    }
