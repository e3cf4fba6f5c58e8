"""jaxconv.distributed: data-parallel training over devices and processes, on CPU.

The pytest process already runs JAX on one CPU device, and the device count is fixed when JAX
starts, so the parallel runs happen in fresh processes, started by the fixtures below with
this file as their script (``python tests/test_distributed.py <job> <dir>``):

- ``devices``: one process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` trains
  on 1, 2 and 4 devices, and stops runs on 1 device to resume them on 4 and the other way;
- ``host``: two processes joined by ``jax.distributed`` on 127.0.0.1 (gloo collectives), 2
  devices each, train one run together in one shared out_dir.

Every run: 256 training / 256 test examples of the real Fashion-MNIST, global batch 64 (4
steps an epoch), 2 epochs of Adam at a constant rate, seed 0. Device counts differ only in
the order of float32 sums. This process reads their checkpoints on its one device (CPU, or
a GPU where there is one), which no training run does: restore arrays saved over 4 devices
with no target to say where.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _xla_flags import with_host_devices

# Under ``pytest -n N --dist loadgroup`` every test here runs on one worker: the child jobs
# of the module-scoped fixtures run once, not once per worker that gets one of its tests.
pytestmark = pytest.mark.xdist_group("test_distributed")

N_TRAIN, N_TEST, BATCH, EPOCHS = 256, 256, 64, 2
# Params of runs on different device counts differ by float32 summation order only: by at
# most this fraction of how far training moved them from their init (measured: < 1e-4).
PARAMS_RTOL = 1e-3


# --------------------------------------------------------------------------- the child jobs


@functools.cache
def _dataset():
    """The runs' examples, read once per process (the devices job trains nine times)."""
    from jaxconv import data

    return data.subset(data.load_fashion_mnist(), N_TRAIN, N_TEST)


def _train(out_dir: Path, **overrides):
    from jaxconv.train import TrainConfig, fit

    # A constant rate: a run stopped by asking for fewer epochs must be the first part of the
    # longer one, which a cosine schedule (its length set by the epochs) would not be.
    settings = dict(
        epochs=EPOCHS, batch_size=BATCH, out_dir=out_dir, progress=False, plots=False,
        lr_schedule="constant",
    )  # fmt: skip
    return fit(TrainConfig(**{**settings, **overrides}), dataset=_dataset())


def _save(result, path: Path) -> None:
    """Params as ``<path>.npz`` (flat ``a/b`` names) and the history as ``<path>.json``."""
    import jax
    from flax.traverse_util import flatten_dict

    params = flatten_dict(jax.device_get(result.state.params), sep="/")
    np.savez(path.with_suffix(".npz"), **params)
    devices = len(result.state.params["conv1"]["kernel"].sharding.device_set)
    path.with_suffix(".json").write_text(
        json.dumps({"history": result.history, "devices": devices})
    )


def _cli(argv: list[str]) -> tuple[int, str]:
    from jaxconv.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


