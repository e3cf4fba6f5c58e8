"""Section ``--profile``: where a jaxconv epoch step spends its time, from one partial epoch
under ``jax.profiler``: device (GPU) kernels or XLA:CPU thunks summed by name, per step."""

from __future__ import annotations

import collections
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from jaxconv.bench import _engine
from jaxconv.bench.contenders import Setup, jaxconv_runner
from jaxconv.bench.report import Row
from jaxconv.bench.sections.epoch import QUICK_STEPS, load_images

PROFILE_STEPS = 50
TOP_OPS = 12


def describe_ops(hlo: str) -> dict[str, str]:
    """HLO instruction name -> "shape <- what it came from" (the last two parts of its JAX
    op_name metadata), so that a profile's "fusion.12" says which layer it belongs to."""
    out = {}
    pattern = r"^\s*(?:ROOT )?%([\w.-]+) = (\S+) [^\n]*?op_name=\"([^\"]+)\""
    for name, shape, op in re.findall(pattern, hlo, re.M):
        where = "/".join(op.split("/")[-2:])
        out[name] = f"{shape.split('{')[0]} <- {where}"
    return out


def _event_lines(data: Any) -> tuple[str, list[Any]]:
    """(what was picked, the profile's lines of op events): on a GPU XLA's op line if the
    profiler wrote one, else the kernels per stream; on XLA:CPU the thunks of its threads
    (:data:`CPU_THUNK_THREADS`)."""
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    if planes:
        lines = [ln for p in planes for ln in p.lines]
        pick = "XLA Ops" if "XLA Ops" in {ln.name for ln in lines} else "Stream"
        return pick, [ln for ln in lines if ln.name.startswith(pick)]
    lines = [
        ln
        for p in data.planes
        if p.name.startswith("/host:CPU")
        for ln in p.lines
        if ln.name.startswith(CPU_THUNK_THREADS)
    ]
    return "XLA:CPU thunks", lines


#: The threads XLA:CPU runs thunks on: its intra-op pool, and the client's own thread, which
#: runs thunks itself (XLA's convolutions among them) and waits for the pool.
CPU_THUNK_THREADS = ("tf_XLAEigen", "tf_XLAPjRtCpuClient")

#: Events that contain other thunks (control flow, the executor's wait): counting them would
#: count their bodies twice.
_CONTAINERS = re.compile(r"^(ThunkExecutor|(while|conditional|call)(\.\d+)?$)")


def counts(event_name: str) -> bool:
    """Whether a profile event is a thunk or kernel of its own (not a container of others)."""
    return not _CONTAINERS.match(event_name)


def bench_profile(setup: Setup) -> list[Row]:
    """Wall time and busy time per step, and the ops that take the most of it."""
    import jax

    args, dev = setup.args, setup.dev
    batch, steps = args.batch, args.steps or (QUICK_STEPS if args.quick else PROFILE_STEPS)
    images, labels, _ = load_images(True, steps * batch)  # random: the data does not matter
    X, Y = jax.device_put(images, dev), jax.device_put(labels, dev)
    run, _ = jaxconv_runner(X, Y, batch, args.unroll, "auto", _engine.training_layout(dev.platform))
    run()
    where = Path(tempfile.mkdtemp(prefix="jaxconv-profile-"))
    total: collections.Counter = collections.Counter()
    count: collections.Counter = collections.Counter()
    try:
        with jax.profiler.trace(str(where)):
            t0 = time.perf_counter()
            run()
            wall = time.perf_counter() - t0
        data = jax.profiler.ProfileData.from_file(str(next(where.rglob("*.xplane.pb"))))
        pick, lines = _event_lines(data)
        for line in lines:
            for ev in line.events:
                if not counts(ev.name):
                    continue
                total[ev.name] += ev.duration_ns
                count[ev.name] += 1
    finally:
        shutil.rmtree(where, ignore_errors=True)
    case = f"jaxconv epoch step, batch {batch} ({pick})"
    busy = sum(total.values()) / 1e9
    rows = [
        Row("profile", case, "step", "wall time per step", wall / steps),
        Row(
            "profile",
            case,
            "step",
            f"ops per step: {sum(count.values()) / steps:.0f}",
            busy / steps,
            busy / wall,
            note="busy / wall",
        ),
    ]
    what = describe_ops(run.hlo())
    for name, ns in total.most_common(TOP_OPS):
        note = f"x{count[name] / steps:.0f} per step; {what.get(name, '')}"[:150]
        rows.append(
            Row("profile", case, "step", name[:70], ns / 1e9 / steps, ns / 1e9 / busy, note=note)
        )
    return rows
