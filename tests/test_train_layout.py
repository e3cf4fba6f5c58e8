"""``TrainConfig.layout`` / ``jaxconv train --layout`` for every model.

LeNet keeps its activation layouts (NHWC, CHWN); a chapter-7 network trains in NCHW or NHWC
(channels last, conv weights stored HWIO), NHWC by default on CPU. A layout the model cannot
take is refused naming the setting (``--layout`` at the command line) before anything is
written; the two network layouts train the same function from the same seed; a checkpoint
records its network's layout, evaluates in it, and refuses to resume in the other.
"""

from __future__ import annotations

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import data
from jaxconv.checkpoint import CHECKPOINT_DIR, CheckpointError, Checkpoints
from jaxconv.cli import main
from jaxconv.config import saved_network_layout
from jaxconv.convert import to_torch
from jaxconv.kernels.dispatch import default_layout, default_network_layout
from jaxconv.recipes import build_network
from jaxconv.steps import model_input
from jaxconv.train import TrainConfig, evaluate_checkpoint, fit

N_TRAIN, N_TEST, BATCH = 32, 16, 16


@pytest.fixture(scope="module")
def ds():
    try:
        full = data.load_fashion_mnist()
    except data.DataNotFoundError as err:
        pytest.skip(f"Fashion-MNIST not installed: {err}")
    return data.subset(full, N_TRAIN, N_TEST)


def run(ds, out_dir, **overrides):
    settings = dict(
        model="lenet_bn", epochs=1, batch_size=BATCH, out_dir=out_dir, progress=False, plots=False
    )
    return fit(TrainConfig(**{**settings, **overrides}), dataset=ds)


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "model, layout, want",
    [
        ("lenet", None, default_layout()),
        ("lenet", "NHWC", "NHWC"),
        ("lenet", "CHWN", "CHWN"),
        ("resnet18", None, default_network_layout()),
        ("resnet18", "NCHW", "NCHW"),
        ("densenet", "NHWC", "NHWC"),
    ],
)
def test_layout_resolution(model, layout, want):
    cfg = TrainConfig(model=model, layout=layout).resolved()
    assert cfg.layout == want
    assert cfg.meta()["network_layout"] == (None if model == "lenet" else want)
    assert cfg.resolved() == cfg


def test_default_network_layout_per_backend():
    assert default_network_layout("cpu") == "NHWC"
    assert default_network_layout("gpu") == "NCHW"


@pytest.mark.parametrize(
    "model, layout",
    [("resnet18", "CHWN"), ("lenet", "NCHW"), ("vgg11", "nhwc"), ("lenet_bn", 3)],
)
def test_a_layout_the_model_cannot_take_is_refused(tmp_path, model, layout):
    with pytest.raises(ValueError, match=f"layout must be one of .* for {model}"):
        fit(TrainConfig(model=model, layout=layout, out_dir=tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cli_names_the_layout_flag():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", "--model", "resnet18", "--layout", "CHWN", "--quiet"])
    assert status == 2
    assert "--layout must be one of ('NCHW', 'NHWC') for resnet18, got 'CHWN'" in err.getvalue()


def test_saved_network_layout():
    """A network checkpoint written before networks had a layout was NCHW, whatever its
    ``layout`` field (LeNet's setting) says; LeNet has none."""
    assert saved_network_layout({"model": "resnet18", "layout": "CHWN"}) == "NCHW"
    assert saved_network_layout({"model": "resnet18", "layout": "NHWC"}) == "NCHW"
    assert saved_network_layout({"model": "resnet18", "network_layout": "NHWC"}) == "NHWC"
    assert saved_network_layout({"model": "LeNet", "layout": "CHWN"}) is None


@pytest.mark.parametrize("size", [28, 40])
def test_model_input_in_each_layout(size):
    """The NHWC network's batch is the NCHW one's, channels moved last."""
    images = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    first = model_input(build_network("resnet18", size, "NCHW"), images)
    last = model_input(build_network("resnet18", size, "NHWC"), images)
    assert first.shape == (3, 1, size, size) and last.shape == (3, size, size, 1)
    np.testing.assert_array_equal(last, np.moveaxis(np.asarray(first), 1, -1))


# --------------------------------------------------------------------------- training


def test_both_layouts_train_the_same_network(ds, tmp_path):
    """lenet_bn from one seed, one epoch of two SGD steps, in NCHW and NHWC: the same initial
    draw, the same losses and, in torch's order, the same parameters and statistics (up to
    float32 rounding). Resumed with layout=None, the NCHW run continues in NCHW (its
    checkpoint's layout), not in the backend's default."""
    a = run(ds, tmp_path / "nchw", layout="NCHW")
    b = run(ds, tmp_path / "nhwc", layout="NHWC")
    assert a.state.params["0"]["weight"].shape == (6, 1, 5, 5)
    assert b.state.params["0"]["weight"].shape == (5, 5, 1, 6)
    for key in ("train_loss", "test_loss"):
        np.testing.assert_allclose(a.history[0][key], b.history[0][key], rtol=1e-4)
    sd_a, sd_b = (
        to_torch(r.state.model, {"params": r.state.params, "batch_stats": r.state.batch_stats})
        for r in (a, b)
    )
    assert sd_a.keys() == sd_b.keys()
    for k in sd_a:
        np.testing.assert_allclose(sd_a[k].numpy(), sd_b[k].numpy(), rtol=1e-3, atol=1e-5)

    resumed = run(ds, tmp_path / "nchw", layout=None, epochs=2, resume=True)
    assert resumed.epochs_trained == 1
    assert resumed.state.params["0"]["weight"].shape == (6, 1, 5, 5)
    with Checkpoints(tmp_path / "nchw" / CHECKPOINT_DIR, read_only=True) as ckpts:
        assert ckpts.read_meta()["network_layout"] == "NCHW"


def test_checkpoint_records_layout_evaluates_in_it_and_refuses_the_other(ds, tmp_path):
    out = tmp_path / "run"
    result = run(ds, out, layout="NHWC")
    with Checkpoints(out / CHECKPOINT_DIR, read_only=True) as ckpts:
        meta = ckpts.read_meta()
    assert meta["network_layout"] == "NHWC" and meta["layout"] == "NHWC"
    evaluated = evaluate_checkpoint(out, dataset=ds)
    np.testing.assert_allclose(evaluated["test_loss"], result.history[-1]["test_loss"], rtol=1e-6)

    before = sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir())
    with pytest.raises(CheckpointError, match="NHWC lenet_bn .* pass layout='NHWC'"):
        run(ds, out, layout="NCHW", epochs=2, resume=True)
    # refused before any restore: the checkpoint is neither touched nor quarantined
    assert sorted(p.name for p in (out / CHECKPOINT_DIR).iterdir()) == before

    resumed = run(ds, out, layout="NHWC", epochs=2, resume=True)
    assert resumed.epochs_trained == 1 and int(resumed.state.epoch) == 2
    assert (
        jax.tree.leaves(resumed.state.params)[0].shape
        == jax.tree.leaves(result.state.params)[0].shape
    )
