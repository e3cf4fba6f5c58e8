"""``jaxconv train --model NAME``: the chapter-7 networks through jaxconv.train.

Every network trains one epoch on a tiny subset of the real Fashion-MNIST at the smallest
image size it accepts (its recipe's ``min_size``); the recipes table is checked against the
book's numbers and against the networks' own flatten and pool arithmetic; a batch-norm run
resumes bit-identically and trains alike on 1 and 2 devices.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _runs import check_one_epoch_checkpoint, dataset_fixture, fit_quietly
from _xla_flags import with_host_devices

from jaxconv import data, networks
from jaxconv.cli import main
from jaxconv.recipes import RECIPES, build_network
from jaxconv.steps import model_input
from jaxconv.train import TrainConfig, fit

N_TRAIN, N_TEST, BATCH = 32, 16, 16
ds = dataset_fixture(64, 32)
# Module fixtures (the data, the two-device child): with `--dist loadgroup` (pyproject's
# addopts) one worker runs this file and builds each once.
pytestmark = pytest.mark.xdist_group("test_train_models")


def run(ds, out_dir, n_train=N_TRAIN, n_test=N_TEST, **overrides):
    settings = {"epochs": 1, "batch_size": BATCH, **overrides}
    return fit_quietly(data.subset(ds, n_train, n_test), out_dir, **settings)


def leaves_equal(a, b) -> None:
    chex.assert_trees_all_equal(jax.device_get(a), jax.device_get(b))


# --------------------------------------------------------------------------- the table


def test_recipes_are_the_books():
    book = {  # d2l 7.x: lr, batch size, resize (SGD, 10 epochs, constant rate)
        "alexnet": (0.01, 128, 224),
        "vgg11": (0.05, 128, 224),
        "vgg11_small": (0.05, 128, 224),
        "nin": (0.1, 128, 224),
        "googlenet": (0.1, 128, 96),
        "lenet_bn": (1.0, 256, 28),
        "resnet18": (0.05, 256, 96),
        "densenet": (0.1, 256, 96),
    }
    assert set(RECIPES) == {"lenet", *book}
    for name, (lr, batch, size) in book.items():
        cfg = TrainConfig(model=name).resolved()
        got = (cfg.optimizer, cfg.learning_rate, cfg.batch_size, cfg.image_size, cfg.epochs)
        assert got == ("sgd", lr, batch, size, 10), name
        assert cfg.lr_schedule == "constant" and str(cfg.out_dir) == f"runs/{name}"
        assert cfg.meta()["model"] == name and cfg.meta()["image_size"] == size
    # LeNet keeps its defaults: Adam 3e-3 cosine (modern), SGD 0.9 constant (classic)
    lenet = TrainConfig().resolved()
    assert (lenet.model, lenet.optimizer, lenet.learning_rate, lenet.batch_size) == (
        "lenet", "adam", 3e-3, 256,
    )  # fmt: skip
    assert lenet.lr_schedule == "cosine" and lenet.meta()["model"] == "LeNet"
    # The model's rate goes with its optimizer; another optimizer takes its own default
    assert TrainConfig(model="resnet18", optimizer="adam").resolved().learning_rate == 3e-3
    assert TrainConfig(model="resnet18", optimizer="sgd").resolved().learning_rate == 0.05
    assert TrainConfig(model="resnet18", learning_rate=0.2).resolved().learning_rate == 0.2
    # vgg11_small is the book's quarter-width VGG-11
    small = build_network("vgg11_small", 224)
    assert small == networks.vgg11(conv_arch=networks.VGG11_SMALL).clone(
        example_input_shape=(1, 1, 224, 224)
    )


# name -> (smallest, largest) input side, as the networks' docstrings state them
DOCUMENTED_SIZES = {
    "alexnet": (193, 224),
    "vgg11": (224, 255),
    "vgg11_small": (224, 255),
    "nin": (67, None),
    "googlenet": (1, None),
    "lenet_bn": (28, 31),
    "resnet18": (1, None),
    "densenet": (29, None),
}


@pytest.mark.parametrize("name", [n for n in RECIPES if n != "lenet"])
def test_image_size_limits_are_the_networks(name):
    """min_size and max_size are the sizes the docstrings state, and where the network starts
    and stops accepting input: inside accepted, outside a ValueError."""
    recipe = RECIPES[name]
    assert (recipe.min_size, recipe.max_size) == DOCUMENTED_SIZES[name]
    model = build_network(name, recipe.image_size)

    def trace(size):
        shape = jax.ShapeDtypeStruct((2, 1, size, size), jnp.float32)
        return jax.eval_shape(model.init, jax.random.key(0), shape)

    trace(recipe.min_size)
    trace(recipe.image_size)
    if recipe.min_size > 1:
        with pytest.raises(ValueError):
            trace(recipe.min_size - 1)
    if recipe.max_size is not None:
        trace(recipe.max_size)
        with pytest.raises(ValueError):
            trace(recipe.max_size + 1)


def cli_error(argv):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    return status, err.getvalue()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "resnet"}, r"model must be one of \('lenet', 'alexnet'"),
        ({"model": "alexnet", "image_size": 96}, r"image_size must be 193..224 for alexnet"),
        ({"model": "alexnet", "image_size": 225}, r"image_size must be 193..224 .* got 225"),
        ({"model": "nin", "image_size": 28}, r"at least 67 .* smallest accepted is 67, got 28"),
        ({"model": "densenet", "image_size": 0}, "smallest accepted is 29"),
        ({"model": "lenet", "image_size": 96}, "image_size must be 28 for lenet"),
        ({"model": "lenet_bn", "image_size": 2.5}, "image_size"),
    ],
)
def test_bad_model_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fit(TrainConfig(out_dir=tmp_path / "run", **overrides))
    assert not (tmp_path / "run").exists()


def test_cli_names_the_flags(tmp_path):
    status, err = cli_error(["train", "--model", "nin", "--image-size", "28", "--quiet"])
    assert status == 2
    assert "--image-size must be at least 67 for nin" in err and "smallest accepted is 67" in err
    status, err = cli_error(["train", "--model", "resnet"])
    assert status == 2 and "--model" in err and "invalid choice" in err


def test_images_are_resized_as_torch_resizes(torch):
    """Bilinear with half-pixel centres (torchvision's Resize on an upsampled image) after
    x / 255 (ToTensor), NCHW."""
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    for size in (28, 67, 96):
        x = np.asarray(model_input(build_network("densenet", 96).clone(
            example_input_shape=(1, 1, size, size)), jnp.asarray(images)))  # fmt: skip
        ref = torch.nn.functional.interpolate(
            torch.from_numpy(images.astype(np.float64) / 255)[:, None],
            size=(size, size),
            mode="bilinear",
            align_corners=False,
        ).numpy()
        assert x.shape == (3, 1, size, size) and x.dtype == np.float32
        np.testing.assert_allclose(x, ref, atol=5e-6)  # float32 weights; a half-pixel shift is ~0.1


# --------------------------------------------------------------------------- training


# name -> (training examples, batch, test examples). A one-epoch run checks that the network
# trains, saves and evaluates, which needs no more data than a step: AlexNet (46M parameters
# at 193 px) takes two steps of 2, so that its dropout draws a new mask per step and the
# repeat below compares two steps' keys; full-width VGG-11 (129M parameters at 224 px) one
# step of one image. LeNet takes two steps of 16.
_TINY = {"lenet": (N_TRAIN, BATCH, 4), "alexnet": (4, 2, 2), "vgg11": (1, 1, 1)}

#: The networks trained here. The others train one epoch in their chapter-7 script's quick
#: run, where test_experiments_ch7 checks the same (checkpoint, batch statistics, evaluation).
ONE_EPOCH = ("lenet", "alexnet", "vgg11")


def test_every_model_trains_one_epoch_here_or_in_its_script():
    from test_experiments_ch7 import TRAINS

    assert sorted({*ONE_EPOCH, *(model for model, _ in TRAINS.values())}) == sorted(RECIPES)


@pytest.mark.parametrize("name", ONE_EPOCH)
def test_one_epoch_at_the_smallest_size(ds, tmp_path, name):
    """Trains, checkpoints the whole state and evaluates the checkpoint to the run's own test
    numbers; AlexNet's dropout masks come from the state's key: the same seed repeats the run
    bit for bit."""
    n_train, batch, n_test = _TINY[name]
    size = RECIPES[name].min_size
    out = tmp_path / name
    settings = dict(
        model=name, image_size=size, n_train=n_train, n_test=n_test, batch_size=batch,
        max_checkpoints=1,  # the free-space check asks room for this many (VGG-11: 0.5 GB each)
    )  # fmt: skip
    result = run(ds, out, **settings)
    record = result.history[-1]
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["test_loss"])
    assert int(result.state.step) == n_train // batch
    saved = check_one_epoch_checkpoint(out, name, size, n_train // batch, result.history, n_test)
    leaves_equal(saved["params"], jax.device_get(result.state.params))
    shutil.rmtree(out)  # VGG-11's checkpoint alone is 0.5 GB: keep no copy in pytest's tmp
    if name == "alexnet":
        again = run(ds, tmp_path / "again", **settings)
        leaves_equal(again.state.params, result.state.params)
        assert again.history[0]["train_loss"] == record["train_loss"]
        shutil.rmtree(tmp_path / "again")


# --------------------------------------------------------------------------- two devices

_CHILD = """
import json, sys
import jax
from jaxconv import data
from jaxconv.train import TrainConfig, fit
assert jax.device_count() == 2, jax.devices()
ds = data.subset(data.load_fashion_mnist(), 64, 32)
KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")

def train(name, n, **settings):
    settings = {"model": "lenet_bn", "epochs": 2, "batch_size": 16, "devices": n,
                "out_dir": f"{sys.argv[1]}/{name}", "progress": False, "plots": False, **settings}
    r = fit(TrainConfig(**settings), dataset=ds)
    state = jax.device_get((r.state.params, r.state.batch_stats))
    return {"history": [[h["train_loss"], h["test_loss"]] for h in r.history],
            "metrics": [[h[k] for k in KEYS] for h in r.history],
            "leaves": [x.tolist() for x in jax.tree.leaves(state)],
            "step": int(r.state.step), "epochs_trained": r.epochs_trained}

out = {n: train(f"d{n}", n) for n in (1, 2)}
# The 1-device run stopped after epoch 1 and resumed: the same programs as d1's.
train("parts", 1, epochs=1)
out["resumed"] = train("parts", 1, resume=True)
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def lenet_bn_runs(ds, tmp_path_factory):
    """The child's runs of the batch-norm LeNet (64 / 32 examples, batch 16, 2 epochs): on 1
    device (``"1"``), on 2 (``"2"``), and on 1 stopped after epoch 1 and resumed
    (``"resumed"``). Each: history, metrics, the params' and statistics' leaves, step and
    epochs trained."""
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": with_host_devices(os.environ, 2),
    }
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path_factory.mktemp("lenet_bn"))],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])


def test_resume_of_a_batch_norm_run_is_bit_identical(lenet_bn_runs):
    whole, parts = lenet_bn_runs["1"], lenet_bn_runs["resumed"]
    assert parts["epochs_trained"] == 1 and parts["step"] == whole["step"]
    assert parts["leaves"] == whole["leaves"]  # params and batch statistics, bit for bit
    assert parts["metrics"] == whole["metrics"]


def test_batch_norm_on_two_devices_trains_as_on_one(lenet_bn_runs):
    one, two = lenet_bn_runs["1"], lenet_bn_runs["2"]
    np.testing.assert_allclose(two["history"], one["history"], rtol=1e-5)
    # Params and running statistics: SGD at the book's rate 1.0 carries the float32 sums'
    # other order to a few 1e-4 of a leaf's scale over 8 steps (a wrong all-reduce or
    # per-device statistics would differ by the whole update).
    for a, b in zip(one["leaves"], two["leaves"], strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert np.abs(a - b).max() <= 1e-3 * max(np.abs(a).max(), 1e-3)
