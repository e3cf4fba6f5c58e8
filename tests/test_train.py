"""jaxconv.train (with jaxconv.checkpoint and jaxconv.metrics): the optax loop on real data.

Small subsets of the real Fashion-MNIST (512 train, 256 test), batch 64: every run with the
same settings reuses one compiled epoch, so the file stays fast on CPU.
"""

from __future__ import annotations

import json
import logging
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _runs import dataset_fixture, fit_quietly

from jaxconv import data, metrics
from jaxconv import train as train_lib
from jaxconv.checkpoint import CHECKPOINT_DIR, CheckpointError, Checkpoints, resolve
from jaxconv.kernels import dispatch
from jaxconv.kernels.dispatch import compiler_options
from jaxconv.metrics import CURVES_FILE, METRICS_FILE, read_metrics, tensorboard_available
from jaxconv.models import LeNet
from jaxconv.train import (
    FitResult,
    TrainConfig,
    TrainingDiverged,
    TrainState,
    evaluate,
    evaluate_checkpoint,
    fit,
    make_optimizer,
    train_epoch,
)

# Under ``pytest -n N --dist loadgroup`` every test here runs on one worker, where the runs
# with the same settings share their compiled epoch and evaluation.
pytestmark = pytest.mark.xdist_group("test_train")

N_TRAIN, N_TEST, BATCH = 512, 256, 64
STEPS_PER_EPOCH = N_TRAIN // BATCH
ds = dataset_fixture(N_TRAIN, N_TEST)


# A constant rate: these tests "interrupt" a run by asking for fewer epochs, which would
# change a cosine schedule's length (the SIGKILL tests in test_faults.py use the default).
SETTINGS = dict(epochs=2, batch_size=BATCH, lr_schedule="constant")


def run(ds, out_dir, **overrides) -> FitResult:
    return fit_quietly(ds, out_dir, **{**SETTINGS, **overrides})


def steps(out_dir) -> list[str]:
    return sorted(p.name for p in (out_dir / CHECKPOINT_DIR).iterdir())


# --------------------------------------------------------------------------- training


def test_fit_lowers_the_loss_and_writes_metrics_plots_checkpoints(ds, tmp_path):
    result = run(ds, tmp_path, epochs=3, plots=True)
    history = result.history
    assert [r["epoch"] for r in history] == [1, 2, 3]
    losses = [r["train_loss"] for r in history]
    assert losses[2] < losses[1] < losses[0] < 2.4  # from about ln(10) = 2.3
    assert history[-1]["test_acc"] > 0.5  # 10 classes: chance is 0.1
    assert int(result.state.epoch) == 3 and int(result.state.step) == 3 * STEPS_PER_EPOCH

    records = read_metrics(tmp_path / METRICS_FILE)
    assert records == history
    for r in records:
        assert {
            "epoch",
            "train_loss",
            "train_acc",
            "test_acc",
            "epoch_seconds",
            "examples_per_second",
        } <= set(r)
        assert r["examples_per_second"] == pytest.approx(N_TRAIN / r["epoch_seconds"])
    assert "compile_seconds" in records[0] and all("compile_seconds" not in r for r in records[1:])
    assert (tmp_path / CURVES_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Orbax wrote each epoch in a temporary folder and renamed it: only final folders remain.
    assert steps(tmp_path) == ["1", "2", "3"]
    assert not [p for p in tmp_path.rglob("*") if "tmp" in p.name]


def test_same_seed_gives_bit_identical_params(ds, tmp_path):
    a = run(ds, tmp_path / "a", epochs=1)
    b = run(ds, tmp_path / "b", epochs=1)
    c = run(ds, tmp_path / "c", epochs=1, seed=1)
    chex.assert_trees_all_equal(a.state.params, b.state.params)
    chex.assert_trees_all_equal(a.state.opt_state, b.state.opt_state)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    assert not np.array_equal(a.state.params["conv1"]["kernel"], c.state.params["conv1"]["kernel"])


def test_resume_equals_an_uninterrupted_run_bit_exactly(ds, tmp_path):
    whole = run(ds, tmp_path / "whole", epochs=4)
    run(ds, tmp_path / "split", epochs=2)  # "interrupted" after epoch 2
    resumed = run(ds, tmp_path / "split", epochs=4, resume=True)
    chex.assert_trees_all_equal(resumed.state, whole.state)  # params, opt state, key, epoch, step
    assert read_metrics(tmp_path / "split" / METRICS_FILE) == resumed.history
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert [r["test_acc"] for r in resumed.history] == [r["test_acc"] for r in whole.history]
    # Resuming a finished run does nothing.
    again = run(ds, tmp_path / "split", epochs=4, resume=True)
    assert again.epochs_trained == 0 and again.history == resumed.history
    chex.assert_trees_all_equal(again.state.params, whole.state.params)


def test_resume_falls_back_past_a_corrupt_checkpoint(ds, tmp_path, caplog):
    whole = run(ds, tmp_path / "whole", epochs=3)
    run(ds, tmp_path / "run", epochs=2)
    state_dir = tmp_path / "run" / CHECKPOINT_DIR / "2" / "state"
    for f in state_dir.rglob("*"):
        if f.is_file():
            f.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="jaxconv.checkpoint"):
        resumed = run(ds, tmp_path / "run", epochs=3, resume=True)
    assert "epoch 2" in caplog.text and "falling back to epoch 1" in caplog.text
    chex.assert_trees_all_equal(resumed.state.params, whole.state.params)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3]
    names = steps(tmp_path / "run")
    assert names[:2] == ["1", "2"] and names[2].startswith("2.unreadable-") and names[3] == "3"


