"""What the op sections share: timing a row's contenders side by side into report rows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxconv.bench.contenders import Setup
from jaxconv.bench.report import Row
from jaxconv.bench.timing import log, paired_times, summarise


def time_rows(
    setup: Setup,
    table: str,
    case: str,
    passes: str,
    runners: dict[str, Callable[[], Any]],
    compile_s: dict[str, float],
    baseline: str | None,
    reps: int | None = None,
    scale: float = 1.0,
    auto: str | None = None,
) -> list[Row]:
    """Time ``runners`` side by side (``--rounds`` rounds of ``reps`` calls, default
    ``--reps``) and turn the medians, times ``scale``, into rows of ``table``; ratios to
    ``baseline`` where it ran; the note "auto" on the contender named ``auto``."""
    args = setup.args
    log(f"  {case} {passes}")
    stats = summarise(paired_times(runners, args.rounds, reps or args.reps), baseline, scale)
    base = baseline if baseline in runners else None
    return [
        Row(
            table=table,
            case=case,
            passes=passes,
            contender=name,
            seconds=sec,
            ratio=ratio,
            baseline=base,
            compile_s=compile_s.get(name),
            note="auto" if name == auto else "",
        )
        for name, (sec, ratio) in stats.items()
    ]
