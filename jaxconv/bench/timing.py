"""How the benchmark times: paired rounds in a rotating order, medians, compile apart.

Every contender is compiled first (its compile time is kept apart) and warmed up once; then
the contenders of a row take turns, ``rounds`` times, in an order that rotates every round,
so that a change of load on a shared machine hits all of them alike. A time is the median
over rounds; a ratio is the median over rounds of (contender / baseline) in the same round.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


def log(msg: str) -> None:
    """A progress line on stderr (the tables go to stdout, last)."""
    print(msg, file=sys.stderr, flush=True)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, e.g. under ``taskset``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def pinned() -> bool:
    """Whether the process is restricted to fewer cores than the machine has."""
    return usable_cores() < (os.cpu_count() or 1)


def paired_times(
    contenders: dict[str, Callable[[], Any]], rounds: int, reps: int
) -> dict[str, list[float]]:
    """Per-round median seconds of each contender; contenders take turns within a round.

    Each callable runs its work once and waits for it (block_until_ready / cuda sync). The
    order rotates every round so that none is always first after a pause.
    """
    names = list(contenders)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                contenders[name]()
                times.append(time.perf_counter() - t0)
            out[name].append(statistics.median(times))
    return out


def summarise(
    per_round: dict[str, list[float]], baseline: str | None, scale: float = 1.0
) -> dict[str, tuple[float, float | None]]:
    """name -> (median seconds * scale, median over rounds of the ratio to ``baseline``).

    The ratio is None where there is no baseline (``None`` or not among the contenders).
    """
    result = {}
    for name, times in per_round.items():
        ratio = None
        if baseline is not None and baseline in per_round:
            ratio = statistics.median(
                t / b for t, b in zip(times, per_round[baseline], strict=True)
            )
        result[name] = (statistics.median(times) * scale, ratio)
    return result


def compiled(
    fn: Callable[..., Any], *args: Any, options: dict[str, Any] | None = None
) -> tuple[Callable[..., Any], float]:
    """``jax.jit(fn)`` lowered and compiled for ``args`` with the XLA compile ``options``
    (jaxconv's rows: :func:`jaxconv.kernels.dispatch.compiler_options`, as ``jaxconv.jit``
    compiles; plain JAX's rows: none), and the seconds that took."""
    import jax

    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile(options)
    return exe, time.perf_counter() - t0


def jax_runner(exe: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A no-argument callable that runs ``exe(*args)`` and waits; warmed up once here."""
    import jax

    def run() -> Any:
        return jax.block_until_ready(exe(*args))

    run()
    return run
