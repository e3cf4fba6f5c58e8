"""The ``jaxconv`` command: train, evaluate, demo; errors exit 2 with one line, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jaxconv import data
from jaxconv.cli import main
from jaxconv.metrics import CURVES_FILE, METRICS_FILE, read_metrics

QUICK = ["--train-subset", "512", "--test-subset", "256", "--batch-size", "64", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def _needs_data():
    try:
        data.load_fashion_mnist()
    except data.DataNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out-dir", str(out), *QUICK]) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith("epoch 1: train loss ") and "test acc" in stdout
    assert (out / METRICS_FILE).exists() and (out / CURVES_FILE).exists()
    (record,) = read_metrics(out / METRICS_FILE)

    assert main(["evaluate", "--checkpoint", str(out), "--test-subset", "256", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["epoch"] == 1 and result["variant"] == "modern" and result["examples"] == 256
    # same params, same data (training evaluates in its layout, CHWN on CPU; evaluate in
    # the model's NHWC: the same function up to float32 rounding, the same predictions)
    assert result["test_acc"] == record["test_acc"]

    assert (
        main(["evaluate", "--checkpoint", str(out / "checkpoints" / "1"), "--test-subset", "256"])
        == 0
    )
    assert f"test acc {record['test_acc']:.4f} on 256 examples" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--variant", "lenet5"], "invalid choice: 'lenet5'"),
        (["train", "--optimizer", "adamax9"], "invalid choice: 'adamax9'"),
        (["train", "--layout", "NCHW"], "invalid choice: 'NCHW'"),
        (["train", "--epochs", "two"], "invalid int value: 'two'"),
        (["train", "--epochs", "0"], "epochs must be a positive int"),
        (["train", "--batch-size", "0"], "batch_size must be a positive int"),
        (["train", "--batch-size", "-8"], "batch_size must be a positive int"),
        (["train", "--lr", "0"], "learning_rate must be a finite number > 0"),
        (["train", "--lr", "-0.5"], "learning_rate must be a finite number > 0"),
        (
            ["train", "--train-subset", "512", "--batch-size", "1024", "--out-dir", "{tmp}/r"],
            "batch_size 1024 is larger than the 512 training examples",
        ),
        (["train", "--out-dir", "{tmp}/a-file/run"], "is not a writable directory"),
        (["evaluate", "--checkpoint", "{tmp}/nowhere"], "is not a directory"),
        (["evaluate", "--checkpoint", "{tmp}"], "no checkpoint in"),
        (["evaluate"], "the following arguments are required: --checkpoint"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_with_one_message(argv, message, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "jaxconv" in err and "error: " in err and message in err
    assert "Traceback" not in err


def test_divergence_exits_1_and_says_why(tmp_path, capsys):
    argv = ["train", "--optimizer", "sgd", "--lr", "1e30", "--out-dir", str(tmp_path), *QUICK]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("jaxconv: error: training diverged: epoch 1's train loss is nan")
    assert "Traceback" not in err


def test_demo_prints_the_chapter_examples(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "[[19. 25.]\n [37. 43.]]" in out  # corr2d(X, K) of 6.2.1
    assert "[[4. 5.]\n [7. 8.]]" in out and "[[2. 3.]\n [5. 6.]]" in out  # 6.5 max, avg
    assert "horizontal edges are not seen): True" in out
    assert "Linear output shape:" in out and "(1, 16, 5, 5)" in out


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_console_script_smoke(tmp_path):
    """The installed ``jaxconv`` script (else ``python -m jaxconv.cli``) in a fresh process."""
    script = Path(sys.executable).with_name("jaxconv")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "jaxconv.cli"]
    argv = [
        "train",
        "--epochs",
        "1",
        "--train-subset",
        "256",
        "--test-subset",
        "128",
        "--batch-size",
        "64",
        "--out-dir",
        str(tmp_path / "run"),
    ]
    proc = subprocess.run(
        cmd + argv,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("epoch 1: ")
    assert "jaxconv: Fashion-MNIST from" in proc.stderr  # log lines once, with our prefix
    assert proc.stderr.count("Fashion-MNIST from") == 1
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()
