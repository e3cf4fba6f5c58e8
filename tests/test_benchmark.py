"""jaxconv.bench (``jaxconv bench``, ``python -m jaxconv.bench``, experiments/benchmark.py):
the quick mode produces every table with finite numbers; the report's ratios and words are
right for known inputs; PyTorch is optional; the family and opset sections' plain-JAX
contenders (and the opset's jaxconv calls) compute PyTorch's function; the GPU sweep's
subprocess machinery works (here on the CPU).

No timing is asserted: these only check that the benchmark runs and reports what it measured.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import EAGER_EVERY, FULL

from jaxconv.bench import _engine, report, timing
from jaxconv.bench.cli import parse_args
from jaxconv.bench.contenders import EPOCH_ROWS, Setup, load_torch
from jaxconv.bench.report import Row
from jaxconv.bench.sections import epoch, family, opset, sweep

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "experiments" / "benchmark.py"


def _env() -> dict[str, str]:
    """The child's environment: this checkout importable."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


# --- whole runs at tiny sizes -----------------------------------------------------------------

#: ``python -c _THREE_RUNS OUT_DIR SCRIPT``: in one child process (one start of JAX and
#: PyTorch for all three), the benchmark started as from a command line three ways, each run
#: as ``__main__`` by runpy: ``experiments/benchmark.py --quick`` (the script ``SCRIPT``,
#: three epoch contenders), then ``python -m jaxconv.bench --quick --section family`` and
#: ``... --section opset`` (the module). Each writes ``OUT_DIR/<name>.json`` and prints
#: ``=== end of <name>`` after its output; a nonzero exit status of any fails the process.
_THREE_RUNS = (
    "import runpy, sys\n"
    "out, script = sys.argv[1:]\n"
    "runs = [\n"
    "    ('quick', script, ['--quick', '--epoch-rows', 'torch-book,jaxconv-auto,jaxconv-lax']),\n"
    "    ('family', None, ['--quick', '--section', 'family']),\n"
    "    ('opset', None, ['--quick', '--section', 'opset']),\n"
    "]\n"
    "for name, path, options in runs:\n"
    "    sys.argv = [path or 'jaxconv.bench', *options, '--json', f'{out}/{name}.json']\n"
    "    try:\n"
    "        if path:\n"
    "            runpy.run_path(path, run_name='__main__')\n"
    "        else:\n"
    "            runpy.run_module('jaxconv.bench', run_name='__main__', alter_sys=True)\n"
    "    except SystemExit as done:\n"
    "        if done.code:\n"
    "            raise\n"
    "    print(f'=== end of {name}', flush=True)\n"
)


