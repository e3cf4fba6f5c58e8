"""jaxconv.bench's ``resnet`` section: the quick run times PyTorch (where the book's torch
reference is found), jaxconv and plain Flax side by side, and its profile sorts the step's
XLA work into kinds; the plain Flax network is the book's architecture; a missing reference
is reported, not fatal.

No timing is asserted: these check that the benchmark runs and reports what it measured.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _book_reference import _candidates

from jaxconv.bench.sections import resnet

REPO = Path(__file__).resolve().parent.parent


def _reference_dir() -> Path | None:
    return next((p.parent for p in _candidates() if p.is_file()), None)


def _env(reference: Path | None) -> dict[str, str]:
    """The child's environment: this checkout importable, the reference where it is found."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    if reference is not None:
        env["JAXCONV_REFERENCE_TORCH"] = str(reference)
    return env


def test_quick_resnet_section_with_its_profile(tmp_path):
    """``--quick --section resnet --profile``: a row per contender with a finite time (the
    torch row the baseline where the reference is found, else a row saying it was not), the
    scanned steps' table (jaxconv, and torch where found), and profile rows whose shares add
    up to the busy time."""
    pytest.importorskip("torch")
    reference = _reference_dir()
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "-m", "jaxconv.bench", "--quick", "--section", "resnet", "--profile"]
    proc = subprocess.run(
        [*cmd, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(reference),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "### The book's ResNet-18 train step" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    step = {r["contender"]: r for r in rows if r["table"] == "resnet"}
    assert set(step) == set(resnet.ROWS.values())
    for key in ("jaxconv", "flax"):
        assert math.isfinite(step[resnet.ROWS[key]]["seconds"]), step
    torch_row = step[resnet.ROWS["torch"]]
    if reference is None:
        assert math.isnan(torch_row["seconds"]) and "not found" in torch_row["note"]
    else:
        assert torch_row["ratio"] == 1.0 and math.isfinite(torch_row["seconds"])
        for key in ("jaxconv", "flax"):
            assert step[resnet.ROWS[key]]["ratio"] > 0
    scan = {r["contender"]: r for r in rows if r["table"] == "resnet_scan"}
    (jaxconv_scan,) = (r for name, r in scan.items() if "inside lax.scan" in name)
    assert jaxconv_scan["note"] == "auto" and math.isfinite(jaxconv_scan["seconds"]), scan
    assert len(scan) == (1 if reference is None else 2), scan
    if reference is not None:
        assert jaxconv_scan["ratio"] > 0
    prof = [r for r in rows if r["table"] == "profile" and r["case"].startswith("jaxconv")]
    wall, busy, *kinds = prof
    assert wall["contender"].startswith("wall time per step") and wall["seconds"] > 0
    assert busy["contender"] == "busy time per step" and busy["seconds"] > 0
    names = {r["contender"] for r in kinds}
    assert any(n.startswith("conv fwd -> ") for n in names), names
    assert any(n.startswith("conv bwd -> ") for n in names), names
    assert "optimizer" in names
    assert 0.5 < sum(r["ratio"] for r in kinds) <= 1.0 + 1e-9
    if reference is not None:
        assert any(r["case"].startswith("PyTorch") for r in rows if r["table"] == "profile")


def test_missing_reference_is_none(monkeypatch, tmp_path):
    monkeypatch.setenv("JAXCONV_REFERENCE_TORCH", str(tmp_path))
    monkeypatch.setattr(resnet, "REFERENCE_DIRS", ("no/such/dir",))
    assert resnet.book_models_path() is None
    assert resnet.load_book_models() is None


def test_reference_found_through_the_environment(monkeypatch):
    reference = _reference_dir()
    if reference is None:
        pytest.skip("the torch reference networks are not there")
    monkeypatch.setenv("JAXCONV_REFERENCE_TORCH", str(reference))
    assert resnet.book_models_path() == reference / "book_models.py"


def _count(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def test_plain_flax_resnet_has_the_book_architecture():
    """The plain Flax contender has jaxconv's (the book's) parameter count, batch-norm
    channels and output shape: the two rows time the same network."""
    from jaxconv.models import resnet18

    key = jax.random.key(0)
    flax_vars = jax.eval_shape(resnet.flax_resnet18().init, key, jnp.zeros((2, 96, 96, 1)))
    ours = jax.eval_shape(resnet18().init, key, jnp.zeros((2, 1, 96, 96)))
    assert _count(flax_vars["params"]) == _count(ours["params"]) == 11_178_378
    stats = [a.shape for a in jax.tree_util.tree_leaves(flax_vars["batch_stats"])]
    # flax keeps mean and var per batch norm; jaxconv also counts batches (torch's)
    assert len(stats) == 2 * len(resnet.stat_paths(ours["batch_stats"])) == 2 * 17


def test_stat_paths_are_the_batch_norm_modules():
    stats = jax.eval_shape(
        lambda: (
            __import__("jaxconv.models", fromlist=["resnet18"])
            .resnet18()
            .init(jax.random.key(0), jnp.zeros((1, 1, 32, 32)))
        )
    )["batch_stats"]
    paths = resnet.stat_paths(stats)
    assert "0/1" in paths and "1/0/bn1" in paths and "2/0/bn2" in paths
    assert all("running_mean" not in p for p in paths)


@pytest.mark.parametrize(
    ("shape", "op_name", "kind"),
    [
        (
            "f32[64,24,24,64]{3,2,1,0}",
            "jit(step)/jvp(Sequential)/1/0/conv1/jit(_conv_apply)/conv_general_dilated",
            "conv fwd -> f32[64,24,24,64]",
        ),
        (
            "f32[64,3,3,64]",
            "jit(step)/transpose(jvp(Sequential))/1/0/conv2/jit(_conv_apply)/conv_general_dilated",
            "conv bwd -> f32[64,3,3,64]",
        ),
        ("f32[64]", "jit(step)/jvp(Sequential)/1/0/bn1/sub", "batch norm fwd"),
        ("f32[64]", "jit(step)/transpose(jvp(Sequential))/0/1/mul", "batch norm bwd"),
        ("f32[9]", "jit(step)/jvp(Sequential)/0/3/jit(_max_pool)/or", "max pool fwd"),
        ("f32[512,512,3,3]", "jit(step)/optimizer/add", "optimizer"),
        ("f32[4,4]", "jit(step)/jvp(Sequential)/1/0/conv1/jit(_conv_apply)/transpose", None),
        ("f32[4,4]", "jit(step)/jvp(Sequential)/1/0/add", "elementwise/other fwd"),
    ],
)
def test_kind_of(shape, op_name, kind):
    got = resnet.kind_of(shape, op_name, ["0/1", "1/0/bn1"])
    assert got == (kind or "transpose (layout)")
