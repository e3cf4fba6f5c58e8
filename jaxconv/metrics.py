"""Where a training run's numbers go: a JSON-lines file, PNG curves and (optionally) TensorBoard.

One record per epoch, a flat dict of JSON scalars (``epoch``, ``train_loss``, ``train_acc``,
``test_loss``, ``test_acc``, ``epoch_seconds``, ``examples_per_second``, ...). The JSON-lines
file is the source of truth; the plot and TensorBoard are views of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"

Record = Mapping[str, Any]


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a JSON-lines file, in order (an absent file: no records)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as f:
        return [json.loads(line) for line in f if line.strip()]


class MetricsLog:
    """Appends one JSON object per line to ``path``, flushed after each record.

    ``keep_through_epoch``: records of a previous run to keep (those with ``epoch`` <= it, for a
    resumed run); None starts a new file.
    """

    def __init__(self, path: str | os.PathLike, keep_through_epoch: int | None = None) -> None:
        self.path = Path(path)
        kept = []
        if keep_through_epoch is not None:
            kept = [r for r in read_metrics(self.path) if r.get("epoch", 0) <= keep_through_epoch]
        self.records: list[dict[str, Any]] = kept
        # Rewrite rather than append: a resumed run drops the records of epochs it redoes.
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in kept)
        os.replace(tmp, self.path)
        self._file = self.path.open("a")

    def write(self, record: Record) -> None:
        record = dict(record)
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        self.records.append(record)

    def close(self) -> None:
        self._file.close()


def curves_figure(records: Sequence[Record], title: str = "Training curves") -> Any:
    """The book's training plot, in two panels against epoch: loss (train and test) on the
    left, accuracy (train and test, 0 to 1) on the right; a ``matplotlib.figure.Figure``.

    Records without ``test_loss`` (older runs) draw the test accuracy only.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in records]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(8, 3.4), dpi=100)
    panels = (
        (ax_loss, "cross-entropy loss", (("train_loss", "train"), ("test_loss", "test"))),
        (ax_acc, "accuracy", (("train_acc", "train"), ("test_acc", "test"))),
    )
    for ax, ylabel, curves in panels:
        for (key, label), style in zip(curves, ("-", "--"), strict=True):
            points = [(r["epoch"], r[key]) for r in records if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), style, marker=".", label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_xlim(0.5, max(epochs) + 0.5)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(0.0, 1.0)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_curves(
    records: Sequence[Record], path: str | os.PathLike, title: str = "Training curves"
) -> Path | None:
    """:func:`curves_figure` of ``records`` written to a PNG at ``path``.

    Written to a temporary file and renamed, so a reader never sees half a PNG. Returns the
    path, or None when there are no records.
    """
    if not records:
        return None
    import matplotlib.pyplot as plt

    fig = curves_figure(records, title)
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)  # savefig infers PNG from suffix
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def plotting_available() -> bool:
    """Whether matplotlib (the ``plots`` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def _summary_writer_class() -> Any:
    """tensorboardX's SummaryWriter, else Flax's (needs TensorFlow), else None."""
    try:
        from tensorboardX import SummaryWriter

        return SummaryWriter
    except ImportError:
        pass
    try:
        from flax.metrics.tensorboard import SummaryWriter

        return SummaryWriter
    except ImportError:
        return None


def tensorboard_available() -> bool:
    """Whether a TensorBoard event writer (tensorboardX or TensorFlow) is installed."""
    return _summary_writer_class() is not None


class TensorBoardLog:
    """Scalars to TensorBoard event files in ``log_dir``, one step per epoch."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        cls = _summary_writer_class()
        if cls is None:
            raise ValueError(
                "tensorboard logging needs tensorboardX (pip install tensorboardX) or "
                "TensorFlow; neither is installed"
            )
        self._writer = cls(str(log_dir))
        # tensorboardX names it add_scalar, Flax scalar; both take (tag, value, step).
        self._scalar = getattr(self._writer, "add_scalar", None) or self._writer.scalar

    def write(self, record: Record, keys: Iterable[str]) -> None:
        for key in keys:
            if key in record:
                self._scalar(key, record[key], record["epoch"])
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
