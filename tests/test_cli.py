"""The ``jaxconv`` command: train, evaluate, demo; errors exit 2 with one line, no traceback."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxconv import data, metrics
from jaxconv.cli import build_parser, main
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
    assert "over 1 epoch;" in stdout  # not "1 epochs"
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

    # the same out-dir again without --resume: the message names the flags to use
    assert main(["train", "--epochs", "1", "--out-dir", str(out), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "pass --resume to continue that run, or choose another --out-dir" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--variant", "lenet5"], "invalid choice: 'lenet5'"),
        (["train", "--optimizer", "adamax9"], "invalid choice: 'adamax9'"),
        (["train", "--layout", "NCHW"], "--layout must be one of ('NHWC', 'CHWN') for lenet"),
        (["train", "--epochs", "two"], "invalid int value: 'two'"),
        (["train", "--conv-impl", "fft"], "argument --conv-impl: invalid choice: 'fft'"),
        (["train", "--epochs", "0"], "--epochs must be a positive int"),
        (["train", "--batch-size", "0"], "--batch-size must be a positive int"),
        (["train", "--batch-size", "-8"], "--batch-size must be a positive int"),
        (["train", "--lr", "0"], "--lr must be a finite number > 0"),
        (["train", "--lr", "-0.5"], "--lr must be a finite number > 0"),
        (["train", "--seed", "-1"], "--seed must be in 0..2**31-1"),
        (["train", "--train-subset", "0"], "--train-subset must be a positive int"),
        (["train", "--test-subset", "0"], "--test-subset must be a positive int"),
        (["train", "--devices", "0"], "--devices must be a positive int"),
        (["train", "--num-processes", "0"], "--num-processes must be >= 1, got 0"),
        (["train", "--process-id", "-1"], "--process-id must be >= 0, got -1"),
        (["train", "--coordinator-address", "here"], "--coordinator-address must be 'host:port'"),
        (
            ["train", "--train-subset", "100000", "--out-dir", "{tmp}/r"],
            "--train-subset must be in 1..60000, got 100000",
        ),
        (
            ["train", "--test-subset", "20000", "--out-dir", "{tmp}/r"],
            "--test-subset must be in 1..10000, got 20000",
        ),
        (
            ["train", "--train-subset", "512", "--batch-size", "1024", "--out-dir", "{tmp}/r"],
            "--batch-size 1024 is larger than the 512 training examples",
        ),
        (
            ["train", "--data-dir", "{tmp}/no-data", "--out-dir", "{tmp}/r"],
            "--data-dir '{tmp}/no-data': ",
        ),
        (["train", "--out-dir", "{tmp}/a-file/run"], "--out-dir '{tmp}/a-file/run' is not a"),
        (["evaluate", "--checkpoint", "{tmp}/nowhere"], "--checkpoint '{tmp}/nowhere' is not a"),
        (["evaluate", "--checkpoint", "{tmp}"], "--checkpoint: no checkpoint in"),
        (["evaluate", "--checkpoint", "{tmp}", "--batch-size", "0"], "--batch-size must be"),
        (["evaluate"], "the following arguments are required: --checkpoint"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
def test_bad_input_exits_2_with_one_message(argv, message, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "jaxconv" in err and "error: " in err and message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err
    assert "_" not in err.split("error: ", 1)[1].split()[0]  # a flag, never a Python name
    assert not (tmp_path / "r").exists()  # a failed start leaves no out-dir


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file: zero, zero, dtype 0x08 (uint8), rank, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_data_that_fails_its_digest_names_no_verify(tmp_path, capsys):
    # QUICK's sizes (the whole files: no subset flags) and one epoch, as test_train_then_evaluate
    # trains: the run reuses that epoch's and evaluation's compiled programs.
    rng = np.random.default_rng(0)
    for split, n in (("train", 512), ("test", 256)):
        images_name, labels_name = data.IDX_FILES[split]
        _write_idx(tmp_path / images_name, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / labels_name, rng.integers(0, 10, (n,)))
    argv = ["train", "--data-dir", str(tmp_path), "--out-dir", str(tmp_path / "r"), *QUICK[4:]]
    assert main([*argv, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "does not match the expected" in err and "pass --no-verify for data you trust" in err
    assert "verify=False" not in err and not (tmp_path / "r").exists()
    assert main([*argv, "--epochs", "1", "--no-verify"]) == 0
    assert (tmp_path / "r" / METRICS_FILE).exists()


def test_tensorboard_without_a_writer_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(metrics, "_summary_writer_class", lambda: None)
    assert main(["train", "--tensorboard", "--out-dir", str(tmp_path / "r"), *QUICK]) == 2
    assert "error: --tensorboard needs tensorboardX" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_train_help_shows_every_flag_with_help_and_defaults(capsys):
    assert main(["train", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    out = out.split(" options: ", 1)[1]  # past the usage line
    train = next(
        action.choices["train"]
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    )
    for action in train._actions:
        assert action.help, action.option_strings  # every flag says what it does
    for flag, default in (("--seed", 0), ("--epochs", 10), ("--variant", "modern"),
                          ("--model", "lenet")):  # fmt: skip
        assert f"(default: {default})" in out.split(flag + " ", 1)[1].split(" --", 1)[0], flag
    for flag, default in (("--batch-size", "lenet 256"), ("--optimizer", "lenet adam")):
        assert f"(default: the model's: {default}" in out.split(flag + " ", 1)[1], flag
    lr_help = out.split("--lr LR ", 1)[1].split(" --lr-schedule", 1)[0]
    assert "constant" in lr_help and "cosine" in lr_help and "adam 0.003" in lr_help


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
    assert "train 256, test 128" in proc.stderr  # the sizes used, not the whole set's
    assert (tmp_path / "run" / "checkpoints" / "1").is_dir()
