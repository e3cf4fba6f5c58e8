"""experiments/00_from_dense_to_conv.py (chapter 6.1): its numbers, quick run and piece by piece.

The layer pieces are checked against float64 NumPy loops written from the chapter's formulas;
the quick run (which needs Fashion-MNIST for its Where's Waldo part) is run once, in one test
(so that pytest-xdist never runs it in two workers), and its returned numbers, printed tables
and figure are checked.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _runs import fashion_subset
from conftest import load_script
from test_experiments import png_size

SCRIPT = Path(__file__).resolve().parent.parent / "experiments" / "00_from_dense_to_conv.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def module():
    return load_script(SCRIPT, "experiment_00_from_dense_to_conv")


def quick_run(module, out: Path) -> tuple[dict, str, Path]:
    """(result, stdout, out_dir) of ``main(Config(quick=True))``; skipped without the data."""
    from jaxconv.data import DataNotFoundError

    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            result = module.main(module.Config(quick=True, out_dir=out))
    except DataNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")
    return result, buf.getvalue(), out


# --------------------------------------------------------------------------- command line


def test_help_names_the_command_and_the_shared_flags(module, capsys):
    assert (
        module.__doc__.split("\n\n")[1]
        .strip()
        .startswith("python experiments/00_from_dense_to_conv.py")
    )
    with pytest.raises(SystemExit) as exit_info:
        module.cli(module.Config, module.main, module.__doc__, argv=["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--out-dir" in out and "--quick" in out and "--delta" in out


@pytest.mark.parametrize(
    ("override", "flag"),
    [({"delta": 30}, "--delta"), ({"delta": -1}, "--delta"), ({"height": 5}, "--height"),
     ({"grid": 1}, "--grid"), ({"trials": 0}, "--trials")],
)  # fmt: skip
def test_bad_settings_are_refused_before_any_work(module, tmp_path, override, flag):
    with pytest.raises(ValueError, match=flag):
        module.main(module.Config(out_dir=tmp_path, **override))  # raises before any work
    assert not (tmp_path / "parameter_counts.csv").exists()


def test_without_data_the_script_says_how_to_get_it(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    env = {**os.environ, "JAXCONV_DATA_DIR": str(empty)}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out-dir", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "dataset-fashion-mnist" in done.stderr and "JAXCONV_DATA_DIR" in done.stderr
    assert "1,000,000,000,000" in done.stdout  # the parts that need no data ran first


# --------------------------------------------------------------------------- the layers


def test_weights_from_offsets_is_the_chapters_reindexing(module, rng):
    h, w = 4, 5
    V = rng.standard_normal((2 * h - 1, 2 * w - 1))
    W = np.asarray(module.weights_from_offsets(jnp.asarray(V), h, w))
    assert W.shape == (h, w, h, w)
    for i, j, k, m in np.ndindex(h, w, h, w):
        assert W[i, j, k, m] == np.float32(V[k - i + h - 1, m - j + w - 1])  # [V]_{a,b}, a = k-i


def test_local_mask_keeps_offsets_within_delta(module):
    h, w, delta = 6, 7, 2
    mask = module.local_mask(h, w, delta)
    offsets_a = np.arange(-(h - 1), h)[:, None]
    offsets_b = np.arange(-(w - 1), w)[None, :]
    want = (np.abs(offsets_a) <= delta) & (np.abs(offsets_b) <= delta)
    np.testing.assert_array_equal(mask, want)
    assert mask.sum() == (2 * delta + 1) ** 2


def _dense_f64(X, W, U):
    """[H]_{i,j} = [U]_{i,j} + sum_{k,l} [W]_{i,j,k,l} [X]_{k,l}, loops in float64."""
    h, w = X.shape
    H = np.array(U, np.float64)
    for i, j in np.ndindex(h, w):
        H[i, j] += sum(W[i, j, k, m] * X[k, m] for k, m in np.ndindex(h, w))
    return H


def _local_f64(X, K, u):
    """[H]_{i,j} = u + sum_{|a|,|b|<=delta} [V]_{a,b} [X]_{i+a,j+b}, zero outside X, float64."""
    h, w = X.shape
    d = (K.shape[0] - 1) // 2
    H = np.full((h, w), float(u))
    for i, j in np.ndindex(h, w):
        for a, b in np.ndindex(2 * d + 1, 2 * d + 1):
            if 0 <= i + a - d < h and 0 <= j + b - d < w:
                H[i, j] += K[a, b] * X[i + a - d, j + b - d]
    return H


@pytest.mark.parametrize("seed", range(3))
def test_dense_layer_and_corr2d_match_float64_loops(module, seed):
    rng = np.random.default_rng(seed)
    h, w, delta = 5, 6, 1
    p = module.random_layers(rng, h, w)
    X, W, U, V, u = (p[name].astype(np.float64) for name in ("X", "W", "U", "V", "u"))
    with jax.default_matmul_precision("highest"):
        H = np.asarray(module.dense_layer(*(jnp.asarray(p[n]) for n in ("X", "W", "U"))))
        K = p["V"][h - 1 - delta : h + delta, w - 1 - delta : w + delta]
        H_conv = np.asarray(module.corr2d_same(jnp.asarray(p["X"]), jnp.asarray(K))) + p["u"]
    np.testing.assert_allclose(H, _dense_f64(X, W, U), rtol=1e-5, atol=1e-5)
    K64 = V[h - 1 - delta : h + delta, w - 1 - delta : w + delta]
    np.testing.assert_allclose(H_conv, _local_f64(X, K64, u), rtol=1e-5, atol=1e-5)
    # The comparison can fail: the flipped kernel (a true convolution) is another layer.
    assert np.max(np.abs(H_conv - _local_f64(X, K64[::-1, ::-1], u))) > 1e-2


@pytest.mark.parametrize(("h", "w", "delta"), [(8, 9, 0), (10, 12, 2), (9, 8, 3), (12, 10, 4)])
@pytest.mark.parametrize("seed", range(3))
def test_invariance_and_locality_make_the_layer_corr2d(module, h, w, delta, seed):
    layers = module.random_layers(np.random.default_rng(seed), h, w)
    with jax.default_matmul_precision("highest"):
        d = {k: float(v) for k, v in module.compare_layers(**layers, delta=delta).items()}
    assert d["diff_invariant"] < 2e-5  # H of order 1: float32 rounding of <= 144 products
    assert d["diff_local"] < 1e-5 and d["rel_diff_local"] < 1e-5
    assert d["shift_error_invariant"] < 1e-5  # a shift of X only shifts H
    assert d["shift_error_dense"] > 0.1  # the general layer does not


def test_parameter_counts_of_the_megapixel_example(module):
    counts = module.parameter_counts(1000, 1000, 2)
    assert [r["weights"] for r in counts] == [10**9, 10**12, 1999**2, 25]
    assert [r["biases"] for r in counts] == [1000, 10**6, 1, 1]
    small = module.parameter_counts(3, 4, 1)  # a 3x3 image: brute-force counts
    assert [r["weights"] for r in small] == [9 * 4, 81, 25, 9]


# --------------------------------------------------------------------------- Where's Waldo


def _pearson_f64(canvas, template):
    """Pearson correlation of the template with each window, float64 loops."""
    s = template.shape[0]
    t = template - template.mean()
    out = np.zeros((canvas.shape[0] - s + 1, canvas.shape[1] - s + 1))
    for r, c in np.ndindex(out.shape):
        x = canvas[r : r + s, c : c + s]
        x = x - x.mean()
        out[r, c] = (x * t).sum() / (np.linalg.norm(x) * np.linalg.norm(t))
    return out


@pytest.mark.parametrize("seed", range(3))
def test_normalized_xcorr_matches_float64_and_ignores_brightness(module, seed):
    rng = np.random.default_rng(seed)
    canvas = rng.random((20, 23)).astype(np.float32)
    template = rng.random((5, 5)).astype(np.float32)
    ncc = np.asarray(module.normalized_xcorr(jnp.asarray(canvas), jnp.asarray(template)))
    np.testing.assert_allclose(ncc, _pearson_f64(canvas, template), atol=2e-4)
    brighter = np.asarray(module.normalized_xcorr(jnp.asarray(3 * canvas + 0.5), template))
    np.testing.assert_allclose(brighter, ncc, atol=2e-4)


def test_quick_run(module, tmp_path):
    run = quick_run(module, tmp_path)
    check_quick_run_numbers(run)
    check_quick_run_finds_waldo_on_every_canvas(run)
    check_quick_run_writes_its_figure_and_table(run)


def check_quick_run_numbers(run: tuple) -> None:
    res, out, _ = run
    assert res["diff_invariant"] < 2e-5 and res["diff_local"] < 1e-5
    assert res["rel_diff_local"] < 1e-5
    assert res["shift_error_invariant"] < 1e-5 and res["shift_error_dense"] > 0.1
    assert res["kernel_shape"] == (5, 5)
    assert res["dense_weights"] == (10 * 12) ** 2
    assert [r["weights"] for r in res["parameter_counts"]] == [10**9, 10**12, 1999**2, 25]
    assert "max |diff| = " in out
    for printed in ("1,000,000,000", "1,000,000,000,000", "3,996,001"):
        assert printed in out


def check_quick_run_finds_waldo_on_every_canvas(run: tuple) -> None:
    res, out, _ = run
    assert len(res["waldo_hidden"]) == 5
    assert len(set(res["waldo_hidden"])) > 1  # Waldo moves between canvases
    assert res["waldo_found"] == res["waldo_hidden"]
    assert all(0.8 < s <= 1.0 + 1e-5 for s in res["waldo_scores"])
    # A plain correlation is drawn to the bright clutter: brightness must not win.
    assert res["waldo_found_plain"] != res["waldo_hidden"]
    assert "normalized cross-correlation finds him 5 times" in out


def test_waldo_over_more_seeds_and_grids(module):
    items = module.small_items(fashion_subset(1, 2000).test.images)
    for seed in range(10, 22):
        grid = 4 + seed % 3
        canvas, template, corner = module.make_canvas(items, grid, np.random.default_rng(seed))
        ncc, _ = module.score_maps(canvas, template)
        assert module.peak(np.asarray(ncc)) == corner, f"seed {seed}, grid {grid}"


def check_quick_run_writes_its_figure_and_table(run: tuple) -> None:
    res, _, out = run
    (figure,) = res["figures"]
    assert Path(figure).name == "wheres_waldo.png"
    assert Path(figure).read_bytes()[:8] == PNG_SIGNATURE
    width, height = png_size(figure)
    assert width >= 300 and height >= 200
    assert Path(figure).stat().st_size > 10_000  # a drawn figure, not an empty canvas
    with open(out / "parameter_counts.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["weights"]) for r in rows] == [10**9, 10**12, 1999**2, 25]
