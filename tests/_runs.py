"""Set-up shared by the tests that train through ``jaxconv.train.fit`` on real data
(test_train.py, test_train_models.py, test_checkpoint_compat.py).

``dataset_fixture(n_train, n_test)`` makes a module-scoped ``ds`` fixture: the first
``n_train`` / ``n_test`` Fashion-MNIST examples, or a skip that says why where the data set is
not installed. ``fit_quietly`` runs ``fit`` without progress bars or figures.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from jaxconv import data
from jaxconv.train import FitResult, TrainConfig, fit


@functools.cache
def _fashion_mnist() -> data.FashionMNIST | data.DataNotFoundError:
    """The whole data set, read once per process (or the error that says why it is not)."""
    try:
        return data.load_fashion_mnist()
    except data.DataNotFoundError as err:
        return err


def fashion_subset(n_train: int, n_test: int) -> data.FashionMNIST:
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
