"""Set-up shared by the tests that train through ``jaxconv.train.fit`` on real data
(test_train.py, test_train_models.py, test_checkpoint_compat.py, test_experiments_ch7.py).

``dataset_fixture(n_train, n_test)`` makes a module-scoped ``ds`` fixture: the first
``n_train`` / ``n_test`` Fashion-MNIST examples, or a skip that says why where the data set is
not installed. ``fit_quietly`` runs ``fit`` without progress bars or figures;
``check_one_epoch_checkpoint`` checks what a one-epoch run of a network saved.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from flax import traverse_util

from jaxconv import data
from jaxconv.checkpoint import CHECKPOINT_DIR, Checkpoints
from jaxconv.train import FitResult, TrainConfig, evaluate_checkpoint, fit


@functools.cache
def _fashion_mnist() -> data.FashionMNIST | data.DataNotFoundError:
    """The whole data set, read once per process (or the error that says why it is not)."""
    try:
        return data.load_fashion_mnist()
    except data.DataNotFoundError as err:
        return err


def fashion_subset(n_train: int | None, n_test: int | None) -> data.FashionMNIST:
    """The first ``n_train`` training and ``n_test`` test examples; skips the calling test
    where Fashion-MNIST is not installed."""
    full = _fashion_mnist()
    if isinstance(full, data.DataNotFoundError):
        pytest.skip(f"Fashion-MNIST not installed: {full}")
    return data.subset(full, n_train, n_test)


def dataset_fixture(n_train: int, n_test: int):
    """A module-scoped fixture named ``ds``: :func:`fashion_subset` of that size. Assign it
    at module level (``ds = dataset_fixture(512, 256)``)."""

    @pytest.fixture(scope="module", name="ds")
    def _ds() -> data.FashionMNIST:
        return fashion_subset(n_train, n_test)

    return _ds


def fit_quietly(dataset: data.FashionMNIST, out_dir: Path, **settings) -> FitResult:
    """``fit(TrainConfig(out_dir=out_dir, **settings), dataset=dataset)`` with no progress
    bar and no figures unless ``settings`` asks for them."""
    settings = {"progress": False, "plots": False, **settings}
    return fit(TrainConfig(out_dir=out_dir, **settings), dataset=dataset)


def assert_statistics_moved(batch_stats, steps: int) -> None:
    """Every batch-norm layer counted ``steps`` batches and moved its running statistics
    off their initial 0 (mean) and 1 (variance)."""
    flat = traverse_util.flatten_dict(batch_stats, sep=".")
    counts = [k for k in flat if k.endswith("num_batches_tracked")]
    assert counts and all(int(flat[k]) == steps for k in counts), flat.keys()
    for k in counts:
        prefix = k.removesuffix("num_batches_tracked")
        assert not np.allclose(flat[prefix + "running_mean"], 0), prefix
        assert not np.allclose(flat[prefix + "running_var"], 1), prefix


#: The chapter-7 networks with batch norm (their checkpoints hold batch statistics).
BATCH_NORM_MODELS = ("lenet_bn", "resnet18", "densenet")


def check_one_epoch_checkpoint(
    out_dir: Path, model: str, image_size: int, steps: int, history: list[dict], n_test: int
) -> dict:
    """A one-epoch run of ``model`` in ``out_dir`` saved its whole state after epoch 1
    (batch statistics included, moved by the run's ``steps`` batches), and the checkpoint
    evaluates in eval mode, on the run's ``n_test`` test images, to the run's own test loss.
    Returns the saved tree."""
    with Checkpoints(out_dir / CHECKPOINT_DIR, read_only=True) as ckpts:
        saved, meta, epoch = ckpts.restore(None)
    assert epoch == 1 and meta["image_size"] == image_size
    assert bool(saved.get("batch_stats")) == (model in BATCH_NORM_MODELS)
    if model in BATCH_NORM_MODELS:
        assert_statistics_moved(saved["batch_stats"], steps)
    evaluated = evaluate_checkpoint(out_dir, dataset=fashion_subset(None, n_test))
    assert evaluated["model"] == model
    np.testing.assert_allclose(evaluated["test_loss"], history[-1]["test_loss"], rtol=1e-6)
    return saved
