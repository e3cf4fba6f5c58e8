"""A whole benchmark run: set up JAX and PyTorch, run the chosen sections (a broken case
costs one FAILED row, not the run), then write ``--json`` and print the tables last."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

from jaxconv.bench.contenders import Setup, load_torch
from jaxconv.bench.report import Row, machine_info, render
from jaxconv.bench.timing import log


def guarded(table: str, case: str, fn: Callable[..., list[Row]], *args: Any) -> list[Row]:
    """``fn(*args)``'s rows, or one FAILED row saying why: one broken case (a backend
    without some op, out of memory) must not cost the rest of a run's tables."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported in the table and on stderr
        import traceback

        traceback.print_exc()
        why = f"{type(err).__name__}: {err}".splitlines()[0][:160]
        return [Row(table, case, "-", f"FAILED: {why}", math.nan)]


def configure_environment(args: Any) -> None:
    """Set what JAX reads once, at backend start: the platform and XLA_FLAGS. Works after
    ``import jax`` too (the ``jaxconv`` command imports it first), as long as no backend has
    started; XLA_FLAGS given after that would be ignored, so that raises ValueError."""
    import jax

    if args.xla_flags:
        started = getattr(getattr(jax._src, "xla_bridge", None), "backends_are_initialized", None)
        if started is not None and started():
            raise ValueError("--xla-flags: JAX's backend has already started in this process")
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        jax.config.update("jax_platforms", "cpu")


def make_setup(args: Any) -> Setup:
    """JAX's first device and PyTorch (or None) on the device ``--device`` names."""
    import jax

    dev = jax.devices()[0]
    if args.device == "gpu" and dev.platform != "gpu":
        raise SystemExit(f"--device gpu: JAX sees no GPU (devices: {jax.devices()})")
    torch = load_torch(args.device)
    if args.device == "gpu" and torch is not None and not torch.cuda.is_available():
        raise SystemExit("--device gpu: PyTorch sees no CUDA device")
    return Setup(args, dev, "cuda" if args.device == "gpu" else "cpu", torch)


def run_sections(setup: Setup) -> list[Row]:
    """Every section ``setup.args`` asks for, in the order of the tables."""
    from jaxconv.bench.sections import epoch, family, ops, opset, profile, resnet, sweep

    args = setup.args
    rows: list[Row] = []
    if args.section in ("ops", "all"):
        log("ops")
        for case in ops.conv_cases(args.quick):
            rows += guarded("ops", case.label(), ops.bench_conv, case, setup)
        for case in ops.pool_cases(args.quick):
            rows += guarded("ops", case.label(), ops.bench_pool, case, setup)
        rows += guarded("manual", "manual paths", ops.bench_manual, setup)
    if args.section == "family":
        log("family")
        for case in family.family_cases(args.quick):
            rows += guarded("family", case.label(), family.bench_case, case, setup)
    if args.section == "opset":
        log("opset")
        prefixes = tuple(args.ops.split(",")) if getattr(args, "ops", None) else ("",)
        for case in opset.opset_cases(args.quick):
            if not case.op.startswith(prefixes):
                continue
            rows += guarded("opset", case.label(), opset.bench_case, case, setup)
    if args.section == "resnet":
        log("resnet")
        rows += guarded("resnet", "ResNet-18 step", resnet.bench_resnet, setup)
    if args.section in ("epoch", "all"):
        log("epoch")
        epoch_rows = guarded("epoch", "LeNet epoch", epoch.bench_epoch, setup)
        rows += epoch_rows
        if not args.no_floor:
            log("machine peaks")
            rows += guarded("floor", "peaks", epoch.bench_floor, setup, epoch_rows)
    if args.profile and args.section == "resnet":
        log("profile: ResNet-18 step")
        rows += guarded("profile", "ResNet-18 profile", resnet.bench_resnet_profile, setup)
    elif args.profile:
        log("profile")
        rows += guarded("profile", "profile", profile.bench_profile, setup)
    if args.gpu_sweep:
        log("GPU sweep")
        rows += sweep.gpu_sweep(args)
    return rows


def run(args: Any) -> list[Row]:
    """The whole run of resolved ``args`` (see :func:`jaxconv.bench.cli.resolve`): its rows,
    also written to ``--json`` with the machine's description and printed as tables."""
    args.started = time.perf_counter()
    configure_environment(args)
    setup = make_setup(args)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows = run_sections(setup)
    meta = machine_info(setup.dev, setup.torch, args.command_line)
    meta["load average (1 min) before / after"] = (
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    meta["benchmark wall time"] = f"{time.perf_counter() - t0:.0f} s"
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1)
        )
    if not args.no_tables:
        print(render(rows, meta))
    return rows
