"""Checkpoints written by an earlier release still resume.

``data/lenet-sgd-b39160d`` is a LeNet run (classic variant, SGD, 256 training and 128 test
examples, batch 128, seed 0, one epoch) saved by the release whose ``TrainState`` had no
``batch_stats`` field. It was made with::

  jaxconv train --variant classic --optimizer sgd --epochs 1 --train-subset 256 --test-subset 128 \\
      --batch-size 128 --out-dir <dir> --quiet
"""

from __future__ import annotations

import shutil
from pathlib import Path

import chex
from _runs import dataset_fixture, fit_quietly

from jaxconv.checkpoint import CHECKPOINT_DIR, Checkpoints

OLD_RUN = Path(__file__).parent / "data" / "lenet-sgd-b39160d"
N_TRAIN, N_TEST, BATCH = 256, 128, 128
ds = dataset_fixture(N_TRAIN, N_TEST)


def resume(ds, out_dir: Path, epochs: int):
    return fit_quietly(
        ds, out_dir, variant="classic", optimizer="sgd", epochs=epochs, batch_size=BATCH,
        resume=True,
    )  # fmt: skip


def copy_old_run(tmp_path: Path, name: str) -> Path:
    out_dir = tmp_path / name
    shutil.copytree(OLD_RUN, out_dir)
    return out_dir


def test_old_checkpoint_has_no_batch_stats():
    # What makes the fixture old: the state it holds has no batch_stats entry at all.
    with Checkpoints(OLD_RUN / CHECKPOINT_DIR, read_only=True) as ckpts:
        state, meta, epoch = ckpts.restore(None)
    assert epoch == 1 and "batch_stats" not in state and "params" in state
    assert meta["variant"] == "classic" and meta["optimizer"] == "sgd"


def test_old_lenet_checkpoint_resumes_and_continues_exactly(ds, tmp_path):
    # From the old epoch-1 checkpoint straight to epoch 3 ...
    whole = resume(ds, copy_old_run(tmp_path, "whole"), epochs=3)
    assert [r["epoch"] for r in whole.history] == [1, 2, 3]  # epoch 1 from the old log
    assert int(whole.state.epoch) == 3 and int(whole.state.step) == 3 * (N_TRAIN // BATCH)
    assert whole.state.batch_stats == {}
    # ... equals stopping at epoch 2 (a directory then holding an old-format epoch 1 and a
    # new-format epoch 2) and resuming that: bit for bit.
    split_dir = copy_old_run(tmp_path, "split")
    resume(ds, split_dir, epochs=2)
    split = resume(ds, split_dir, epochs=3)
    chex.assert_trees_all_equal(split.state, whole.state)
    assert [r["train_loss"] for r in split.history] == [r["train_loss"] for r in whole.history]
    # The old checkpoint was read, not set aside as unreadable.
    assert sorted(p.name for p in (split_dir / CHECKPOINT_DIR).iterdir()) == ["1", "2", "3"]
