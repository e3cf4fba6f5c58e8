"""Section ``--gpu-sweep``: the epoch's JAX rows again under several XLA_FLAGS sets, each in
a fresh process (XLA reads the flags once, when its backend starts; an unknown flag aborts
that process only)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jaxconv
from jaxconv.bench.report import Row
from jaxconv.bench.timing import log

# XLA_FLAGS sets tried: (label, flags, extra benchmark arguments). Command buffers (CUDA
# graphs) are XLA:GPU's answer to launch-bound loops: WHILE/CONDITIONAL put the scan's control
# flow itself into the graph. Values are DebugOptions.CommandBufferCmdType names.
GPU_SWEEP: list[tuple[str, str, list[str]]] = [
    ("default flags", "", []),
    ("command buffers off", "--xla_gpu_enable_command_buffer=", []),
    (
        "command buffers incl. WHILE, CONDITIONAL",
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,"
        "CONDITIONAL,WHILE",
        [],
    ),
    (
        "... and min graph size 1",
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,"
        "CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1",
        [],
    ),
    ("default flags, scan unroll 4", "", ["--unroll", "4"]),
    ("default flags, batch 1024", "", ["--batch", "1024"]),
]
GPU_SWEEP_ROWS = "jaxconv-auto,jaxconv-chwn,jaxconv-lax,flax-scan"
GPU_SWEEP_BUDGET_S = 290  # default --sweep-budget-s: a whole --gpu-sweep run stays < 6 min
MIN_TIMEOUT_S = 30.0
GRACE_S = 40  # what the last process started within the budget may still take


def sweep_command(args: Any, flags: str, extra: list[str], out: Path) -> list[str]:
    """The command line of one sweep process: the epoch section alone, rows to ``out``."""
    cmd = [
        sys.executable,
        "-m",
        "jaxconv.bench",
        "--section",
        "epoch",
        "--device",
        args.device,
        "--epoch-rows",
        GPU_SWEEP_ROWS,
        "--epoch-rounds",
        str(args.epoch_rounds),
        f"--xla-flags={flags}",  # one token: a value starting with -- is not an option
        "--json",
        str(out),
        "--no-tables",
        "--no-floor",
        *extra,
    ]
    return cmd + (["--quick"] if args.quick else [])


def _child_env() -> dict[str, str]:
    """This environment, with this jaxconv importable (a checkout run without installing)."""
    root = str(Path(jaxconv.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def gpu_sweep(args: Any) -> list[Row]:
    """Each XLA_FLAGS set of :data:`GPU_SWEEP` in its own process; rows labelled with the
    flags. A set that fails (or runs past the budget) gives one FAILED / skipped row."""
    rows: list[Row] = []
    start = getattr(args, "started", time.perf_counter())  # the budget counts from the start
    for label, flags, extra in GPU_SWEEP:
        elapsed = time.perf_counter() - start
        if elapsed > args.sweep_budget_s:
            log(f"  sweep: time budget spent, skipping {label!r}")
            rows.append(
                Row(
                    "sweep", label, "epoch", "skipped: --sweep-budget-s spent", math.nan, note=flags
                )
            )
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            log(f"  sweep: {label}: XLA_FLAGS={flags!r} {' '.join(extra)}")
            timeout = max(MIN_TIMEOUT_S, args.sweep_budget_s + GRACE_S - elapsed)
            try:
                proc = subprocess.run(
                    sweep_command(args, flags, extra, out),
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    env=_child_env(),
                )
                ok = proc.returncode == 0 and out.exists()
                why = "" if ok else (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
            except subprocess.TimeoutExpired:
                ok, why = False, f"timed out after {timeout:.0f} s"
            if not ok:
                rows.append(Row("sweep", label, "epoch", f"FAILED: {why}", math.nan, note=flags))
                continue
            for r in json.loads(out.read_text())["rows"]:
                r.update(
                    table="sweep", case=label, note="; ".join(s for s in (flags, r["note"]) if s)
                )
                rows.append(Row(**r))
    return rows