def _quick_runs(tmp_path) -> dict[str, tuple[str, dict]]:
    """``{"quick" | "family" | "opset": (its printed output, its JSON)}`` of the child
    :data:`_THREE_RUNS`."""
    pytest.importorskip("torch")
    cmd = [sys.executable, "-c", _THREE_RUNS, str(tmp_path), str(SCRIPT)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs, rest = {}, proc.stdout
    for name in ("quick", "family", "opset"):
        printed, marker, rest = rest.partition(f"=== end of {name}\n")
        assert marker, f"no end of {name}: {proc.stdout[-2000:]}"
        runs[name] = printed, json.loads((tmp_path / f"{name}.json").read_text())
    return runs


# The child is started by the one test that makes all the checks on its output (under
# pytest-xdist a module-scoped fixture would run once per worker that needs it).


def test_quick_runs_of_the_script_and_of_the_module_entry_point(tmp_path):
    """The child :data:`_THREE_RUNS`: ``experiments/benchmark.py --quick`` prints every table,
    in order, after the log, with finite numbers in every row; ``python -m jaxconv.bench
    --quick --section family`` and ``... --section opset``, each checked on its own output
    and JSON."""
    runs = _quick_runs(tmp_path)
    stdout, result = runs["quick"]
    _check_tables_last(stdout, result)
    _check_numbers_finite(result)
    family_out, family_result = runs["family"]
    opset_out, opset_result = runs["opset"]
    _check_family(family_out, family_result["rows"])
    _check_opset(opset_out, opset_result["rows"])


def _check_tables_last(stdout: str, result: dict) -> None:
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
    assert result["meta"]["command"].startswith("python experiments/benchmark.py --quick")


def _check_numbers_finite(result: dict) -> None:
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
        assert all(
            r["baseline"] == "torch" for r in rows if r["table"] == "ops" and r["case"] == case
        )
    assert any(r["note"] == "auto" for r in rows if r["table"] == "ops")


def _check_family(stdout: str, rows: list) -> None:
    """``--section family``: a row per op and pass and contender; an op this jaxconv lacks is
    a row that says so, not a crash."""
    import jaxconv

    assert "### The conv family" in stdout
    assert {r["table"] for r in rows} == {"family"}
    for case in family.family_cases(quick=True):
        mine = [r for r in rows if r["case"] == case.label()]
        for passes in ("fwd", "fwd+bwd"):
            got = {r["contender"]: r for r in mine if r["passes"] == passes}
            assert set(got) == {"torch", family.PLAIN, f"jaxconv.{case.op}"}, got
            assert math.isfinite(got[family.PLAIN]["seconds"]), got
            assert got[family.PLAIN]["ratio"] > 0 and got["torch"]["ratio"] == 1.0
            ours = got[f"jaxconv.{case.op}"]
            if hasattr(jaxconv, case.op):
                assert math.isfinite(ours["seconds"]), ours
            else:
                assert math.isnan(ours["seconds"]) and ours["note"] == "not in this jaxconv"


def _check_opset(stdout: str, rows: list) -> None:
    """``--section opset``: every op in 1-D, 2-D and 3-D, fwd and fwd+bwd, PyTorch as the
    baseline, jaxconv, and plain JAX where it has the op; finite times; one line per op and
    pass in the printed table."""
    import jaxconv

    assert f"### {report.TABLES['opset'][0]}" in stdout
    assert {r["table"] for r in rows} == {"opset"}
    cases = opset.opset_cases(quick=True)
    ops = {c.op for c in cases}
    for d in "123":
        for stem in ("conv", "conv_transpose", "max_pool", "avg_pool", "lp_pool"):
            assert f"{stem}{d}d" in ops
        for stem in ("adaptive_avg_pool", "adaptive_max_pool", "max_unpool"):
            assert f"{stem}{d}d" in ops
    assert {"unfold", "fold", "pixel_shuffle", "pixel_unshuffle"} <= ops
    assert all(hasattr(jaxconv, op) for op in ops)
    for case in cases:
        plain = opset.plain_fn(case)
        want = {"torch", f"jaxconv.{case.op}"} | ({plain[0]} if plain else set())
        for passes in ("fwd", "fwd+bwd"):
            got = {
                r["contender"]: r
                for r in rows
                if r["case"] == case.label() and r["passes"] == passes
            }
            assert set(got) == want, (case.label(), passes, got)
            assert got["torch"]["ratio"] == 1.0
            for r in got.values():
                assert math.isfinite(r["seconds"]) and r["ratio"] > 0, r
                assert r["note"] in ("", opset.SLOW_NOTE), r
            line = f"| {case.label()} | {passes} | "
            assert sum(x.startswith(line) for x in stdout.splitlines()) == 1, line


def test_jaxconv_cli_bench_help_once_wired(capsys):
    from jaxconv import cli

    if "bench" not in cli.build_parser().format_help():
        pytest.skip("jaxconv.cli does not list the bench command yet")
    assert cli.main(["bench", "--help"]) == 0
    assert "--epoch-rows" in capsys.readouterr().out


def test_every_option_of_the_old_script_parses():
    args = parse_args(
        [
            "--quick",
            "--section",
            "ops",
            "--device",
            "cpu",
            "--steps",
            "3",
            "--batch",
            "64",
            "--rounds",
            "2",
            "--reps",
            "2",
            "--epoch-rounds",
            "2",
            "--epoch-rows",
            "flax-scan",
            "--unroll",
            "2",
            "--xla-flags=--xla_cpu_foo=1",
            "--gpu-sweep",
            "--sweep-budget-s",
            "10",
            "--json",
            "x.json",
            "--profile",
            "--no-tables",
            "--no-floor",
        ]
    )
    assert (args.section, args.steps, args.batch, args.rounds, args.reps) == ("ops", 3, 32, 2, 2)
    assert (args.epoch_rounds, args.epoch_rows, args.unroll) == (2, "flax-scan", 2)
    assert args.xla_flags == "--xla_cpu_foo=1" and args.gpu_sweep and args.profile
    assert args.sweep_budget_s == 10 and args.json == Path("x.json")
    assert args.no_tables and args.no_floor
    full = parse_args([])
    assert (full.section, full.steps, full.rounds, full.reps, full.epoch_rounds) == (
        "all",
        40,
        5,
        3,
        3,
    )
    assert parse_args(["--device", "gpu"]).steps is None  # a whole epoch on GPU
    assert parse_args(["--section", "family"]).section == "family"
    assert parse_args(["--section", "opset"]).section == "opset"
    with pytest.raises(SystemExit):
        parse_args(["--section", "resnet18"])


# --- the report and the timing, with known inputs ---------------------------------------------


@pytest.mark.parametrize(
    ("ratio", "text"),
    [
        (2.0, "2.00x (2.00x slower)"),
        (0.5, "0.50x (2.00x faster)"),
        (0.8, "0.80x (1.25x faster)"),
        (13.3, "13.30x (13.30x slower)"),
        (1.003, "1.00x (same time)"),
        (0.04, "0.04x (25.00x faster)"),
        (None, ""),
        (math.nan, ""),
    ],
)
def test_ratio_words(ratio, text):
    assert report.fmt_ratio(ratio) == text


def test_summarise_takes_medians_of_paired_ratios():
    per_round = {"base": [1.0, 2.0, 4.0], "a": [3.0, 2.0, 4.0], "b": [0.5, 3.0, 1.0]}
    stats = timing.summarise(per_round, "base", scale=10.0)
    assert stats["base"] == (20.0, 1.0)
    assert stats["a"] == (30.0, 1.0)  # ratios 3, 1, 1: the median of ratios, not of times
    assert stats["b"] == (10.0, 0.5)  # ratios 0.5, 1.5, 0.25
    assert timing.summarise(per_round, None)["a"] == (3.0, None)
    assert timing.summarise(per_round, "torch")["a"] == (3.0, None)  # baseline not run


def test_paired_times_rotates_the_order():
    calls = []
    contenders = {name: (lambda name=name: calls.append(name)) for name in "xyz"}
    out = timing.paired_times(contenders, rounds=4, reps=2)
    assert "".join(calls) == "xxyyzz" + "yyzzxx" + "zzxxyy" + "xxyyzz"
    assert all(len(v) == 4 and all(t >= 0 for t in v) for v in out.values())


def test_render_spells_out_ratios_and_gaps():
    rows = [
        Row("ops", "conv c", "fwd", "lax", 0.002, 2.0, "torch", 0.5, "auto"),
        Row("ops", "conv c", "fwd", "torch", 0.001, 1.0, "torch"),
        Row("family", "conv1d c", "fwd", "jaxconv.conv1d", math.nan, note="not in this jaxconv"),
        Row("epoch", "LeNet", "epoch", "jaxconv", 3.5, 0.85, "PyTorch", 4.0),
        Row("floor", "peaks", "epoch", "share of the floor", 3.5, 0.16),
    ]
    text = report.render(rows, {"date": "2026-01-01", "command": "jaxconv bench"})
    lines = text.splitlines()
    assert "- date: 2026-01-01" in lines and "- command: jaxconv bench" in lines
    assert "| conv c | fwd | lax | 2.00 ms | 2.00x (2.00x slower) | auto |" in lines
    assert "| conv c | fwd | torch | 1.00 ms | 1.00x (baseline) |  |" in lines
    assert "| conv1d c | fwd | jaxconv.conv1d | - |  | not in this jaxconv |" in lines
    assert "| LeNet | jaxconv | 3.500 s | 0.85x (1.18x faster) | 4.0 s |  |" in lines
    assert "| peaks | share of the floor | 3.500 s | 16% |  |" in lines
    order = [text.find(f"### {report.TABLES[t][0]}") for t in ("ops", "family", "epoch", "floor")]
    assert all(p > 0 for p in order) and order == sorted(order)
    assert "### Conv forward+backward" not in text  # no rows, no table


# --- PyTorch is optional ----------------------------------------------------------------------


def test_without_torch_its_rows_are_skipped_with_a_message(monkeypatch, capsys):
    import jax

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert load_torch("cpu") is None
    assert "PyTorch is not installed" in capsys.readouterr().err
    args = argparse.Namespace(quick=True, rounds=1, reps=1)
    setup = Setup(args, jax.devices()[0], "cpu", None)
    case = family.family_cases(quick=True)[2]
    rows = family.bench_case(case, setup)
    assert {r.contender for r in rows} >= {family.PLAIN}
    assert all(r.contender != "torch" and r.ratio is None and r.baseline is None for r in rows)
    wanted = ["torch-book", "torch-device", "flax-scan", "jaxconv-auto", "jaxconv-nhwc"]
    assert epoch.epoch_programs(wanted, "CHWN", "vjp", "cpu", has_torch=False) == [
        "flax-scan",
        "jaxconv-auto",
        "jaxconv-nhwc",
    ]
    assert epoch.epoch_programs(wanted, "NHWC", "vjp", "cpu", has_torch=True) == [
        "torch-book",
        "flax-scan",
        "jaxconv-auto",
    ]


# --- the family's plain-JAX contender is PyTorch's function -----------------------------------


def _random_family_cases(rng, count):
    for _ in range(count):
        rank = int(rng.integers(1, 4))
        k = int(rng.integers(1, 4))
        s = int(rng.integers(1, 4))
        p = int(rng.integers(0, k))
        n, c, o = (int(v) for v in rng.integers(1, 4, 3))
        size = tuple(int(v) for v in rng.integers(k, k + 5, rank))
        if rng.random() < 0.5:
            op = int(rng.integers(0, s))  # output_padding < stride
            yield family.FamilyCase(
                "t", f"conv_transpose{rank}d", (n, c, *size), (c, o, *(k,) * rank), s, p, op
            )
        else:
            groups = int(rng.choice([g for g in (1, 2, 3) if c * g <= 6]))
            yield family.FamilyCase(
                "c",
                f"conv{rank}d",
                (n, c * groups, *size),
                (o * groups, c, *(k,) * rank),
                s,
                p,
                groups=groups,
            )


#: Seeded random family cases past the quick ones (all of them under ``JAXCONV_TEST_FULL=1``).
N_RANDOM_FAMILY = 40 if FULL else 12


def _variants(f, i: int) -> tuple:
    """``f`` jitted, and as-is too for every
    ``EAGER_EVERY``-th case (conftest's rule)."""
    import jax

    jitted = jax.jit(f)
    return (jitted, f) if i % EAGER_EVERY == 0 else (jitted,)


def test_family_plain_contender_equals_torch(torch):
    rng = np.random.default_rng(7)
    cases = list(family.family_cases(quick=True)) + list(_random_family_cases(rng, N_RANDOM_FAMILY))
    for i, case in enumerate(cases):
        x = rng.standard_normal(case.x).astype(np.float32)
        w = rng.standard_normal(case.w).astype(np.float32)
        want = family.torch_fn(torch, case)(torch.from_numpy(x), torch.from_numpy(w)).numpy()
        assert want.shape == case.output_shape(), case
        for f in _variants(family.lax_fn(case), i):
            np.testing.assert_allclose(
                np.asarray(f(x, w)), want, rtol=1e-4, atol=1e-4, err_msg=case.label()
            )


def _opset_values(case, rng):
    import jax

    floats, consts = opset.case_arrays(case, rng)
    jc = [jax.numpy.asarray(a.astype(np.int32)) for a in consts]
    return floats, consts, jc


def _outputs_and_grads(cases: list[tuple[dict, int]]):
    """``[(floats, consts, target)] -> [{name: (output, input gradients)}]``, one entry per
    ``(fns, n_floats)`` of ``cases``, for every contender in its ``fns``, all jitted as one
    program: the gradients are the benchmark's (``grad_fn`` of ``0.5 * |y - target|^2``
    w.r.t. the ``n_floats`` floating inputs)."""
    import jax

    from jaxconv.bench.contenders import grad_fn

    def one(fns, n_floats, floats, consts, target):
        argnums = tuple(range(n_floats))
        return {
            name: (f(*floats, *consts), grad_fn(f, argnums)(*floats, *consts, target))
            for name, f in fns.items()
        }

    def run(values):
        return [one(*case, *v) for case, v in zip(cases, values, strict=True)]

    return jax.jit(run)


def test_opset_contenders_compute_torchs_function(torch):
    """Every opset case at the quick sizes and a second seeded draw: jaxconv's call and plain
    JAX's twin (jitted, and eager on every ``EAGER_EVERY``-th case) equal PyTorch's output,
    and their input gradients of the benchmark's loss equal PyTorch's autograd. The jitted
    outputs and gradients of every case's contenders come from one compiled program."""
    rng = np.random.default_rng(11)
    cases = opset.opset_cases(quick=True)
    wanted, contenders, values = [], [], []
    for case in cases:
        floats, consts, jc = _opset_values(case, rng)
        tf = [torch.from_numpy(a).requires_grad_(True) for a in floats]
        y = opset.torch_fn(torch, case)(*tf, *(torch.from_numpy(a) for a in consts))
        target = rng.standard_normal(tuple(y.shape)).astype(np.float32)
        y.backward(y.detach() - torch.from_numpy(target))
        wanted.append((y.detach().numpy(), [t.grad.numpy() for t in tf]))
        fns = {"jaxconv": opset.jaxconv_fn(case)}
        if (plain := opset.plain_fn(case)) is not None:
            fns[plain[0]] = plain[1]
        contenders.append((fns, len(floats)))
        values.append((floats, jc, target))
    jitted = _outputs_and_grads(contenders)(values)
    for i, case in enumerate(cases):
        (want, want_grads), (fns, _), (floats, jc, _) = wanted[i], contenders[i], values[i]
        for name, f in fns.items():
            msg = f"{case.label()}: {name}"
            out, grads = jitted[i][name]
            eager = [f(*floats, *jc)] if i % EAGER_EVERY == 0 else []
            for got in [out, *eager]:
                np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5, err_msg=msg)
            for got, exp in zip(grads, want_grads, strict=True):
                np.testing.assert_allclose(np.asarray(got), exp, rtol=1e-4, atol=1e-4, err_msg=msg)


