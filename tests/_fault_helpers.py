"""Helpers for tests/test_faults.py: run ``jaxconv train`` as a child process, watch its
files, SIGKILL it at a chosen moment, corrupt files, mount tiny or read-only filesystems.

No hook in jaxconv is used: every fault is injected from outside, by watching the run's
checkpoint directory (orbax writes ``<epoch>.orbax-checkpoint-tmp*`` and renames it to
``<epoch>`` when the save is complete) and its ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REAL_DATA = Path("/usr/share/datasets/fashion-mnist")
TMP_STEP = re.compile(r"^(\d+)\.orbax-checkpoint-tmp")


def child_env(compile_cache: Path | None = None) -> dict[str, str]:
    """The test's environment, on CPU (bit-exact resume is a CPU guarantee). With
    ``compile_cache``, JAX's persistent compilation cache in that folder: a child loads the
    programs an earlier child compiled (the same program: the same bits) instead of spending
    most of its CPU time compiling them again. Every program is kept, however fast it
    compiled; setting a size limit turns on the cache's file lock, so that children running
    at once never read an entry another one is still writing."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    if compile_cache is not None:
        env |= {
            "JAX_COMPILATION_CACHE_DIR": str(compile_cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
            "JAX_COMPILATION_CACHE_MAX_SIZE": str(1 << 30),
        }
    return env


@dataclass
class Run:
    """One ``jaxconv`` child process and where its output goes (``compile_cache``: see
    :func:`child_env`)."""

    name: str
    out_dir: Path
    args: list[str]
    log: Path
    compile_cache: Path | None = None
    proc: subprocess.Popen | None = None
    returncode: int | None = None
    events: dict[str, Any] = field(default_factory=dict)  # what a watcher saw and did

    def start(self) -> Run:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jaxconv.cli", *self.args],
                stdout=out, stderr=subprocess.STDOUT, env=child_env(self.compile_cache),
            )  # fmt: skip
        self.events["started"] = time.monotonic()
        return self

    def wait(self, timeout: float = 400) -> int:
        assert self.proc is not None
        self.returncode = self.proc.wait(timeout=timeout)
        self.events["ended"] = time.monotonic()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, no flush; what is on disk is what survives."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.events["killed"] = time.monotonic()
        self.wait()

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def checkpoints(self) -> Path:
        return self.out_dir / "checkpoints"


def train_args(out_dir: Path, *extra: str, epochs: int = 3) -> list[str]:
    """The small, fast run every fault test uses (1024 / 256 real examples, batch 256: four
    steps an epoch; the kills are timed by the run's own epochs and checkpoint folders)."""
    return ["train", "--train-subset", "1024", "--test-subset", "256", "--batch-size", "256",
            "--epochs", str(epochs), "--data-dir", str(REAL_DATA), "--out-dir", str(out_dir),
            *extra]  # fmt: skip


def committed_epochs(ckpt_dir: Path) -> list[int]:
    """Epochs whose save completed (orbax renamed the temporary folder to ``<epoch>``)."""
    try:
        return sorted(int(p.name) for p in ckpt_dir.iterdir() if p.name.isdigit())
    except FileNotFoundError:
        return []


def temporary_epochs(ckpt_dir: Path) -> list[int]:
    """Epochs whose save is in progress (or was killed): ``<epoch>.orbax-checkpoint-tmp*``."""
    try:
        names = [p.name for p in ckpt_dir.iterdir()]
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for n in names if (m := TMP_STEP.match(n)))


def metrics_records(out_dir: Path) -> list[dict[str, Any]]:
    """The complete lines of ``metrics.jsonl`` (a line being written is ignored)."""
    try:
        text = (out_dir / "metrics.jsonl").read_text()
    except OSError:  # absent, or out_dir is not a directory at all
        return []
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records


