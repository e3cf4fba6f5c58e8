"""Training checkpoints with orbax-checkpoint: one per epoch, a few kept, atomic, with fallback.

A checkpoint directory holds one sub-directory per saved epoch (``<dir>/3``), each with two
items: ``state`` (the train state pytree: params, optimizer state, RNG key, epoch, step) and
``meta`` (JSON: the run's settings, enough to rebuild the model, and the SHA-256 of the state,
checked on restore: orbax's array chunks carry no checksum). A state field added since a
checkpoint was written restores as the target's when it is empty for the model (LeNet's
``batch_stats``), so older checkpoints of such a model still resume. Orbax writes a step into
``<dir>/<epoch>.orbax-checkpoint-tmp`` and renames it when complete, so a crash mid-write
leaves the previous checkpoints as they were and no half-written step is ever listed.

Restoring the newest epoch falls back to the one before when it cannot be read (logged on the
``"jaxconv.checkpoint"`` logger); a run that finds nothing readable gets
:class:`CheckpointError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxconv.errors import ArgumentError

logger = logging.getLogger("jaxconv.checkpoint")

CHECKPOINT_DIR = "checkpoints"  # under a run's out_dir
DIGEST_KEY = "state_sha256"  # in a checkpoint's meta JSON


class CheckpointError(ArgumentError):
    """No checkpoint where one was expected, or none that can be read.

    Errors about the path a caller gave mention it as ``checkpoint path`` (see
    :class:`jaxconv.errors.ArgumentError`), which the command line spells ``--checkpoint``.
    """


def state_digest(state: Any) -> str:
    """SHA-256 (hex) of a state pytree: each leaf's path, dtype, shape and bytes.

    Leaves are taken in the order of their path names (``params/conv1/kernel``), not in
    ``jax.tree`` order: a :class:`TrainState` and the plain dicts a target-less restore gives
    flatten in different orders but have the same path names. Arrays are fetched to the host
    (a replicated array's local copy).
    """
    leaves = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        name = "/".join(
            str(getattr(k, "name", getattr(k, "key", getattr(k, "idx", k)))) for k in path
        )
        leaves.append((name, leaf))
    digest = hashlib.sha256()
    for name, leaf in sorted(leaves, key=lambda item: item[0]):
        array = np.ascontiguousarray(np.asarray(leaf))
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _fit_to_saved(target: Any, saved: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``(restore target, entries to put back)``: ``target`` less its top-level entries that
    the checkpoint does not hold and that have no leaf.

    Such an entry is a field added to the state after the checkpoint was written, empty for
    this model (``batch_stats`` is ``{}`` for LeNet): orbax refuses a target whose tree
    differs from the saved one even by an empty node, so it is left out of the restore and
    put back as it is. A missing entry with leaves still fails the restore. ``target`` is a
    mapping or a dataclass (a :class:`jaxconv.steps.TrainState`: its pytree fields); any other
    target is used as it is.
    """
    if dataclasses.is_dataclass(target):
        fields = dataclasses.fields(target)
        entries = {
            f.name: getattr(target, f.name) for f in fields if f.metadata.get("pytree_node", True)
        }
    elif isinstance(target, Mapping):
        entries = dict(target)
    else:
        return target, {}
    if not isinstance(saved, Mapping):
        return target, {}
    absent = {k: v for k, v in entries.items() if k not in saved and not jax.tree.leaves(v)}
    if not absent:
        return target, {}
    return {k: v for k, v in entries.items() if k not in absent}, absent


def _one_line(err: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message`` cut to ``limit`` characters (TensorStore's errors
    carry their whole spec, ~60 lines)."""
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(err).__name__}: {text}"


def _is_step_dir(path: Path) -> bool:
    return path.is_dir() and path.name.isdigit()


def resolve(path: str | os.PathLike) -> tuple[Path, int | None]:
    """Find the checkpoint directory and epoch that ``path`` names.

    ``path`` may be a run's out_dir (holding ``checkpoints/``), a checkpoint directory
    (holding ``<epoch>/`` folders: the newest is used) or one epoch's folder.

    Returns:
      ``(checkpoint_directory, epoch or None for the newest)``.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise CheckpointError(
            f"checkpoint path {str(path)!r} is not a directory", ("checkpoint path",)
        )
    if (path / CHECKPOINT_DIR).is_dir():
        path = path / CHECKPOINT_DIR
    if _is_step_dir(path) and (path / "state").exists():
        return path.parent, int(path.name)
    if not any(_is_step_dir(p) for p in path.iterdir()):
        raise CheckpointError(
            f"checkpoint path: no checkpoint in {str(path)!r} (no <epoch>/ folder)",
            ("checkpoint path",),
        )
    return path, None


class Checkpoints:
    """An orbax ``CheckpointManager`` over ``directory``, keeping the newest ``max_to_keep``.

    ``read_only=True`` opens an existing directory for restoring and never writes to it.
    Saves are asynchronous (the next epoch runs while the last one is written); ``close``
    waits for the last save.
    """

    def __init__(
        self, directory: str | os.PathLike, *, max_to_keep: int = 3, read_only: bool = False
    ) -> None:
        self.directory = Path(directory).expanduser().absolute()
        if not read_only:  # found now, not when the first epoch's save fails
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                why = "a file is in the way" if self.directory.exists() else err.strerror
                raise CheckpointError(
                    f"checkpoint directory {str(self.directory)!r} is not a usable directory: "
                    f"{why or err}"
                ) from None
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if read_only else max_to_keep,  # orbax warns on any other value
            save_interval_steps=0 if read_only else 1,
            create=not read_only,
            read_only=read_only,
            # A write killed half-way leaves <epoch>.orbax-checkpoint-tmp; drop it on reopen.
            cleanup_tmp_directories=not read_only,
        )
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            # Named handlers (not just item names): item_metadata can then read a checkpoint
            # before anything was saved or restored through this manager.
            item_handlers={
                "state": ocp.StandardCheckpointHandler(),
                "meta": ocp.JsonCheckpointHandler(),
            },
        )

    def epochs(self) -> list[int]:
        """Saved epochs, oldest first."""
        return sorted(self._manager.all_steps())

    def latest_epoch(self) -> int | None:
        return self._manager.latest_step()

    def save(self, epoch: int, state: Any, meta: Mapping[str, Any]) -> None:
        """Save ``state`` (any pytree of arrays) and JSON ``meta`` as ``epoch``, asynchronously.

        The state's :func:`state_digest` is added to the saved meta (under ``DIGEST_KEY``).
        """
        meta = {**meta, DIGEST_KEY: state_digest(state)}
        self._manager.save(
            epoch,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)
            ),
        )

    def read_meta(self, epoch: int | None = None) -> dict[str, Any] | None:
        """The JSON meta saved with ``epoch`` (None: the newest), without reading the state;
        None where there is no such checkpoint or its meta cannot be read (a restore then
        reports it)."""
        epoch = self.latest_epoch() if epoch is None else epoch
        if epoch is None:
            return None
        try:
            restored = self._manager.restore(
                epoch, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
            )
        except Exception:  # unreadable: restore() falls back and says why
            return None
        meta = dict(restored.meta)
        meta.pop(DIGEST_KEY, None)
        return meta

    def _restore_one(self, epoch: int, target: Any | None) -> tuple[Any, dict[str, Any]]:
        if target is None:
            # The arrays carry the shardings they were saved with (over 4 devices, say), which
            # may not exist here: read them onto this process's first device instead.
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            saved = self._manager.item_metadata(epoch)["state"].tree
            state_args = ocp.args.StandardRestore(
                jax.tree.map(
                    lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), saved
                )
            )
            absent: dict[str, Any] = {}
        else:
            saved = self._manager.item_metadata(epoch)["state"].tree
            fitted, absent = _fit_to_saved(target, saved)
            state_args = ocp.args.StandardRestore(
                jax.tree.map(ocp.utils.to_shape_dtype_struct, fitted)
            )
        restored = self._manager.restore(
            epoch, args=ocp.args.Composite(state=state_args, meta=ocp.args.JsonRestore())
        )
        meta = dict(restored.meta)
        expected = meta.pop(DIGEST_KEY, None)  # None: saved before digests were stored
        if expected is not None and state_digest(restored.state) != expected:
            raise CheckpointError("the restored state's SHA-256 differs from the one saved")
        state = restored.state
        if absent:  # absent entries have no leaf: the digest is the same with or without them
            restored_entries = {**state, **absent}
            if dataclasses.is_dataclass(target):
                state = dataclasses.replace(target, **restored_entries)
            else:
                state = restored_entries
        return state, meta

    def restore(
        self, target: Any | None = None, epoch: int | None = None, *, quarantine: bool = False
    ) -> tuple[Any, dict[str, Any], int]:
        """Restore a checkpoint: ``(state, meta, epoch)``.

        Args:
          target: a pytree with the state's structure, shapes and dtypes (e.g. a freshly
            initialised state); None restores plain nested dicts of arrays.
          epoch: the epoch to restore; None: the newest readable one, falling back to older
            ones (each skip is logged as a warning).
          quarantine: rename each unreadable epoch's folder to ``<epoch>.unreadable-<time>``
            (kept for inspection, out of the manager's way) so a resumed run can save that
            epoch again.

        Raises:
          CheckpointError: no checkpoint, or none readable (the message gives each error).
        """
        candidates = [epoch] if epoch is not None else self.epochs()[::-1]
        if not candidates:
            raise CheckpointError(f"no checkpoint in {str(self.directory)!r}")
        errors = []
        for i, candidate in enumerate(candidates):
            try:
                state, meta = self._restore_one(candidate, target)
            except Exception as err:  # any failure to read means this checkpoint is unusable
                errors.append(f"epoch {candidate}: {_one_line(err)}")
                nxt = candidates[i + 1] if i + 1 < len(candidates) else None
                logger.warning(
                    "checkpoint of epoch %d in %s is unreadable (%s); %s",
                    candidate,
                    self.directory,
                    _one_line(err),
                    f"falling back to epoch {nxt}" if nxt is not None else "no older one",
                )
                if quarantine:
                    self._quarantine(candidate)
                continue
            return state, meta, candidate
        raise CheckpointError(
            f"no readable checkpoint in {str(self.directory)!r}:\n  " + "\n  ".join(errors)
        )

    def _quarantine(self, epoch: int) -> None:
        src = self.directory / str(epoch)
        dst = self.directory / f"{epoch}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(src, dst)
        logger.warning("moved the unreadable checkpoint %s to %s", src, dst)
        self._manager.reload()

    def wait(self) -> None:
        """Block until every pending save is written (and renamed into place)."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