def test_opset_report_flags_slow_jaxconv_rows_only():
    fast = Row("opset", "op c", "fwd", "jaxconv.op", 0.004, 4.0, "torch")
    slow = Row("opset", "op c", "fwd+bwd", "jaxconv.op", 0.006, 6.0, "torch")
    plain_slow = Row("opset", "op c", "fwd+bwd", opset.REDUCE_WINDOW, 0.009, 9.0, "torch")
    assert opset._flag(fast).note == "" and opset._flag(plain_slow).note == ""
    assert opset._flag(slow).note == opset.SLOW_NOTE
    rows = [
        fast,
        Row("opset", "op c", "fwd", "torch", 0.001, 1.0, "torch"),
        opset._flag(slow),
        Row("opset", "op c", "fwd+bwd", "torch", 0.001, 1.0, "torch"),
        plain_slow,
        Row("opset", "op d", "fwd", "jaxconv.op", math.nan, note="FAILED: E: x"),
    ]
    lines = report.render(rows, {}).splitlines()
    assert "| op c | fwd | 1.00 ms | 4.00 ms | 4.00x (4.00x slower) |  |  |  |" in lines
    assert (
        "| op c | fwd+bwd | 1.00 ms | 6.00 ms | 6.00x (6.00x slower) | 9.00 ms "
        f"({opset.REDUCE_WINDOW}) | 9.00x (9.00x slower) | {opset.SLOW_NOTE} |"
    ) in lines
    assert "| op d | fwd |  | FAILED |  |  |  | FAILED: E: x |" in lines


