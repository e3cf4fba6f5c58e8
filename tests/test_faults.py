"""Training and data under faults: no bad input gets through, no training work is lost.

``jaxconv train`` runs as a child process on a small real subset (1024 / 256 examples, batch
256, 3 epochs, a checkpoint every epoch) and is hit from outside, with no hook in jaxconv:

* SIGKILL half-way through epoch 2, then ``--resume``;
* SIGKILL while orbax writes epoch 2's checkpoint (its ``2.orbax-checkpoint-tmp*`` folder is
  watched and the process killed the moment it appears), then ``--resume``;
* the newest checkpoints truncated on disk, then ``--resume``;
* the disk filled up during epoch 3, then space freed and ``--resume``;

and each resumed run must end with the state of the uninterrupted run, bit for bit (CPU):
params, optimizer state, RNG key, epoch and step, and the same per-epoch metrics. Then
bad places to write (a path under a regular file, a read-only filesystem, a 64 KiB
filesystem) must fail with a clear error before training, and damaged checkpoints and data
files must be refused with a clear error; those command lines stop before any training, so
they run through ``jaxconv.cli.main`` in this process (no child to start) while the resumes
train.

The training runs are started concurrently, in two phases, to keep the file short on 2 cores.
The first phase's four runs are child processes sharing one persistent compilation cache: the
uninterrupted run compiles the programs, two of the others load them (a cache-loaded program
is the one compiled, bit for bit), and the run killed mid-epoch compiles its own, so that a
resume from a checkpoint written by an independently compiled process is still checked. The
second phase's four resumes run one after another in one more child process (this file as
its script: ``python tests/test_faults.py <plan.json>``), which imports JAX and compiles a
restored state's programs once for all four; the first resume is that fresh process's first
run. Mounting needs root; those tests skip cleanly without it.
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import io
import json
import logging
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import TextIO

import pytest
from _fault_helpers import (
    REAL_DATA,
    Run,
    assert_trees_bit_equal,
    child_env,
    committed_epochs,
    flip_byte,
    in_threads,
    kill_mid_epoch,
    kill_mid_save,
    largest_file,
    metrics_records,
    mount_tmpfs,
    poll,
    restore_raw,
    temporary_epochs,
    train_args,
    truncate,
    unmount,
)

from jaxconv import data
from jaxconv.checkpoint import CheckpointError

pytestmark = [
    pytest.mark.skipif(
        not (REAL_DATA / "train-images-idx3-ubyte.gz").is_file(),
        reason=f"Fashion-MNIST IDX files absent: {REAL_DATA}",
    ),
    # A failed orbax read leaves an asyncio callback behind ("Event loop is closed").
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
    # Under ``pytest -n N --dist loadgroup`` every test here runs on one worker: the runs of
    # the module-scoped phases happen once, not once per worker that gets one of its tests.
    pytest.mark.xdist_group("test_faults"),
]
EPOCHS = 3
METRICS = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc")


def cli_into(out: TextIO, args: list[str]) -> int:
    """``jaxconv.cli.main(args)`` here, printing into ``out``: its exit status, 1 for an
    uncaught exception, printed as its traceback (as the CLI's own process would)."""
    from jaxconv.cli import main

    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        try:
            return main(args)
        except Exception:  # noqa: BLE001 - reported as the CLI's own process would
            traceback.print_exc()
            return 1


def run_in_process(run: Run) -> Run:
    """``jaxconv.cli.main(run.args)`` here, for command lines that stop before training:
    its exit status in ``run.returncode``, what it printed in ``run.log``."""
    out = io.StringIO()
    run.returncode = cli_into(out, run.args)
    run.log.parent.mkdir(parents=True, exist_ok=True)
    run.log.write_text(out.getvalue())
    return run


def resume_in_turn(plan: Path) -> None:
    """The child process's job: each ``(log, args)`` of ``plan`` through ``jaxconv.cli.main``,
    one after another, its output streamed into its log (:func:`cli_into`); the exit
    statuses into ``<plan>.codes.json``."""
    codes = []
    for log, args in json.loads(plan.read_text()):
        with open(log, "w") as out:
            codes.append(cli_into(out, args))
    plan.with_suffix(".codes.json").write_text(json.dumps(codes))


def start_in_turn(runs: list[Run], plan: Path, cache: Path) -> subprocess.Popen:
    """Start the child that runs ``runs``'s command lines in turn (:func:`resume_in_turn`)."""
    plan.write_text(json.dumps([[str(run.log), run.args] for run in runs]))
    with open(plan.with_suffix(".log"), "wb") as out:
        return subprocess.Popen([sys.executable, __file__, str(plan)], stdout=out,
                                stderr=subprocess.STDOUT, env=child_env(cache))  # fmt: skip


def finish_in_turn(child: subprocess.Popen, runs: list[Run], plan: Path) -> None:
    """Wait for the child; each run's exit status from it (None where it never got there)."""
    try:
        child.wait(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    codes_file = plan.with_suffix(".codes.json")
    codes = json.loads(codes_file.read_text()) if codes_file.exists() else []
    for i, run in enumerate(runs):
        run.returncode = codes[i] if i < len(codes) else None
        if not run.log.exists():
            run.log.write_text(plan.with_suffix(".log").read_text(errors="replace"))


# --------------------------------------------------------------------------- the runs


#: fill_disk stops here even if no ENOSPC came: the 64 MiB tmpfs is full long before, and if
#: that mount is gone (a run torn down mid-test) the filler must not fill the real disk.
FILL_LIMIT = 256 << 20


def fill_disk(directory: Path) -> int:
    """Write zeros into ``directory/filler`` until the filesystem is full (at most
    :data:`FILL_LIMIT` bytes); bytes written."""
    written, block = 0, b"\0" * (1 << 20)
    with open(directory / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            chunk = block[:size]
            while written < FILL_LIMIT:
                try:
                    written += f.write(chunk)
                except OSError:  # ENOSPC
                    break
    return written


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    mounts: list[Path] = []
    yield root, mounts
    for m in mounts:
        unmount(m)


def compile_cache(work) -> Path:
    """The children's shared persistent compilation cache (see ``child_env``)."""
    root, _ = work
    return root / "xla-cache"


def has_trained(run: Run) -> bool:
    """Whether ``run`` has written an epoch's record (its programs are compiled by then, and
    in the cache); False if it ended first."""
    return bool(poll(lambda: metrics_records(run.out_dir), run))


@pytest.fixture(scope="module")
def phase1(work):
    """Four runs: uninterrupted; killed mid-epoch 2; killed mid-save of epoch 2; disk filled
    once epoch 2 is saved. The first two start at once and compile their programs (each its
    own); the other two start once the uninterrupted run has trained an epoch, and load its."""
    root, mounts = work
    cache = compile_cache(work)

    def new_run(name: str, out_dir: Path) -> Run:
        return Run(name, out_dir, train_args(out_dir, "--quiet"), root / f"{name}.log",
                   compile_cache=None if name.startswith("kill_epoch") else cache)  # fmt: skip

    runs = {name: new_run(name, root / name) for name in ("whole", "kill_epoch", "kill_save")}
    disk = root / "disk"
    if mount_tmpfs(disk, ["size=64m"]):
        mounts.append(disk)
        runs["disk_full"] = new_run("disk_full", disk / "run")
    runs["whole"].start()
    runs["kill_epoch"].start()

    def fill_after_epoch_2() -> None:
        run = runs["disk_full"]
        if poll(lambda: 2 in committed_epochs(run.checkpoints), run):
            run.events["filled_bytes"] = fill_disk(disk)
            run.events["filled_at_records"] = len(metrics_records(run.out_dir))

    def the_cached_runs() -> None:
        has_trained(runs["whole"])
        later = [lambda: kill_mid_save(runs["kill_save"], 2)]
        if "disk_full" in runs:
            later.append(fill_after_epoch_2)
        for name in ("kill_save", "disk_full"):
            if name in runs:
                runs[name].start()
        in_threads(*later)

    in_threads(lambda: kill_mid_epoch(runs["kill_epoch"], 2), the_cached_runs)
    for run in runs.values():
        if run.returncode is None:
            run.wait()
    # Timing from outside can miss (the machine's load changes the epoch's length, the save
    # window is short): the evidence is checked, and a miss is retried with a fresh run.
    landed = {
        "kill_epoch": lambda seen: seen.get("committed") == [1] and seen.get("records") == 1,
        "kill_save": lambda seen: (
            2 in seen.get("temporary", []) and 2 not in seen.get("committed", [])
        ),
    }
    for name, ok in landed.items():
        for attempt in range(2):
            if ok(runs[name].events.get("after_kill", {})):
                break
            retry = f"{name}_retry{attempt}"
            runs[name] = new_run(retry, root / retry).start()
            if name == "kill_epoch":
                kill_mid_epoch(runs[name], 2, fraction=0.2)
            else:
                kill_mid_save(runs[name], 2)
            if runs[name].returncode is None:
                runs[name].wait()
    return runs


@pytest.fixture(scope="module")
def phase2(work, phase1):
    """The resumes (one child process, one after another) and, meanwhile, the command lines
    that must fail before training (here, one after another)."""
    root, mounts = work
    cache = compile_cache(work)
    runs: dict[str, Run] = {}
    for name in ("kill_epoch", "kill_save"):
        killed = phase1[name]
        runs[name] = Run(f"{name}_resume", killed.out_dir, train_args(killed.out_dir, "--resume"),
                         root / f"{name}_resume.log", compile_cache=cache)  # fmt: skip

    # Truncated checkpoints: a copy of the finished run without epoch 3, epoch 2's data cut.
    trunc = root / "truncated"
    shutil.copytree(phase1["whole"].out_dir, trunc)
    shutil.rmtree(trunc / "checkpoints" / "3")
    cut = largest_file(trunc / "checkpoints" / "2")
    truncate(cut, cut.stat().st_size // 2)
    runs["truncated"] = Run("truncated_resume", trunc, train_args(trunc, "--resume"),
                            root / "truncated_resume.log", compile_cache=cache)  # fmt: skip

    if "disk_full" in phase1:
        (root / "disk" / "filler").unlink()  # space is back
        out = phase1["disk_full"].out_dir
        runs["disk_full"] = Run("disk_full_resume", out, train_args(out, "--resume"),
                                root / "disk_full_resume.log", compile_cache=cache)  # fmt: skip

    # Places that cannot hold a run.
    blocker = root / "a-regular-file"
    blocker.write_text("not a directory\n")
    runs["under_file"] = Run("under_file", blocker / "run", train_args(blocker / "run"),
                             root / "under_file.log")  # fmt: skip
    if mount_tmpfs(root / "ro", ["ro", "size=1m"]):
        mounts.append(root / "ro")
        runs["read_only"] = Run("read_only", root / "ro" / "run", train_args(root / "ro" / "run"),
                                root / "read_only.log")  # fmt: skip
    if mount_tmpfs(root / "tiny", ["size=64k"]):
        mounts.append(root / "tiny")
        runs["tiny_disk"] = Run(
            "tiny_disk",
            root / "tiny" / "run",
            train_args(root / "tiny" / "run"),
            root / "tiny_disk.log",
        )
    # A regular file where the checkpoint folder goes.
    clash = root / "clash"
    clash.mkdir()
    (clash / "checkpoints").write_text("not a directory\n")
    runs["checkpoints_is_file"] = Run("checkpoints_is_file", clash, train_args(clash),
                                      root / "checkpoints_is_file.log")  # fmt: skip
    # Damaged data: one flipped byte in the middle of the train images.
    bad_data = root / "bad-data"
    bad_data.mkdir()
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (bad_data / f"{name}.gz").symlink_to(REAL_DATA / f"{name}.gz")
    images = bytearray(gzip.decompress((REAL_DATA / "train-images-idx3-ubyte.gz").read_bytes()))
    images[len(images) // 2] ^= 0x01
    (bad_data / "train-images-idx3-ubyte").write_bytes(bytes(images))
    args = train_args(root / "bad_data_run")
    args[args.index("--data-dir") + 1] = str(bad_data)
    runs["bad_data"] = Run("bad_data", root / "bad_data_run", args, root / "bad_data.log")

    training = [name for name in ("kill_epoch", "kill_save", "truncated", "disk_full")
                if name in runs]  # fmt: skip
    plan = root / "resumes.json"
    child = start_in_turn([runs[name] for name in training], plan, cache)
    for name, run in runs.items():
        if name not in training:
            run_in_process(run)
    finish_in_turn(child, [runs[name] for name in training], plan)
    return runs


def final_state(run: Run):
    state, meta, epoch = restore_raw(run.checkpoints, EPOCHS)
    assert epoch == EPOCHS
    return state


def metric_rows(run: Run) -> list[tuple]:
    return [tuple(r[k] for k in METRICS) for r in metrics_records(run.out_dir)]


def assert_same_as_uninterrupted(phase1, resumed: Run) -> None:
    assert resumed.returncode == 0, resumed.output[-2000:]
    whole = phase1["whole"]
    leaves = assert_trees_bit_equal(final_state(resumed), final_state(whole))
    assert leaves >= 10  # params, two Adam moments, count, key, epoch, step
    assert metric_rows(resumed) == metric_rows(whole)  # every epoch's loss and accuracy
    assert committed_epochs(resumed.checkpoints)[-1] == EPOCHS
    assert temporary_epochs(resumed.checkpoints) == []  # the killed save's folder is gone


# --------------------------------------------------------------------------- kill and resume


def test_uninterrupted_run(phase1):
    whole = phase1["whole"]
    assert whole.returncode == 0, whole.output[-2000:]
    assert [r["epoch"] for r in metrics_records(whole.out_dir)] == [1, 2, 3]
    assert committed_epochs(whole.checkpoints) == [1, 2, 3]


def test_sigkill_mid_epoch_then_resume_is_bit_exact(phase1, phase2):
    killed = phase1["kill_epoch"]
    assert "missed" not in killed.events, killed.output[-2000:]
    seen = killed.events["after_kill"]
    # Killed after epoch 1 was saved and before epoch 2 finished: epoch 2's work was lost.
    assert seen["committed"] == [1] and seen["records"] == 1, seen
    assert killed.returncode == -9
    resumed = phase2["kill_epoch"]
    assert "resumed from" in resumed.output and "at epoch 1" in resumed.output
    assert_same_as_uninterrupted(phase1, resumed)


def test_sigkill_mid_checkpoint_write_then_resume_is_bit_exact(phase1, phase2):
    killed = phase1["kill_save"]
    assert "missed" not in killed.events, killed.output[-2000:]
    seen = killed.events["after_kill"]
    # Killed while epoch 2's checkpoint was half-written: only its temporary folder exists.
    assert seen["temporary"] == [2] and 2 not in seen["committed"], seen
    resumed = phase2["kill_save"]
    assert "at epoch 1" in resumed.output  # the half-written epoch 2 is never used
    assert_same_as_uninterrupted(phase1, resumed)


def test_truncated_checkpoint_is_detected_and_the_previous_one_used(phase1, phase2):
    resumed = phase2["truncated"]
    assert "checkpoint of epoch 2" in resumed.output and "unreadable" in resumed.output
    assert "falling back to epoch 1" in resumed.output and "at epoch 1" in resumed.output
    assert_same_as_uninterrupted(phase1, resumed)
    quarantined = [p.name for p in resumed.checkpoints.iterdir() if ".unreadable-" in p.name]
    assert len(quarantined) == 1 and quarantined[0].startswith("2.unreadable-")


def test_disk_full_mid_run_keeps_the_saved_epochs_and_resumes_bit_exact(phase1, phase2):
    if "disk_full" not in phase1:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    failed = phase1["disk_full"]
    assert failed.events.get("filled_bytes", 0) > 0, failed.output[-2000:]
    assert failed.returncode == 2, failed.output[-3000:]
    # Orbax's threads may log their tracebacks after this line: it is not always the last.
    assert "No space left on device" in error_line(failed)
    resumed = phase2["disk_full"]
    assert "at epoch 2" in resumed.output, resumed.output[-2000:]
    assert_same_as_uninterrupted(phase1, resumed)


# --------------------------------------------------------------------------- bad places


def error_line(run: Run) -> str:
    """The CLI's one ``jaxconv: error: ...`` line (exactly one is printed)."""
    lines = [line for line in run.output.splitlines() if line.startswith("jaxconv: error:")]
    assert len(lines) == 1, run.output[-3000:]
    return lines[0]


def assert_fails_before_training(run: Run, *patterns: str) -> None:
    assert run.returncode == 2, run.output[-3000:]
    line = error_line(run)
    for pattern in patterns:
        assert pattern in line, line
    assert not metrics_records(run.out_dir)  # no epoch was trained
    assert "Traceback" not in run.output, run.output[-3000:]


def test_out_dir_under_a_regular_file_fails_before_training(phase2):
    assert_fails_before_training(phase2["under_file"], "is not a writable directory")


def test_read_only_filesystem_fails_before_training(phase2):
    if "read_only" not in phase2:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    assert_fails_before_training(phase2["read_only"], "is not a writable directory")


def test_checkpoint_folder_that_is_a_file_fails_before_training(phase2):
    assert_fails_before_training(phase2["checkpoints_is_file"], "checkpoints")


def test_tiny_disk_fails_before_training(phase2):
    """A 64 KiB filesystem cannot hold one checkpoint (about 0.7 MB): that is known before
    the first epoch, so the run should stop then, with one clear line."""
    if "tiny_disk" not in phase2:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    run = phase2["tiny_disk"]
    assert run.returncode == 2, run.output[-3000:]
    assert not metrics_records(run.out_dir), "an epoch was trained on a disk that cannot hold it"
    assert_fails_before_training(run, "space")


def test_corrupted_train_images_refused_by_the_cli(phase2):
    run = phase2["bad_data"]
    assert_fails_before_training(run, "train-images-idx3-ubyte", "SHA-256")


# --------------------------------------------------------------------------- damaged checkpoints


@pytest.fixture
def finished_copy(phase1, tmp_path):
    """A copy of the uninterrupted run's checkpoints (epochs 1, 2, 3)."""
    dst = tmp_path / "checkpoints"
    shutil.copytree(phase1["whole"].checkpoints, dst)
    return dst


@pytest.mark.parametrize("damage", ["truncate", "delete", "zero", "manifest"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous(finished_copy, damage, caplog):
    newest = finished_copy / "3"
    target = largest_file(newest)
    if damage == "truncate":
        truncate(target, target.stat().st_size // 3)
    elif damage == "delete":
        target.unlink()
    elif damage == "zero":
        target.write_bytes(b"\0" * target.stat().st_size)
    else:
        (newest / "state" / "manifest.ocdbt").unlink()
    want, _, _ = restore_raw(finished_copy, 2)
    with caplog.at_level(logging.WARNING, logger="jaxconv.checkpoint"):
        got, _, epoch = restore_raw(finished_copy)
    assert epoch == 2 and "falling back to epoch 2" in caplog.text
    assert_trees_bit_equal(got, want)


def test_flipped_byte_in_checkpoint_data_is_detected(finished_copy, caplog):
    """One flipped bit inside the newest checkpoint's array data must not load as a valid
    state: it should be reported unreadable and the previous epoch used."""
    newest = finished_copy / "3"
    intact, _, _ = restore_raw(finished_copy, 3)
    flip_byte(largest_file(newest), largest_file(newest).stat().st_size // 2)
    with caplog.at_level(logging.WARNING, logger="jaxconv.checkpoint"):
        try:
            got, _, epoch = restore_raw(finished_copy)
        except CheckpointError:
            return  # detected, nothing older asked for: acceptable
    if epoch == 3:
        try:
            assert_trees_bit_equal(got, intact)
        except AssertionError:
            pytest.fail("a checkpoint with a flipped byte restored silently with changed values")
    assert epoch == 2 and "epoch 3" in caplog.text


def test_unreadable_checkpoints_give_a_short_clear_error(finished_copy):
    """Each unreadable epoch is reported in one line, not with TensorStore's full spec."""
    for epoch in (1, 2, 3):
        target = largest_file(finished_copy / str(epoch))
        truncate(target, 100)
    with pytest.raises(CheckpointError) as err:
        restore_raw(finished_copy)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("no readable checkpoint in")
    assert [line.split(":")[0].strip() for line in lines[1:4]] == ["epoch 3", "epoch 2", "epoch 1"]
    assert len(lines) == 4 and max(map(len, lines)) <= 400, (len(lines), max(map(len, lines)))


# --------------------------------------------------------------------------- damaged data files


@pytest.fixture
def data_copy(tmp_path):
    """A folder of links to the four real files; a test replaces one with a damaged copy."""
    for name in data.FASHION_MNIST_SHA256:
        (tmp_path / f"{name}.gz").symlink_to(REAL_DATA / f"{name}.gz")
    return tmp_path


def replace(folder: Path, name: str, raw: bytes, *, gz: bool) -> Path:
    (folder / f"{name}.gz").unlink()
    path = folder / (f"{name}.gz" if gz else name)
    path.write_bytes(raw)
    return path


def test_one_flipped_byte_in_the_real_train_images_fails_the_checksum(data_copy):
    raw = bytearray(gzip.decompress((REAL_DATA / "train-images-idx3-ubyte.gz").read_bytes()))
    raw[len(raw) // 2] ^= 0x01  # a pixel, header and size intact
    replace(data_copy, "train-images-idx3-ubyte", bytes(raw), gz=False)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte: SHA-256 [0-9a-f]{64}"):
        data.load_fashion_mnist(data_copy)


@pytest.mark.parametrize("field", ["crc32", "isize"])
def test_gzip_trailer_damage_is_a_clear_error(data_copy, field):
    """A gzip whose deflate stream is intact but whose CRC-32 or length trailer is wrong."""
    raw = bytearray((REAL_DATA / "t10k-labels-idx1-ubyte.gz").read_bytes())
    start = len(raw) - (8 if field == "crc32" else 4)
    (value,) = struct.unpack("<I", raw[start : start + 4])
    raw[start : start + 4] = struct.pack("<I", value ^ 1)
    replace(data_copy, "t10k-labels-idx1-ubyte", bytes(raw), gz=True)
    with pytest.raises(data.DataError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt or truncated"):
        data.load_fashion_mnist(data_copy)


def test_truncated_real_train_images_gzip_is_a_clear_error(data_copy):
    raw = (REAL_DATA / "train-images-idx3-ubyte.gz").read_bytes()
    replace(data_copy, "train-images-idx3-ubyte", raw[: len(raw) * 3 // 5], gz=True)
    with pytest.raises(data.DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated"):
        data.load_fashion_mnist(data_copy)


def test_real_train_and_test_labels_swapped_is_named(data_copy):
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (data_copy / f"{name}.gz").unlink()
    (data_copy / "train-labels-idx1-ubyte.gz").symlink_to(REAL_DATA / "t10k-labels-idx1-ubyte.gz")
    (data_copy / "t10k-labels-idx1-ubyte.gz").symlink_to(REAL_DATA / "train-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError, match=r"train-labels-idx1-ubyte\.gz: SHA-256") as err:
        data.load_fashion_mnist(data_copy)
    assert "t10k-labels-idx1-ubyte" in str(err.value)


# --------------------------------------------------------------------------- random kills (opt-in)

TRIALS = int(os.environ.get("JAXCONV_FAULT_TRIALS", "0"))


@pytest.mark.skipif(TRIALS == 0, reason="set JAXCONV_FAULT_TRIALS=N for N random-kill trials")
def test_random_sigkills_lose_no_saved_work(phase1, work):
    """N trials; each SIGKILLs ``jaxconv train --resume`` 1-3 times at random moments, then
    lets it finish. A moment is drawn as: a random delay after start (start-up, data loading,
    compiling, first epoch), a random fraction into a random later epoch, or a random instant
    (0-100 ms) into a random epoch's checkpoint write. Each resume must start from the newest
    checkpoint committed before the kill, and the end state must be the uninterrupted run's,
    bit for bit. With ``JAXCONV_FAULT_REPORT=<file>`` the counts are written there as JSON."""
    root, _ = work
    whole = phase1["whole"]
    rng = random.Random(0)
    stats: collections.Counter[str] = collections.Counter()

    def check_start(run: Run, expected: int) -> None:
        found = re.search(r"resumed from .* at epoch (\d+)", run.output)
        if found:  # absent when the kill came before the checkpoints were opened
            assert int(found.group(1)) == expected, run.output[-2000:]
            stats["resumes seen starting from the newest saved epoch"] += 1
        elif "starting from scratch" in run.output:
            assert expected == 0, run.output[-2000:]
            stats["resumes seen starting from the newest saved epoch"] += 1

    for trial in range(TRIALS):
        out, expected = root / f"random{trial}", 0
        for k in range(rng.randint(1, 3)):
            if expected == EPOCHS:
                break
            run = Run(f"random{trial}.{k}", out, train_args(out, "--resume"),
                      root / f"random{trial}.{k}.log").start()  # fmt: skip
            how = rng.choice(["start-up", "epoch", "save"])
            if how == "epoch" and expected + 2 <= EPOCHS:
                kill_mid_epoch(run, rng.randint(expected + 2, EPOCHS), rng.uniform(0.05, 0.95))
            elif how == "save":
                kill_mid_save(run, rng.randint(expected + 1, EPOCHS), rng.uniform(0, 0.1))
            else:
                how = "start-up"
                time.sleep(rng.uniform(0.2, 8.0))
                if run.proc.poll() is None:
                    run.kill()
            if run.returncode is None:
                run.wait()
            check_start(run, expected)
            if run.returncode != -9:
                assert run.returncode == 0, run.output[-2000:]
                stats["runs that finished before their kill"] += 1
                expected = EPOCHS
                continue
            saved = committed_epochs(run.checkpoints)
            stats["kills"] += 1
            stats[f"kills aimed at: {how}"] += 1
            stats["kills with a checkpoint write in progress"] += bool(
                temporary_epochs(run.checkpoints)
            )
            stats["epochs trained but not yet committed when killed"] += max(
                0, len(metrics_records(out)) - (saved[-1] if saved else 0)
            )
            expected = saved[-1] if saved else 0
        final = Run(f"random{trial}.final", out, train_args(out, "--resume"),
                    root / f"random{trial}.final.log").start()  # fmt: skip
        final.wait()
        assert final.returncode == 0, final.output[-2000:]
        check_start(final, expected)
        assert_trees_bit_equal(final_state(final), final_state(whole))
        assert metric_rows(final) == metric_rows(whole)
        assert temporary_epochs(final.checkpoints) == []
        stats["trials ending bit-identical to the uninterrupted run"] += 1
    report = os.environ.get("JAXCONV_FAULT_REPORT")
    if report:
        Path(report).write_text(json.dumps({"trials": TRIALS, **stats}, indent=1))


if __name__ == "__main__":  # the resumes' child process: python tests/test_faults.py <plan.json>
    resume_in_turn(Path(sys.argv[1]))
