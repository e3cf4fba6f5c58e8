"""What a run reports: rows, the machine, and markdown tables with unambiguous ratios.

A ratio is always (contender's time) / (baseline's time), the median over paired rounds; the
tables spell it out: ``0.59x (1.69x faster)``, ``6.52x (6.52x slower)``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import platform
from collections.abc import Sequence
from typing import Any

from jaxconv.bench.timing import pinned, usable_cores

#: Ratios within this of 1 read as "same time" (the tables print two decimals).
SAME = 0.005


@dataclasses.dataclass
class Row:
    """One timed contender of one benchmark line (what ``--json`` writes)."""

    table: str  # "ops", "scan", "manual", "family", "opset", "resnet", "epoch", "floor", ...
    case: str  # e.g. "conv LeNet conv2 256x6x14x14 -> 16, 5x5"
    passes: str  # "fwd", "fwd+bwd", "epoch"
    contender: str
    seconds: float  # median over rounds (an epoch: scaled to 60,000 images); NaN: not run
    ratio: float | None = None  # median over rounds of seconds / baseline's seconds
    baseline: str | None = None
    compile_s: float | None = None
    note: str = ""


#: table -> (title, kind): "speed" tables compare times to a baseline; "share" tables give a
#: fraction in the ratio column (of the floor, of busy time).
TABLES: dict[str, tuple[str, str]] = {
    "ops": (
        "Ops: median time and ratio to PyTorch (paired rounds); 'auto' marks what impl='auto' runs",
        "speed",
    ),
    "scan": (
        "Conv forward+backward per step inside lax.scan (a training epoch's setting); ratio to lax",
        "speed",
    ),
    "manual": ("The chapter's manual (vmap) functions against lax, jitted; ratio to lax", "speed"),
    "family": (
        "The conv family beyond LeNet: PyTorch, plain lax.conv_general_dilated and "
        "jaxconv; ratio to PyTorch",
        "speed",
    ),
    "opset": (
        "torch.nn.functional's conv/pool family, every op in 1-D, 2-D and 3-D: PyTorch, "
        "jaxconv and plain JAX where it has the op; ratio to PyTorch",
        "speed",
    ),
    "resnet": (
        "The book's ResNet-18 train step (forward, backward, Adam); ratio to PyTorch eager",
        "speed",
    ),
    "resnet_scan": (
        "The same step inside lax.scan, as `jaxconv train` runs an epoch: time per step; "
        "ratio to PyTorch eager's step",
        "speed",
    ),
    "epoch": (
        "LeNet epoch (seconds per epoch, compile apart); ratio to PyTorch's book loop",
        "speed",
    ),
    "floor": (
        "The floor: measured peaks, and each epoch's time against max(FLOPs / matmul "
        "peak, activation bytes / read speed); share = floor / time",
        "share",
    ),
    "profile": (
        "Profile of a jaxconv epoch or ResNet-18 step: time per step by op or kind of op; "
        "share of busy time",
        "share",
    ),
    "sweep": ("GPU sweep: epoch rows per XLA_FLAGS set (each a fresh process)", "speed"),
}


def fmt_time(seconds: float) -> str:
    """``1.234 s`` from a second up, ``12.34 ms`` below; ``-`` for NaN (not run)."""
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def fmt_ratio(ratio: float | None) -> str:
    """A time ratio: ``2.00x (2.00x slower)``, ``0.50x (2.00x faster)``, ``1.00x (same
    time)``; empty without one."""
    if ratio is None or not math.isfinite(ratio) or ratio <= 0:
        return ""
    if abs(ratio - 1.0) < SAME:
        return f"{_num(ratio)}x (same time)"
    if ratio > 1.0:
        return f"{_num(ratio)}x ({_num(ratio)}x slower)"
    return f"{_num(ratio)}x ({_num(1.0 / ratio)}x faster)"


def _num(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 (so that no ratio prints as 0.00)."""
    return f"{value:.2f}" if value >= 0.1 else f"{value:.2g}"


def fmt_share(share: float | None) -> str:
    """A fraction as a percentage (``16%``, ``0.31%``); empty without one."""
    if share is None or not math.isfinite(share):
        return ""
    return f"{share:.0%}" if share >= 0.1 else f"{share * 100:.2g}%"