# --- the GPU sweep's machinery ----------------------------------------------------------------


#: ``python -c _CLI_BENCH bench ...``: the two lines jaxconv.cli adds (``add_parser(subparsers)``,
#: then ``args.func(args)``) as a whole ``jaxconv`` command; after the run it checks the JSON
#: that run wrote (one epoch table, measured on the CPU) and fails the process if it is wrong.
_CLI_BENCH = (
    "import argparse, json, sys\n"
    "from jaxconv.bench.cli import add_parser\n"
    "p = argparse.ArgumentParser(prog='jaxconv')\n"
    "sub = p.add_subparsers(dest='command', required=True)\n"
    "add_parser(sub)\n"
    "import jaxconv.train  # the jaxconv command imports JAX before the subcommand runs\n"
    "args = p.parse_args(sys.argv[1:])\n"
    "assert args.quiet is False\n"
    "status = args.func(args)\n"
    "result = json.loads(args.json.read_text())\n"
    "assert [r['table'] for r in result['rows']] == ['epoch'], result['rows']\n"
    "assert result['meta']['device'].lower() == 'cpu', result['meta']\n"
    "sys.exit(status)\n"
)


def test_gpu_sweep_machinery_runs_each_flag_set_apart(monkeypatch):
    """Each flag set in its own process: a good one gives its epoch rows, relabelled; a flag
    XLA refuses costs that process only (a FAILED row). The good process is started through
    the ``jaxconv`` command's wiring of ``bench`` (:data:`_CLI_BENCH`) with the sweep's own
    arguments, so it also proves that ``jaxconv bench`` works once jaxconv.cli adds it."""
    monkeypatch.setattr(
        sweep,
        "GPU_SWEEP",
        [("default flags", "", []), ("a flag XLA refuses", "--xla_no_such_flag_jaxconv=1", [])],
    )
    monkeypatch.setattr(sweep, "GPU_SWEEP_ROWS", "jaxconv-auto")
    real_command = sweep.sweep_command

    def through_the_cli(args, flags, extra, out):
        cmd = real_command(args, flags, extra, out)
        assert cmd[:3] == [sys.executable, "-m", "jaxconv.bench"], cmd
        return [sys.executable, "-c", _CLI_BENCH, "bench", *cmd[3:]] if not flags else cmd

    monkeypatch.setattr(sweep, "sweep_command", through_the_cli)
    args = argparse.Namespace(device="cpu", epoch_rounds=1, quick=True, sweep_budget_s=300)
    rows = sweep.gpu_sweep(args)
    ok = [r for r in rows if r.case == "default flags"]
    bad = [r for r in rows if r.case == "a flag XLA refuses"]
    assert len(ok) == 1 and math.isfinite(ok[0].seconds), rows
    assert ok[0].table == "sweep" and ok[0].contender == EPOCH_ROWS["jaxconv-auto"], ok
    assert len(bad) == 1 and bad[0].contender.startswith("FAILED") and math.isnan(bad[0].seconds)
    assert "### GPU sweep" in report.render(rows, {"date": "today"})


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
    """jaxconv's XLA:CPU rule for max-pool windows that tile the input (one variadic
    reduce_window) gives the running-where rule's values and tangents bit for bit: ties, NaN
    (the later wins), -inf, padding and ceil-mode overhang; forward and reverse mode."""
    import jax
    import jax.numpy as jnp

    import jaxconv

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
    geo = _engine.pool_geometry(
        x.shape,
        layout,
        kw["kernel_size"],
        None,
        kw.get("padding", 0),
        1,
        kw.get("ceil_mode", False),
    )
    assert _engine.pool_tiles(geo)

    f = lambda x: jnp.nan_to_num(jaxconv.max_pool2d(x, layout=layout, **kw))
    ct = np.random.default_rng(4).standard_normal(jax.eval_shape(f, x).shape).astype(np.float32)

    def run():
        @jax.jit  # values, tangents and gradients in one compiled program
        def both(x, t, ct):
            y, ty = jax.jvp(f, (x,), (t,))
            return y, ty, jax.grad(lambda x: jnp.vdot(f(x), ct))(x)

        return [np.asarray(a) for a in both(x, t, ct)]

    fast = run()
    monkeypatch.setattr(*_engine.pool_tiles_switch(), lambda geo: False)
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
    from jax import lax

    import jaxconv

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

        @jax.jit  # both gradients in one compiled program
        def grads(X, g, s=size):
            want = jax.grad(lambda X: jnp.vdot(autodiff_pool2d(X, s), g))(X)
            return want, jax.grad(lambda X: jnp.vdot(jaxconv.pool2d(X, s, mode), g))(X)

        want, got = grads(X, g)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