def job_devices(out: Path) -> None:
    # First, before JAX starts: multi-host flags that say too little fail clearly.
    results = {"cli_multihost": _cli(["train", "--process-id", "0", "--quiet"])}

    import jax
    from flax.traverse_util import flatten_dict

    from jaxconv import distributed
    from jaxconv.kernels.dispatch import compiler_options
    from jaxconv.models import LeNet
    from jaxconv.train import TrainConfig, TrainState, make_optimizer, train_epoch

    assert jax.device_count() == 4, jax.devices()
    for n in (1, 2, 4):
        _save(_train(out / f"d{n}", devices=n), out / f"d{n}")

    # The compiled 4-device epoch: per-device batch 16, the only collective an all-reduce.
    # The d4 run's program: its initial state, data, static arguments and compile options,
    # so that the compiled program is looked up, not compiled again.
    cfg = TrainConfig(lr_schedule="constant").resolved()
    mesh = distributed.make_mesh(4)
    model = LeNet(cfg.variant, conv_impl=cfg.conv_impl, layout=cfg.layout)
    state = TrainState.create(model, make_optimizer("adam"), cfg.seed)
    np.savez(out / "init.npz", **flatten_dict(jax.device_get(state.params), sep="/"))
    state = distributed.replicate(state, mesh)
    ds = _dataset()
    x, y = distributed.replicate((ds.train.images, ds.train.labels), mesh)
    hlo = (
        train_epoch.lower(
            state, x, y, batch_size=BATCH, unroll=cfg.scan_unroll,
            batch_sharding=distributed.batch_sharding(mesh),
        )
        .compile(compiler_options())
        .as_text()
    )  # fmt: skip
    results["collectives"] = sorted(
        set(re.findall(r"\b(all-reduce|all-gather|all-to-all|reduce-scatter|collective-permute)"
                       r"(?:-start)?\(", hlo))
    )  # fmt: skip
    # conv1's output, (B, 28, 28, 6) in NHWC, (6, 28, 28, B) in CHWN: its batch sizes B.
    conv1 = r"f32\[(\d+),28,28,6\]" if cfg.layout == "NHWC" else r"f32\[6,28,28,(\d+)\]"
    results["conv1_batches"] = sorted(set(re.findall(conv1, hlo)))

    # Stop after epoch 1 on 1 device, resume on 4; and the other way.
    for first, then in ((1, 4), (4, 1)):
        run = out / f"from{first}"
        _save(_train(run, devices=first, epochs=1), out / f"from{first}-epoch1")
        _save(_train(run, devices=then, resume=True), run)

    try:
        _train(out / "bad", devices=4, batch_size=66)
    except ValueError as err:
        results["fit_indivisible"] = str(err)
    results["cli_indivisible"] = _cli(
        ["train", "--devices", "3", "--batch-size", "64", "--out-dir", str(out / "bad"),
         "--train-subset", str(N_TRAIN), "--quiet"]
    )  # fmt: skip
    # The settings of the d2 run above (the constant rate too): the CLI's run reuses its
    # compiled epoch and evaluation.
    results["cli_two_devices"] = _cli(
        ["train", "--devices", "2", "--epochs", "1", "--batch-size", str(BATCH),
         "--train-subset", str(N_TRAIN), "--test-subset", str(N_TEST), "--lr-schedule",
         "constant", "--out-dir", str(out / "cli"), "--quiet"]
    )  # fmt: skip
    (out / "devices.json").write_text(json.dumps(results))


def job_host(out: Path, port: str, process_id: str) -> None:
    from jaxconv import distributed

    distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id), initialization_timeout=60)
    import jax

    result = _train(out / "hosts")  # one out_dir for both, as on a shared file system
    _save(result, out / f"host{process_id}")
    info = {
        "devices": jax.device_count(),
        "local": jax.local_device_count(),
        "two_of_four": [d.process_index for d in distributed.mesh_devices(2)],  # 1 per process
    }
    try:
        distributed.mesh_devices(3)
    except ValueError as err:
        info["three_of_four"] = str(err)
    (out / f"host{process_id}.info.json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- fixtures


# What JAX's cluster detection reads: a test run inside a Slurm job (say) must not join it.
_CLUSTER_VARS = ("SLURM_", "OMPI_", "PMI_", "KUBERNETES_", "TPU_", "JAX_COORDINATOR_")


def _env(devices: int) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(_CLUSTER_VARS)},
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": with_host_devices(os.environ, devices),
        "PYTHONUNBUFFERED": "1",
    }


def _start(args: list[str], devices: int, log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, __file__, *args], stdout=f, stderr=subprocess.STDOUT, env=_env(devices)
        )


def _finish(procs: list[subprocess.Popen], logs: list[Path], timeout: float) -> None:
    """Wait for every child (bounded); on a failure or timeout, kill them all and show logs."""
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if codes is None or any(codes):
        tails = "\n".join(f"--- {log.name}:\n{log.read_text()[-3000:]}" for log in logs)
        pytest.fail(f"child processes {'timed out' if codes is None else codes}:\n{tails}")


@pytest.fixture(scope="module")
def ds():
    from jaxconv import data

    try:
        return _dataset()
    except data.DataNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")