def speed_cell(row: Row) -> str:
    """The ratio cell of a speed table: "baseline" on the baseline's own row."""
    if row.baseline is not None and row.contender == row.baseline:
        return "1.00x (baseline)"
    return fmt_ratio(row.ratio)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _compile_cell(row: Row) -> str:
    return "" if row.compile_s is None else f"{row.compile_s:.1f} s"


def _time_cell(row: Row | None) -> str:
    if row is None:
        return ""
    return fmt_time(row.seconds) if math.isfinite(row.seconds) else "FAILED"


def opset_body(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of the ``opset`` table: one line per op and pass, PyTorch's time, then
    jaxconv's and plain JAX's (any contender not named ``torch`` or ``jaxconv.*``) with their
    ratios to PyTorch; notes (SLOW, FAILED) joined."""
    header = [
        "op",
        "pass",
        "PyTorch",
        "jaxconv",
        "jaxconv / PyTorch",
        "plain JAX",
        "plain / PyTorch",
    ]
    header.append("note")
    lines: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        lines.setdefault((r.case, r.passes), {})[r.contender] = r
    cells = []
    for (case, passes), got in lines.items():
        ours = next((r for n, r in got.items() if n.startswith("jaxconv.")), None)
        plain = next((r for n, r in got.items() if n != "torch" and r is not ours), None)
        notes = [
            r.note if r is ours else f"{r.contender}: {r.note}" for r in got.values() if r.note
        ]
        cells.append(
            [
                case,
                passes,
                _time_cell(got.get("torch")),
                _time_cell(ours),
                "" if ours is None else fmt_ratio(ours.ratio),
                "" if plain is None else f"{_time_cell(plain)} ({plain.contender})",
                "" if plain is None else fmt_ratio(plain.ratio),
                "; ".join(notes),
            ]
        )
    return header, cells


def table_body(table: str, rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """(header, cells) of one table's rows."""
    if table == "opset":
        return opset_body(rows)
    if TABLES[table][1] == "share":
        header = ["case", "what", "time", "share", "note"]
        return header, [
            [r.case, r.contender, fmt_time(r.seconds), fmt_share(r.ratio), r.note] for r in rows
        ]
    if table in ("epoch", "sweep"):
        header = ["case", "contender", "per epoch", "time / baseline", "compile", "note"]
        return header, [
            [r.case, r.contender, fmt_time(r.seconds), speed_cell(r), _compile_cell(r), r.note]
            for r in rows
        ]
    header = ["case", "pass", "contender", "median", "time / baseline", "note"]
    return header, [
        [r.case, r.passes, r.contender, fmt_time(r.seconds), speed_cell(r), r.note] for r in rows
    ]


def render(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The run as markdown: the metadata as a list, then one table per kind of row, in the
    order of :data:`TABLES`."""
    out = ["## jaxconv benchmark", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    for table, (title, _) in TABLES.items():
        sel = [r for r in rows if r.table == table]
        if not sel:
            continue
        header, body = table_body(table, sel)
        out += ["", f"### {title}", "", markdown_table(header, body)]
    return "\n".join(out)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                line.split(":", 1)[1].strip() for line in f if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine_info(dev: Any, torch: Any, command: str) -> dict[str, Any]:
    """Date, CPU, device, library versions, XLA_FLAGS, the compile options of jaxconv's rows
    and the ``command`` of this run."""
    import jax

    from jaxconv.kernels.dispatch import compiler_options

    cpu = f"{_cpu_name()}, {os.cpu_count()} logical cores"
    if pinned() and hasattr(os, "sched_getaffinity"):
        cpu += f", pinned to {sorted(os.sched_getaffinity(0))} ({usable_cores()} usable)"
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": cpu,
        "device": str(dev.device_kind) if hasattr(dev, "device_kind") else str(dev),
        "jax": jax.__version__,
        "torch": "not installed (its rows skipped)"
        if torch is None
        else f"{torch.__version__}, {torch.get_num_threads()} threads",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jaxconv_compiler_options": str(compiler_options(dev.platform) or "none"),
        "command": command,
    }
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    return info