def poll(condition: Callable[[], Any], run: Run, timeout: float = 300,
         interval: float = 0.001) -> Any:  # fmt: skip
    """Wait until ``condition()`` is truthy (returned) or ``run`` exits (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if run.proc is not None and run.proc.poll() is not None:
            return None
        time.sleep(interval)
    raise TimeoutError(f"{run.name}: condition not met in {timeout} s")


def kill_mid_epoch(run: Run, epoch: int, fraction: float = 0.5) -> None:
    """SIGKILL ``run`` part-way through ``epoch`` (counted from 1; epoch - 1 must be saved by
    this run): once epoch - 1 is committed, wait ``fraction`` of its measured duration."""
    ok = poll(lambda: (epoch - 1 in committed_epochs(run.checkpoints)
                       and len(metrics_records(run.out_dir)) >= epoch - 1), run)  # fmt: skip
    if not ok:
        run.events["missed"] = "the run ended before the kill"
        return
    seconds = metrics_records(run.out_dir)[epoch - 2]["epoch_seconds"]
    time.sleep(seconds * fraction)
    run.kill()
    run.events["after_kill"] = {"committed": committed_epochs(run.checkpoints),
                                "temporary": temporary_epochs(run.checkpoints),
                                "records": len(metrics_records(run.out_dir))}  # fmt: skip


def kill_mid_save(run: Run, epoch: int, delay: float = 0.0) -> None:
    """SIGKILL ``run`` ``delay`` seconds after the temporary folder of ``epoch``'s checkpoint
    appears (0: at once)."""
    ok = poll(lambda: epoch in temporary_epochs(run.checkpoints), run, interval=0.0005)
    if not ok:
        run.events["missed"] = "the run ended before the kill"
        return
    time.sleep(delay)
    if run.proc is not None and run.proc.poll() is not None:
        run.events["missed"] = "the run ended before the kill"
        return
    run.kill()
    run.events["after_kill"] = {"committed": committed_epochs(run.checkpoints),
                                "temporary": temporary_epochs(run.checkpoints),
                                "records": len(metrics_records(run.out_dir))}  # fmt: skip


def in_threads(*jobs: Callable[[], None]) -> None:
    """Run ``jobs`` concurrently and wait for all; re-raise the first error."""
    errors: list[BaseException] = []

    def wrap(job: Callable[[], None]) -> None:
        try:
            job()
        except BaseException as err:  # reported to the test below
            errors.append(err)

    threads = [threading.Thread(target=wrap, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# --------------------------------------------------------------------------- checkpoints


def restore_raw(ckpt_dir: Path, epoch: int | None = None) -> tuple[Any, dict[str, Any], int]:
    """A checkpoint as plain nested dicts of arrays (read-only; newest readable by default)."""
    from jaxconv.checkpoint import Checkpoints

    with Checkpoints(ckpt_dir, read_only=True) as ckpts:
        return ckpts.restore(None, epoch)


def assert_trees_bit_equal(a: Any, b: Any) -> int:
    """Same structure, and every leaf identical bit for bit; returns the number of leaves."""
    import jax

    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b, f"structures differ: {tree_a} != {tree_b}"
    for i, (x, y) in enumerate(zip(leaves_a, leaves_b, strict=True)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, (i, x.dtype, y.dtype, x.shape, y.shape)
        assert x.tobytes() == y.tobytes(), f"leaf {i} differs"
    return len(leaves_a)


def largest_file(directory: Path) -> Path:
    return max((p for p in directory.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# --------------------------------------------------------------------------- filesystems


def mount_tmpfs(target: Path, options: Sequence[str]) -> bool:
    """``mount -t tmpfs -o <options> tmpfs <target>``; False where mounting is not allowed."""
    target.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs",
                             str(target)], capture_output=True)  # fmt: skip
    return result.returncode == 0


def remount(target: Path, options: Sequence[str]) -> None:
    subprocess.run(["mount", "-o", ",".join(["remount", *options]), str(target)], check=True)


def unmount(target: Path) -> None:
    subprocess.run(["umount", "-l", str(target)], capture_output=True)
