"""experiments/*.py: every script runs in quick mode and reproduces the chapter's numbers.

Each script is loaded from its file and its ``main(Config(quick=True, out_dir=tmp))`` run once
per session (a cached fixture that also checks that its figures are real PNGs); one test per
script (so that pytest-xdist never runs a script in two workers) then checks what it returned
and printed against the values the chapter prints, and against PyTorch where it has the op.
00_from_dense_to_conv's quick run is checked in tests/test_experiment_00.py.
"""

from __future__ import annotations

import contextlib
import io
import math
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import load_script

from jaxconv import reference

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"
SCRIPTS = sorted(p.stem for p in EXPERIMENTS.glob("[0-9][0-9]_*.py"))
#: Chapter 6's scripts: their runs and figures are checked here; chapter 7's (09-15) in
#: tests/test_experiments_ch7.py, so each quick run happens once.
CHAPTER_6 = [name for name in SCRIPTS if name < "09"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load(name: str) -> ModuleType:
    """Import ``experiments/<name>.py`` as a module."""
    return load_script(EXPERIMENTS / f"{name}.py", f"experiment_{name}")


@pytest.fixture(scope="session")
def run(tmp_path_factory):
    """``run(name)`` -> (result dict, stdout) of the quick run, once per session, its figures
    checked (:func:`check_figures`)."""
    cache: dict[str, tuple[dict, str]] = {}

    def _run(name: str) -> tuple[dict, str]:
        if name not in cache:
            module = load(name)
            cfg = module.Config(out_dir=tmp_path_factory.mktemp(name), quick=True)
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                result = module.main(cfg)
            check_figures(name, result)
            cache[name] = (result, buf.getvalue())
        return cache[name]

    return _run


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails unless the file is a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_every_section_has_a_script():
    assert SCRIPTS == [
        "00_from_dense_to_conv", "01_cross_correlation", "02_learning_a_kernel",
        "03_convolution_vs_correlation", "04_receptive_field", "05_padding_and_stride",
        "06_channels", "07_pooling", "08_lenet",
        "09_alexnet", "10_vgg", "11_nin", "12_googlenet", "13_batch_norm", "14_resnet",
        "15_densenet",
    ]  # fmt: skip


# --------------------------------------------------------------------------- command line


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_and_docstring(name, capsys):
    module = load(name)
    assert module.__doc__.split("\n\n")[1].strip().startswith(f"python experiments/{name}.py")
    with pytest.raises(SystemExit) as exit_info:
        module.cli(module.Config, module.main, module.__doc__, argv=["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--out-dir" in out and "--quick" in out and f"experiments/{name}.py" in out
    assert "figures and tables go here" in out  # field comments become the flags' help


def test_command_line_builds_the_config():
    module = load("02_learning_a_kernel")
    cfg = module.cli(
        module.Config,
        lambda c: c,
        None,
        argv=["--out-dir", "/tmp/x", "--quick", "--lr", "0.1", "--steps", "4"],
    )
    assert cfg == module.Config(out_dir=Path("/tmp/x"), quick=True, lr=0.1, steps=4)
    with pytest.raises(SystemExit):
        module.cli(module.Config, lambda c: c, None, argv=["--steps", "four"])


def test_script_runs_as_a_command(tmp_path):
    out = tmp_path / "pool"
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "07_pooling.py"), "--quick", "--out-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[[[[10.]]]]" in proc.stdout
    png_size(out / "pooling.png")


# --------------------------------------------------------------------------- 6.2.1-6.2.3


def test_cross_correlation_and_edges(run):
    res, out = run("01_cross_correlation")
    np.testing.assert_array_equal(res["corr2d"], [[19.0, 25.0], [37.0, 43.0]])
    np.testing.assert_array_equal(res["corr2d_vmap"], [[19.0, 25.0], [37.0, 43.0]])
    assert "[[19. 25.]\n [37. 43.]]" in out
    # The Conv2D layer: kernel (2, 2) in [0, 1) as torch.rand, scalar bias 0, corr2d + bias.
    p = res["conv2d_layer_params"]["params"]
    assert p["weight"].shape == (2, 2) and np.ndim(p["bias"]) == 0
    assert np.all((p["weight"] >= 0) & (p["weight"] < 1)) and float(p["bias"]) == 0.0
    X = np.arange(9.0).reshape(3, 3)
    np.testing.assert_allclose(
        res["conv2d_layer_out"], reference.corr2d(X, p["weight"]) + p["bias"], rtol=1e-5
    )
    # 6.2.3: the book's Y, and zeros on the transposed image.
    row = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    np.testing.assert_array_equal(res["X"], np.tile([1, 1, 0, 0, 0, 0, 1, 1], (6, 1)))
    np.testing.assert_array_equal(res["edges"], np.tile(row, (6, 1)))
    np.testing.assert_array_equal(res["edges_transposed"], np.zeros((8, 5)))


# --------------------------------------------------------------------------- 6.2.4


def test_learning_a_kernel(run):
    res, out = run("02_learning_a_kernel")
    losses = res["losses"]
    printed = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert printed == [f"epoch {i}, loss {losses[i - 1]:.3f}" for i in (2, 4, 6, 8, 10)]
    assert np.all(np.diff(losses) < 0)  # falls every step, as in the book (11.05 ... 0.05)
    assert losses[-1] < 0.5
    assert res["kernel"].shape == (1, 2)
    assert np.max(np.abs(res["kernel"] - [[1.0, -1.0]])) < 0.15  # book: [[0.9626, -1.0053]]
    # Not one lucky seed: every seed converges.
    assert len(res["seed_final_losses"]) == 10
    assert np.all(res["seed_final_losses"] < 0.5)
    assert np.all(res["seed_kernel_errors"] < 0.15)
    check_learning_2d_kernels(res, out)
    check_edge_kernel_loop_matches_pytorch(res, pytest.importorskip("torch"))  # torch last


def check_edge_kernel_loop_matches_pytorch(res: dict, torch) -> None:
    """The book's PyTorch loop from the same start gives the same losses and kernel."""
    X = torch.ones((6, 8))
    X[:, 2:6] = 0
    Y = torch.tensor(reference.corr2d(X.numpy(), np.array([[1.0, -1.0]])), dtype=torch.float32)
    conv2d = torch.nn.Conv2d(1, 1, kernel_size=(1, 2), bias=False)
    with torch.no_grad():
        conv2d.weight[:] = torch.tensor(res["init_kernel"])
    X, Y = X.reshape((1, 1, 6, 8)), Y.reshape((1, 1, 6, 7))
    losses = []
    for _ in range(10):
        loss = ((conv2d(X) - Y) ** 2).sum()
        conv2d.zero_grad()
        loss.backward()
        conv2d.weight.data[:] -= 3e-2 * conv2d.weight.grad
        losses.append(loss.item())
    np.testing.assert_allclose(res["losses"], losses, rtol=1e-4)
    np.testing.assert_allclose(
        res["kernel"], conv2d.weight.detach().numpy().reshape(1, 2), rtol=1e-4
    )


def check_learning_2d_kernels(res: dict, out: str) -> None:
    learned = res["learned_2d"]
    assert set(learned) == {"sobel_x", "gaussian_blur"}
    for name, r in learned.items():
        assert r["kernel_error"] < 1e-4, name
        assert r["bias_error"] < 1e-4, name
        assert r["losses"][-1] < 1e-3 * r["losses"][0], name
        assert f"{name}: max |kernel error|" in out


# --------------------------------------------------------------------------- 6.2.5


def test_convolution_vs_correlation(run):
    res, _ = run("03_convolution_vs_correlation")
    d = res["diffs"]
    assert d["convolve2d(X, K) vs corr2d(X, flip(K))"] < 1e-6
    assert d["convolve2d vs scipy.signal.convolve2d"] < 1e-5
    assert d["corr2d vs scipy.signal.correlate2d"] < 1e-5
    assert d["convolve2d vs corr2d (symmetric K)"] < 1e-6
    assert d["convolve2d(X, K) vs corr2d(X, K) (asymmetric K)"] > 1.0  # really different ops
    k_corr, k_conv = res["learned"]["corr2d"], res["learned"]["convolve2d"]
    assert res["flip_error"] < 1e-4
    np.testing.assert_allclose(k_conv, k_corr[::-1, ::-1], atol=1e-4)
    np.testing.assert_allclose(k_corr, res["true_kernel"], atol=1e-4)
    assert np.max(np.abs(k_conv - k_corr)) > 0.1  # the true kernel is not symmetric
    assert res["output_error"] < 1e-4


# --------------------------------------------------------------------------- 6.2.6


def test_receptive_fields_by_gradient(run):
    res, out = run("04_receptive_field")
    stacks = res["stacks"]
    expected = {
        "conv3": 3,
        "conv3 x2": 5,
        "LeNet encoder": 16,
        "conv3/2 x2": 7,
        "conv3 dilation 2": 5,
        "conv3 dilations 1,2,4": 15,
        "conv5 x10 (6.3)": 41,
    }
    assert set(stacks) == set(expected)
    for name, size in expected.items():
        s = stacks[name]
        assert s["receptive_field"] == (size, size), name
        assert s["box"][2:] == (size, size), name  # the gradient's nonzero bounding box
        assert s["match"], name  # and it lies where the strides and paddings put it
        dense = name != "conv3 dilation 2"
        assert s["nonzero"] == (size * size if dense else 9), name
    assert "False" not in out


def test_receptive_field_placement():
    module = load("04_receptive_field")
    lenet = module.STACKS["LeNet encoder"]
    # Output (i, j) of LeNet's encoder sees input rows 4i - 2 .. 4i + 13 (padding 2, jump 4).
    assert module.predicted_field(lenet, 0) == (-2, 16)
    assert module.predicted_field(lenet, 3) == (10, 16)


# --------------------------------------------------------------------------- 6.3


def test_padding_and_stride(run, torch):
    res, out = run("05_padding_and_stride")
    assert res["chapter_shapes"] == [(8, 8), (8, 8), (4, 4), (2, 2)]
    for shape in ("(8, 8)", "(4, 4)", "(2, 2)"):
        assert shape in out
    assert res["mismatches"] == [] and len(res["grid"]) > 30
    for r in res["grid"]:  # PyTorch's conv gives the same output size for every row
        y = torch.nn.functional.conv2d(
            torch.zeros(1, 1, r["n"], r["n"]),
            torch.zeros(1, 1, r["k"], r["k"]),
            stride=r["s"],
            padding=r["p"],
            dilation=r["d"],
        )
        assert y.shape[2:] == (r["conv2d"], r["conv2d"]), r
    assert res["sides"][0] == [240 - 4 * i for i in range(11)]  # 240 -> 200
    assert res["sides"][2] == [240] * 11
    assert "240x240, 10 layers of 5x5, padding 0: (200, 200)" in out


# --------------------------------------------------------------------------- 6.4


def test_channels(run):
    res, out = run("06_channels")
    np.testing.assert_array_equal(res["multi_in"], [[56.0, 72.0], [104.0, 120.0]])
    assert res["K_shape"] == (3, 2, 2, 2)
    np.testing.assert_array_equal(res["multi_out"], [
        [[56.0, 72.0], [104.0, 120.0]],
        [[76.0, 100.0], [148.0, 172.0]],
        [[96.0, 128.0], [192.0, 224.0]],
    ])  # fmt: skip
    assert res["impl_diff"] < 1e-5
    assert res["conv1x1_sum_diff"] < 1e-6  # the chapter's assert
    assert "K.shape = (3, 2, 2, 2)" in out and "max |diff|" in out


# --------------------------------------------------------------------------- 6.5


def test_pooling_chapter_values_and_table(run):
    res, out = run("07_pooling")
    np.testing.assert_array_equal(res["pool2d_max"], [[4.0, 5.0], [7.0, 8.0]])
    np.testing.assert_array_equal(res["pool2d_avg"], [[2.0, 3.0], [5.0, 6.0]])
    assert res["library_diff"] == 0.0
    p = res["pooled"]
    np.testing.assert_array_equal(p["MaxPool2d(3)"], [[[[10.0]]]])
    np.testing.assert_array_equal(
        p["MaxPool2d(3, padding=1, stride=2)"], [[[[5.0, 7.0], [13.0, 15.0]]]]
    )
    np.testing.assert_array_equal(
        p["MaxPool2d((2, 3), stride=(2, 3), padding=(0, 1))"], [[[[5.0, 7.0], [13.0, 15.0]]]]
    )
    assert "[[[[10.]]]]" in out
    check_pooling_table_matches_pytorch(res, pytest.importorskip("torch"))  # torch last


def check_pooling_table_matches_pytorch(res: dict, torch) -> None:
    F = torch.nn.functional
    kinds = {5: (2, 2), 6: (3, 2)}
    assert len(res["variants"]) == 24
    for (n, op, padding, ceil_mode, include), value in res["variants"].items():
        k, s = kinds[n]
        x = torch.arange(n * n, dtype=torch.float32).reshape(1, 1, n, n)
        if op == "max":
            want = F.max_pool2d(x, k, s, padding, ceil_mode=ceil_mode)
        else:
            want = F.avg_pool2d(x, k, s, padding, ceil_mode=ceil_mode, count_include_pad=include)
        np.testing.assert_allclose(
            value, want[0, 0].numpy(), rtol=1e-6, err_msg=str((n, op, padding, ceil_mode, include))
        )
    # The table shows real differences: ceil_mode adds a row/column, count_include_pad
    # changes the border divisors.
    assert res["variants"][(6, "max", 1, True, None)].shape == (4, 4)
    assert res["variants"][(6, "max", 1, False, None)].shape == (3, 3)
    assert not np.allclose(
        res["variants"][(6, "avg", 1, True, True)], res["variants"][(6, "avg", 1, True, False)]
    )


# --------------------------------------------------------------------------- 6.6


@pytest.fixture(scope="session")
def lenet(run):
    from jaxconv.data import DataNotFoundError

    try:
        return run("08_lenet")
    except DataNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")


def test_lenet_summary_and_training(lenet):
    res, out = lenet
    assert [shape for _, shape in res["summary"]] == [
        (1, 6, 28, 28), (1, 6, 28, 28), (1, 6, 14, 14),
        (1, 16, 10, 10), (1, 16, 10, 10), (1, 16, 5, 5),
        (1, 400), (1, 120), (1, 120), (1, 84), (1, 84), (1, 10),
    ]  # fmt: skip
    assert "Conv2d output shape:    (1, 6, 28, 28)" in out
    assert res["n_params"] == 61_706
    assert len(res["history"]) == 1  # quick: one epoch
    final = res["final"]
    assert math.isfinite(final["train_loss"]) and math.isfinite(final["test_loss"])
    assert 0.0 <= final["train_acc"] <= 1.0 and 0.0 <= final["test_acc"] <= 1.0
    assert f"loss {final['train_loss']:.3f}, train acc {final['train_acc']:.3f}" in out
    assert res["kernels"].shape == (5, 5, 6)
    assert res["feature_shapes"] == [
        ("Conv2d+Sigmoid", (1, 28, 28, 6)), ("AvgPool2d", (1, 14, 14, 6)),
        ("Conv2d+Sigmoid", (1, 10, 10, 16)), ("AvgPool2d", (1, 5, 5, 16)),
    ]  # fmt: skip


# --------------------------------------------------------------------------- figures

FIGURES = {
    "01_cross_correlation": ["edge_detection.png"],
    "02_learning_a_kernel": ["learn_edge_kernel.png", "learn_2d_kernels.png"],
    "03_convolution_vs_correlation": ["conv_vs_corr.png"],
    "04_receptive_field": ["receptive_fields.png"],
    "05_padding_and_stride": ["padding_and_stride.png"],
    "06_channels": ["channels.png"],
    "07_pooling": ["pooling.png"],
    "08_lenet": ["lenet_features.png", "curves.png"],
}


def check_figures(name: str, res: dict) -> None:
    """The script's figures are the ones it should draw, each a real PNG of a drawn figure."""
    paths = [Path(p) for p in res["figures"]]
    assert sorted(p.name for p in paths) == sorted(FIGURES[name])
    for path in paths:
        width, height = png_size(path)
        assert width >= 300 and height >= 200, path
        assert path.stat().st_size > 10_000, path  # a drawn figure, not an empty canvas


def test_every_chapter_6_script_has_its_figures_listed():
    assert sorted(FIGURES) == [name for name in CHAPTER_6 if name != "00_from_dense_to_conv"]
