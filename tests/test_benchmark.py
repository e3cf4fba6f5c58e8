"""experiments/benchmark.py: the quick mode produces every table with finite numbers, and the
GPU sweep's subprocess machinery works (here on the CPU) and survives a flag XLA refuses.

No timing is asserted: these only check that the benchmark runs and reports.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_script

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "benchmark.py"

pytest.importorskip("torch")
pytest.importorskip("flax")


def load_benchmark():
    return load_script(SCRIPT, "jaxconv_benchmark")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "rows.json"
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--quick",
        "--epoch-rows",
        "torch-book,jaxconv-auto,jaxconv-lax",
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout, json.loads(out.read_text())


def test_quick_run_prints_every_table_last(quick_run):
    stdout, _ = quick_run
    tables = [
        "### Ops",
        "### Conv forward+backward",
        "### The chapter's manual",
        "### LeNet epoch",
        "### The floor",
    ]
    positions = [stdout.find(t) for t in tables]
    assert all(p >= 0 for p in positions), stdout[-2000:]
    assert positions == sorted(positions)
    assert "load average" in stdout
    assert stdout.rstrip().splitlines()[-1].startswith("| cpu peaks")  # tables come last


def test_quick_run_numbers_are_finite(quick_run):
    _, result = quick_run
    rows = result["rows"]
    assert {r["table"] for r in rows} == {"ops", "scan", "manual", "epoch", "floor"}
    for r in rows:
        if r["table"] == "floor" and r["passes"] == "peak":
            continue  # a measured peak is in the row's text, not a time
        assert math.isfinite(r["seconds"]) and r["seconds"] > 0, r
        assert r["ratio"] is None or (math.isfinite(r["ratio"]) and r["ratio"] > 0), r
    contenders = {r["contender"] for r in rows if r["table"] == "epoch"}
    assert len(contenders) == 3
    # every op row has its PyTorch baseline, and "auto" is marked on one conv contender
    for case in {r["case"] for r in rows if r["table"] == "ops"}:
        assert any(r["contender"] == "torch" for r in rows if r["case"] == case)
    assert any(r["note"] == "auto" for r in rows if r["table"] == "ops")


def test_gpu_sweep_machinery_runs_each_flag_set_apart(monkeypatch):
    bench = load_benchmark()
    monkeypatch.setattr(
        bench,
        "GPU_SWEEP",
        [("default flags", "", []), ("a flag XLA refuses", "--xla_no_such_flag_jaxconv=1", [])],
    )
    monkeypatch.setattr(bench, "GPU_SWEEP_ROWS", "jaxconv-auto")
    args = argparse.Namespace(device="cpu", epoch_rounds=1, quick=True, sweep_budget_s=300)
    rows = bench.gpu_sweep(args)
    ok = [r for r in rows if r.case == "default flags"]
    bad = [r for r in rows if r.case == "a flag XLA refuses"]
    assert len(ok) == 1 and math.isfinite(ok[0].seconds), rows
    assert len(bad) == 1 and bad[0].contender.startswith("FAILED") and math.isnan(bad[0].seconds)
    assert "### GPU sweep" in bench.render(rows, {"date": "today"})


# --- the performance paths keep the semantics -------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "layout"),
    [
        (dict(kernel_size=2), "NHWC"),
        (dict(kernel_size=(2, 3), padding=(1, 0), ceil_mode=True), "NCHW"),
        (dict(kernel_size=3, padding=((1, 0), (0, 1))), "NHWC"),
    ],
    ids=["lenet", "ceil-padded", "per-side"],
)
def test_tiled_max_pool_derivative_equals_the_general_rule(kw, layout, monkeypatch):
    """jaxconv.pool's XLA:CPU rule for tiling windows (one variadic reduce_window) gives the
    running-where rule's values and tangents bit for bit: ties, NaN (the later wins), -inf,
    padding and ceil-mode overhang; forward and reverse mode."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxconv import pool

    rng = np.random.default_rng(3)
    shape = (2, 3, 7, 8) if layout == "NCHW" else (2, 7, 8, 3)
    axes = (2, 3) if layout == "NCHW" else (1, 2)
    x = np.maximum(rng.integers(-2, 3, size=shape), 0).astype(np.float32)  # many ties
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, 6, replace=False)] = np.nan
    flat[rng.choice(flat.size, 6, replace=False)] = -np.inf
    corner = [slice(None)] * 4
    corner[axes[0]] = corner[axes[1]] = slice(0, 2)
    x[tuple(corner)] = -np.inf  # windows of -inf only
    t = rng.standard_normal(shape).astype(np.float32)
    geo = pool._geometry(x, axes, kw["kernel_size"], None, kw.get("padding", 0), 1,
                         kw.get("ceil_mode", False))  # fmt: skip
    assert pool._tiles(geo)

    def run():
        f = lambda x: jnp.nan_to_num(pool.max_pool2d(x, layout=layout, **kw))
        y, ty = jax.jvp(f, (x,), (t,))
        ct = np.random.default_rng(4).standard_normal(y.shape).astype(np.float32)
        grad = jax.grad(lambda x: jnp.vdot(f(x), ct))(x)
        return [np.asarray(a) for a in (y, ty, grad)]

    fast = run()
    monkeypatch.setattr(pool, "_tiles", lambda geo: False)
    jax.clear_caches()  # the jitted pool was traced with the tiled rule
    general = run()
    for a, b in zip(fast, general, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_manual_pool2d_gradient_is_jax_autodiffs(mode):
    """pool2d's hand-written gradient equals JAX's autodiff of the plain vmapped windows,
    ties included (a max's tied elements share its gradient equally, as ``jnp.max``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    from jaxconv import pool

    def autodiff_pool2d(X, size):
        reduce = jnp.max if mode == "max" else jnp.mean

        def at(i, j):
            return reduce(lax.dynamic_slice(X, (i, j), size))

        rows, cols = jnp.arange(X.shape[0] - size[0] + 1), jnp.arange(X.shape[1] - size[1] + 1)
        return jax.vmap(jax.vmap(at, in_axes=(None, 0)), in_axes=(0, None))(rows, cols)

    rng = np.random.default_rng(5)
    X = np.maximum(rng.integers(-2, 3, (7, 8)), 0).astype(np.float32)  # many ties
    X[5:, 5:] = -np.inf
    for size in [(2, 3), (3, 3), (1, 1)]:
        g = rng.standard_normal((8 - size[0], 9 - size[1])).astype(np.float32)
        want = jax.grad(lambda X, s=size, g=g: jnp.vdot(autodiff_pool2d(X, s), g))(X)
        got = jax.grad(lambda X, s=size, g=g: jnp.vdot(pool.pool2d(X, s, mode), g))(X)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
