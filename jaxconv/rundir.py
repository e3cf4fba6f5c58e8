"""A run's folder on disk: checks before training, what a failed start must take back, and
the records of processes that write no files.

``fit`` checks the folder before the first epoch (:func:`prepare_out_dir`,
:func:`check_free_space`) rather than failing an epoch later, and a run that fails before its
first epoch is complete leaves nothing it created (:class:`CreatedPaths`): no empty out_dir,
no empty ``metrics.jsonl``; it never deletes what was there before it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax

from jaxconv.errors import ConfigError
from jaxconv.metrics import METRICS_FILE, read_metrics


def prepare_out_dir(path: str | Path) -> Path:
    """Create ``path`` if needed and check that files can be written there (before training).

    Raises:
      ConfigError: naming ``out_dir``; it cannot be created or written to (the OS error says
      why).
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ConfigError(
            "out_dir", f"{str(path)!r} is not a writable directory: {err.strerror or err}"
        ) from None
    return path


def check_free_space(out_dir: Path, state: Any, max_checkpoints: int) -> None:
    """Refuse a run whose ``out_dir`` cannot hold its checkpoints (before training, not when
    the first save fails an epoch later).

    A run needs about ``max_checkpoints + 1`` states (one being written while the kept ones
    stay) of ``sum(leaf.nbytes)`` each (an upper bound: orbax compresses), plus 1 MiB for the
    metrics and plots.

    Raises:
      ConfigError: less free space than that, naming ``out_dir``.
    """
    state_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(state))
    needed = (max_checkpoints + 1) * state_bytes + (1 << 20)
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ConfigError(
            "out_dir",
            f"{str(out_dir)!r} has {free} bytes of free space; a run needs about {needed} "
            f"({max_checkpoints + 1} checkpoints of {state_bytes} bytes + 1 MiB)",
        )


class CreatedPaths:
    """What a run is about to create under ``out_dir``, noted before it creates anything, so a
    failed start can remove exactly that.

    Made before ``out_dir`` exists, it notes the topmost missing folder (``out_dir`` or an
    ancestor): :meth:`remove` deletes that folder. Made when ``out_dir`` exists, it notes the
    entries there: :meth:`remove` deletes only entries that appeared since, never ``out_dir``
    itself or anything that was there before.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir).expanduser().absolute()
        self._top: Path | None = None
        path = self.out_dir
        while not path.exists() and path != path.parent:
            self._top, path = path, path.parent
        self._before = set(os.listdir(self.out_dir)) if self._top is None else set()

    def remove(self) -> None:
        """Delete what appeared since construction (see the class docstring); errors ignored:
        this runs while another error is on its way to the caller."""
        if self._top is not None:
            shutil.rmtree(self._top, ignore_errors=True)
            return
        try:
            new = set(os.listdir(self.out_dir)) - self._before
        except OSError:
            return
        for name in new:
            path = self.out_dir / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class FollowerRecords:
    """:class:`jaxconv.metrics.MetricsLog`'s records without its file: the log of every process
    but process 0 of a multi-host run (process 0 writes the file, in the ``out_dir`` they
    share)."""

    def __init__(self, out_dir: Path, keep_through_epoch: int | None) -> None:
        self.records: list[dict[str, Any]] = []
        if keep_through_epoch is not None:  # a resumed run: the records process 0 keeps
            records = read_metrics(out_dir / METRICS_FILE)
            self.records = [r for r in records if r.get("epoch", 0) <= keep_through_epoch]

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(dict(record))

    def close(self) -> None:
        pass