@pytest.fixture(scope="module")
def four_devices(ds, tmp_path_factory) -> Path:
    """The ``devices`` job's folder."""
    out = tmp_path_factory.mktemp("devices")
    log = out / "devices.log"
    _finish([_start(["devices", str(out)], 4, log)], [log], timeout=300)
    return out


@pytest.fixture(scope="module")
def two_hosts(ds, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hosts")
    with socket.socket() as s:  # a free port for the coordinator
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    logs = [out / f"host{i}.log" for i in range(2)]
    procs = [_start(["host", str(out), port, str(i)], 2, logs[i]) for i in range(2)]
    _finish(procs, logs, timeout=240)
    return out


def _params(path: Path) -> dict[str, np.ndarray]:
    with np.load(path.with_suffix(".npz")) as f:
        return dict(f)


def _history(path: Path) -> list[dict]:
    return json.loads(path.with_suffix(".json").read_text())["history"]


def _numbers(history: list[dict]) -> list[dict]:
    """A history without its timings."""
    keys = ("epoch", "step", "train_loss", "train_acc", "test_loss", "test_acc")
    return [{k: r[k] for k in keys} for r in history]


def assert_params_close(a: dict, b: dict, init: dict) -> None:
    """Each leaf of ``a`` is ``b`` up to ``PARAMS_RTOL`` times how far ``b`` moved from ``init``:
    the same training, summed in another order (another batch order, or a gradient summed
    rather than averaged, moves them apart by as much as training moves them)."""
    assert a.keys() == b.keys() == init.keys() and len(a) == 10
    for name in a:
        moved = np.abs(b[name] - init[name]).max()
        assert moved > 1e-3, name  # it trained
        assert np.abs(a[name] - b[name]).max() <= PARAMS_RTOL * moved, name


# --------------------------------------------------------------------------- tests


def test_1_2_4_devices_give_the_same_losses_and_params(four_devices):
    runs = {n: four_devices / f"d{n}" for n in (1, 2, 4)}
    for n, run in runs.items():  # fit put the state on n devices
        assert json.loads(run.with_suffix(".json").read_text())["devices"] == n
    one = _history(runs[1])
    assert one[-1]["train_loss"] < one[0]["train_loss"] < 2.4  # it learns
    for n in (2, 4):
        history = _history(runs[n])
        assert [r["step"] for r in history] == [4, 8]  # 256 // 64 global batches an epoch
        for key in ("train_loss", "test_loss"):
            np.testing.assert_allclose(
                [r[key] for r in history], [r[key] for r in one], rtol=1e-5, err_msg=key
            )
        for key in ("train_acc", "test_acc"):  # within one example
            np.testing.assert_allclose(
                [r[key] for r in history], [r[key] for r in one], atol=2 / N_TEST
            )
        assert_params_close(_params(runs[n]), _params(runs[1]), _params(four_devices / "init"))


def test_the_epoch_splits_each_batch_and_only_all_reduces(four_devices):
    """The data set is replicated and shuffled globally; each device gathers its own 16 rows
    of every batch of 64, with no data moved between devices: XLA adds one collective, the
    all-reduce of gradients and metrics."""
    results = json.loads((four_devices / "devices.json").read_text())
    assert results["collectives"] == ["all-reduce"]
    assert results["conv1_batches"] == [str(BATCH // 4)]


def _assert_evaluates_as_saved(checkpoint: Path, record: dict, ds) -> None:
    """This process (one device) reads the checkpoint and finds the test metrics of its run."""
    from jaxconv.train import evaluate_checkpoint

    evaluated = evaluate_checkpoint(checkpoint, dataset=ds)
    assert evaluated["epoch"] == record["epoch"]
    assert evaluated["test_loss"] == pytest.approx(record["test_loss"], rel=1e-5)
    assert evaluated["test_acc"] == pytest.approx(record["test_acc"], abs=1.5 / N_TEST)


def test_a_checkpoint_moves_between_device_counts(four_devices, ds):
    uninterrupted = _params(four_devices / "d1")
    for first, then in ((1, 4), (4, 1)):
        stopped, resumed = four_devices / f"from{first}-epoch1", four_devices / f"from{first}"
        assert json.loads(stopped.with_suffix(".json").read_text())["devices"] == first
        assert json.loads(resumed.with_suffix(".json").read_text())["devices"] == then
        assert _numbers(_history(resumed))[0] == _numbers(_history(stopped))[0]  # kept, not redone
        assert_params_close(_params(resumed), uninterrupted, _params(four_devices / "init"))
    _assert_evaluates_as_saved(
        four_devices / "from4" / "checkpoints" / "1", _history(four_devices / "from4")[0], ds
    )


def test_two_processes_end_with_the_single_process_params(two_hosts, four_devices, ds):
    info = [json.loads((two_hosts / f"host{i}.info.json").read_text()) for i in range(2)]
    uneven = "devices 3 does not divide evenly among the 2 processes"
    for i in range(2):
        assert info[i]["three_of_four"].startswith(uneven)
        del info[i]["three_of_four"]
    assert info == [{"devices": 4, "local": 2, "two_of_four": [0, 1]}] * 2
    assert json.loads((two_hosts / "host0.json").read_text())["devices"] == 4
    p0, p1 = _params(two_hosts / "host0"), _params(two_hosts / "host1")
    for name in p0:  # one all-reduce: the same numbers on both
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
    assert_params_close(p0, _params(four_devices / "d1"), _params(four_devices / "init"))
    assert _numbers(_history(two_hosts / "host0")) == _numbers(_history(two_hosts / "host1"))

    from jaxconv.metrics import METRICS_FILE, read_metrics

    run = two_hosts / "hosts"
    assert read_metrics(run / METRICS_FILE) == _history(two_hosts / "host0")  # process 0's only
    _assert_evaluates_as_saved(run, _history(two_hosts / "host0")[-1], ds)


def test_batch_size_must_divide_by_the_device_count(four_devices):
    from jaxconv.distributed import check_batch_size

    results = json.loads((four_devices / "devices.json").read_text())
    message = results["fit_indivisible"]
    assert message.startswith("batch_size 66 does not divide evenly by the 4 devices")
    assert "e.g. 64 or 68" in message
    status, err = results["cli_indivisible"]
    assert err.startswith("jaxconv: error: --batch-size 64 does not divide evenly by the 3 devices")
    assert status == 2 and "Traceback" not in err
    assert results["cli_two_devices"][0] == 0
    assert (four_devices / "cli" / "checkpoints" / "1").is_dir()

    assert check_batch_size(256, 8) == 256
    with pytest.raises(ValueError, match=r"^batch_size 100 does not divide evenly by the 8 "):
        check_batch_size(100, 8)
    with pytest.raises(ValueError, match=r"use a multiple of 8, e.g. 8$"):
        check_batch_size(4, 8)


def test_bad_device_and_host_settings_are_named(ds, four_devices, tmp_path):
    import jax

    from jaxconv import distributed
    from jaxconv.train import TrainConfig

    status, err = json.loads((four_devices / "devices.json").read_text())["cli_multihost"]
    assert status == 2 and "--coordinator-address" in err and "Traceback" not in err

    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"^devices is {n + 1}, but there are only"):
        _train(tmp_path, devices=n + 1)
    with pytest.raises(ValueError, match="devices must be a positive int"):
        TrainConfig(devices=0).resolved()
    assert distributed.make_mesh().size == n and distributed.make_mesh(1).axis_names == ("batch",)
    for kwargs, message in [
        (dict(num_processes=0), r"^num_processes must be >= 1"),
        (dict(num_processes=2, process_id=2), r"^process_id must be in 0\.\.1"),
        (dict(coordinator_address="10.0.0.1"), r"^coordinator_address must be 'host:port'"),
    ]:
        with pytest.raises(ValueError, match=message):
            distributed.initialize(**kwargs)


if __name__ == "__main__":  # a child job: python tests/test_distributed.py <job> <dir> [args]
    {"devices": job_devices, "host": job_host}[sys.argv[1]](Path(sys.argv[2]), *sys.argv[3:])