def test_unreadable_checkpoints_give_a_clear_error(ds, tmp_path):
    run(ds, tmp_path, epochs=1)
    for f in (tmp_path / CHECKPOINT_DIR / "1").rglob("*"):
        if f.is_file():
            f.write_bytes(b"\x00")
    with pytest.raises(CheckpointError, match=r"no readable checkpoint .*\n  epoch 1: "):
        evaluate_checkpoint(tmp_path, dataset=ds)
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        run(ds, tmp_path, epochs=2, resume=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        evaluate_checkpoint(tmp_path / "empty", dataset=ds)
    with pytest.raises(CheckpointError, match="not a directory"):
        evaluate_checkpoint(tmp_path / "nowhere", dataset=ds)


def test_interrupted_write_is_ignored(ds, tmp_path):
    """A save killed mid-write leaves ``<epoch>.orbax-checkpoint-tmp``: never listed, removed
    when the directory is opened for writing again."""
    run(ds, tmp_path, epochs=1)
    stale = tmp_path / CHECKPOINT_DIR / "2.orbax-checkpoint-tmp"
    stale.mkdir()
    (stale / "state").write_bytes(b"half")
    assert resolve(tmp_path) == (tmp_path / CHECKPOINT_DIR, None)
    with Checkpoints(tmp_path / CHECKPOINT_DIR, read_only=True) as ckpts:
        assert ckpts.epochs() == [1]
    assert evaluate_checkpoint(tmp_path, dataset=ds)["epoch"] == 1
    run(ds, tmp_path, epochs=2, resume=True)
    assert steps(tmp_path) == ["1", "2"]


def nan_after(step: int) -> optax.GradientTransformation:
    """Adam whose updates turn NaN from optimizer step ``step`` on (a divergence on demand)."""
    poison = optax.scale_by_schedule(lambda count: jnp.where(count >= step, jnp.nan, 1.0))
    return optax.chain(optax.adam(1e-3), poison)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(ds, tmp_path):
    bad = nan_after(2 * STEPS_PER_EPOCH)  # params turn NaN during epoch 3
    with pytest.raises(TrainingDiverged, match=r"epoch 3's train loss is nan.*epoch 2 in "):
        run(ds, tmp_path, epochs=4, optimizer=bad)
    assert steps(tmp_path) == ["1", "2"]
    assert [r["epoch"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1, 2]
    result = evaluate_checkpoint(tmp_path, dataset=ds)
    assert result["epoch"] == 2 and 0.3 < result["test_acc"] <= 1.0


def test_huge_learning_rate_diverges_before_any_checkpoint(ds, tmp_path):
    with pytest.raises(TrainingDiverged, match="No checkpoint was saved"):
        run(ds, tmp_path, optimizer="sgd", learning_rate=1e30)
    assert list(tmp_path.iterdir()) == []  # a failed first epoch leaves nothing it created


# --------------------------------------------------------------------------- pieces


def test_evaluate_counts_every_example(ds):
    model = LeNet("modern")
    # The initial params of a run (the init compiled once, shared with fit's runs of it).
    params = TrainState.create(model, make_optimizer("adam"), seed=0).params
    x, y = jnp.asarray(ds.test.images[:250]), jnp.asarray(ds.test.labels[:250])

    @jax.jit  # the whole reference in one program
    def reference(params, x, y):
        logits = model.apply({"params": params}, x.astype(jnp.float32)[..., None] / 255.0)
        accuracy = jnp.mean(jnp.argmax(logits, -1) == y)
        return accuracy, optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    want_acc, want_loss = map(float, reference(params, x, y))
    assert 0.02 < want_acc < 0.5  # an untrained net: neither all right nor all wrong
    for batch_size in (64, 1000):  # 3 full batches + 58; larger than n
        got = evaluate(model, params, x, y, batch_size=batch_size)
        assert float(got["accuracy"]) == pytest.approx(want_acc, abs=1e-7)
        assert float(got["loss"]) == pytest.approx(want_loss, rel=1e-5)


def test_epoch_with_a_batch_sharding_is_the_same_epoch(ds, tmp_path):
    """The data-parallel hook: constraining the batch axis (here a 1-device mesh) changes
    nothing in the result: the sharded epoch from fit's initial state is fit's first epoch
    (the plain program, compiled by fit and shared with this file's other runs)."""
    plain = run(ds, tmp_path, epochs=1)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("batch",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "batch"))
    # fit's initial state (its model, optimizer and seed) and its compile options.
    cfg = TrainConfig(**SETTINGS).resolved()
    model = LeNet(cfg.variant, conv_impl=cfg.conv_impl, layout=cfg.layout)
    state = TrainState.create(model, make_optimizer("adam"), seed=cfg.seed)
    x, y = data.to_device(ds.train)
    sharded_epoch = train_epoch.lower(
        state, x, y, batch_size=BATCH, unroll=cfg.scan_unroll, batch_sharding=sharding
    ).compile(compiler_options())
    sharded, m = sharded_epoch(state, x, y)
    chex.assert_trees_all_close(plain.state.params, sharded.params, rtol=1e-6, atol=1e-7)
    assert int(sharded.epoch) == 1 and int(sharded.step) == STEPS_PER_EPOCH
    assert math.isclose(plain.history[0]["train_loss"], float(m["loss"]), rel_tol=1e-6)


def test_layouts_train_alike(ds, tmp_path):
    """The CHWN activations (CPU's default) and NHWC give the same run within float32
    rounding: same params, same losses (Adam magnifies rounding in near-zero gradients to a
    few 1e-5 of a parameter after 8 steps; a wrong layout would be off by whole steps)."""
    chwn = run(ds, tmp_path / "chwn", layout="CHWN", epochs=1)
    nhwc = run(ds, tmp_path / "nhwc", layout="NHWC", epochs=1)
    for a, b in zip(jax.tree.leaves(chwn.state.params), jax.tree.leaves(nhwc.state.params),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    assert chwn.history[-1]["train_loss"] == pytest.approx(nhwc.history[-1]["train_loss"], 1e-4)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU default")
def test_training_runs_chwn_on_cpu():
    assert dispatch.default_layout() == "CHWN" and dispatch.default_layout("gpu") == "NHWC"


@pytest.mark.parametrize(
    "overrides, error, message",
    [
        (dict(variant="lenet5"), ValueError, "variant must be one of .*'lenet5'"),
        (dict(epochs=0), ValueError, "epochs must be a positive int"),
        (dict(epochs=2.5), TypeError, "epochs must be an int"),
        (dict(batch_size=0), ValueError, "batch_size must be a positive int"),
        (dict(batch_size=-64), ValueError, "batch_size must be a positive int"),
        (dict(learning_rate=0.0), ValueError, "learning_rate must be a finite number > 0"),
        (dict(learning_rate=-0.1), ValueError, "learning_rate must be a finite number > 0"),
        (dict(learning_rate=float("nan")), ValueError, "learning_rate must be a finite"),
        (dict(optimizer="adamax9"), ValueError, "optimizer must be one of .*'adamax9'"),
        (dict(optimizer=optax.sgd(0.1), learning_rate=0.1), ValueError, "carries its own"),
        (dict(train_subset=0), ValueError, "train_subset must be a positive int"),
        (dict(conv_impl="fft"), ValueError, "conv_impl must be None or one of .*'fft'"),
        (dict(layout="NCHW"), ValueError, "layout must be one of .*'NCHW'"),
        (dict(seed=-1), ValueError, "seed must be in 0..2\\*\\*31-1"),
        (dict(batch_size=N_TRAIN + 1), ValueError, "batch_size 513 is larger than the 512"),
    ],
)
def test_bad_settings_fail_before_training(ds, tmp_path, overrides, error, message):
    with pytest.raises(error, match=message):
        run(ds, tmp_path / "out", **overrides)
    assert not (tmp_path / "out" / METRICS_FILE).exists()


def test_unwritable_out_dir_fails_before_training(ds, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="out_dir .* is not a writable directory"):
        run(ds, blocker / "run")


def test_existing_run_needs_resume_and_the_same_model(ds, tmp_path):
    run(ds, tmp_path, epochs=1)
    with pytest.raises(ValueError, match="already holds checkpoints .* resume"):
        run(ds, tmp_path, epochs=2)
    with pytest.raises(CheckpointError, match="variant 'modern', this run's is 'classic'"):
        run(ds, tmp_path, epochs=2, resume=True, variant="classic")


def test_defaults():
    cfg = TrainConfig().resolved()
    assert (cfg.variant, cfg.epochs, cfg.batch_size, cfg.optimizer) == ("modern", 10, 256, "adam")
    assert cfg.learning_rate == 3e-3 and cfg.lr_schedule == "cosine"
    assert cfg.max_checkpoints == 3  # the newest 3 kept (test_checkpoint_every_... prunes)
    assert str(cfg.out_dir) == "runs/lenet-modern"
    book = TrainConfig(variant="classic", optimizer="sgd").resolved()
    assert book.learning_rate == 0.9 and book.lr_schedule == "constant"
    assert str(book.out_dir) == "runs/lenet-classic"
    with pytest.raises(ValueError, match="lr_schedule must be one of"):
        TrainConfig(lr_schedule="step").resolved()
    # layout=None has one meaning, the backend's layout, filled in once and recorded
    assert cfg.layout == dispatch.default_layout() and cfg.meta()["layout"] == cfg.layout
    assert TrainConfig(layout="NHWC").resolved().layout == "NHWC"
    assert cfg.resolved() == cfg  # resolving twice changes nothing
    assert json.loads(json.dumps(book.meta()))["optimizer"] == "sgd"


def test_checkpoint_every_and_max_checkpoints(ds, tmp_path):
    run(ds, tmp_path, epochs=5, checkpoint_every=2, max_checkpoints=2)
    assert steps(tmp_path) == ["4", "5"]  # saved 2, 4 and the last; the newest 2 kept


def test_tensorboard_gets_every_number_each_epoch(ds, tmp_path, monkeypatch):
    """The logging itself, with a stand-in writer (tensorboardX's method names)."""
    calls = []

    class Writer:
        def __init__(self, log_dir):
            calls.append(("open", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setattr(metrics, "_summary_writer_class", lambda: Writer)
    history = run(ds, tmp_path, epochs=2, tensorboard=True).history
    assert calls[0] == ("open", str(tmp_path / "tensorboard")) and calls[-1] == ("close",)
    for record in history:
        for key in ("train_loss", "train_acc", "test_acc", "examples_per_second"):
            assert (key, record[key], record["epoch"]) in calls
    assert ("compile_seconds", history[0]["compile_seconds"], 1) in calls


@pytest.mark.skipif(not tensorboard_available(), reason="needs tensorboardX or TensorFlow")
def test_tensorboard_events(ds, tmp_path):
    run(ds, tmp_path, epochs=1, tensorboard=True)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.skipif(tensorboard_available(), reason="a TensorBoard writer is installed")
def test_tensorboard_without_a_writer_is_a_clear_error(ds, tmp_path):
    with pytest.raises(ValueError, match="tensorboardX"):
        run(ds, tmp_path, tensorboard=True)


# --------------------------------------------------------------------------- failed starts


class _Interrupted:
    """Stands in for the jitted ``evaluate``: compiling it is interrupted (Ctrl-C during
    start-up, after the out_dir, the checkpoint folder and metrics.jsonl exist)."""

    @staticmethod
    def lower(*args, **kwargs):
        raise KeyboardInterrupt


def test_interrupt_during_start_up_leaves_nothing(ds, tmp_path, monkeypatch):
    monkeypatch.setattr(train_lib, "evaluate", _Interrupted)
    out = tmp_path / "new" / "run"
    with pytest.raises(KeyboardInterrupt):
        run(ds, out)
    assert list(tmp_path.iterdir()) == []  # "new" was created by the run: gone too


def test_failed_start_keeps_what_was_there(ds, tmp_path, monkeypatch):
    """A pre-existing out_dir and its files stay; only what the run added goes."""
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "old").mkdir()
    monkeypatch.setattr(train_lib, "evaluate", _Interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(ds, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "old"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_interrupted_resume_keeps_the_run(ds, tmp_path, monkeypatch):
    run(ds, tmp_path, epochs=1)
    before = read_metrics(tmp_path / METRICS_FILE)
    monkeypatch.setattr(train_lib, "evaluate", _Interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(ds, tmp_path, epochs=2, resume=True)
    assert steps(tmp_path) == ["1"] and read_metrics(tmp_path / METRICS_FILE) == before


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(train_subset=N_TRAIN + 1), r"train_subset must be in 1\.\.512, got 513"),
        (dict(test_subset=N_TEST + 1), r"test_subset must be in 1\.\.256, got 257"),
        (dict(batch_size=N_TRAIN + 1), "batch_size 513 is larger than the 512"),
    ],
)
def test_bad_subset_fails_before_the_disk_is_touched(ds, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        run(ds, tmp_path / "run", **overrides)
    assert list(tmp_path.iterdir()) == []


def test_data_error_leaves_no_out_dir(tmp_path):
    with pytest.raises(data.DataNotFoundError, match="data_dir"):
        fit(TrainConfig(out_dir=tmp_path / "run", data_dir=tmp_path / "no-data", **SETTINGS))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the figure


def test_curves_figure_has_two_labelled_panels_and_the_test_loss():
    records = [
        {"epoch": e, "train_loss": 2.0 / e, "test_loss": 2.2 / e, "train_acc": 0.5 + e / 10,
         "test_acc": 0.45 + e / 10}
        for e in (1, 2, 3)
    ]  # fmt: skip
    fig = metrics.curves_figure(records, title="LeNet (modern)")
    ax_loss, ax_acc = fig.axes
    assert fig._suptitle.get_text() == "LeNet (modern)"
    assert ax_loss.get_ylabel() == "cross-entropy loss" and ax_acc.get_ylabel() == "accuracy"
    assert ax_loss.get_xlabel() == ax_acc.get_xlabel() == "epoch"
    lines = {(ax is ax_loss, line.get_label()): line for ax in fig.axes for line in ax.lines}
    np.testing.assert_allclose(lines[True, "test"].get_ydata(), [2.2, 1.1, 2.2 / 3])
    np.testing.assert_allclose(lines[True, "train"].get_ydata(), [2.0, 1.0, 2.0 / 3])
    np.testing.assert_allclose(lines[False, "test"].get_ydata(), [0.55, 0.65, 0.75])
    assert ax_acc.get_ylim() == (0.0, 1.0)
