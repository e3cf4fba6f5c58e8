"""The PyTorch reference networks of the book's chapter 7, for the equal-output tests.

They live outside the repository, in ``../shared/reference_torch/book_models.py`` relative to
its root (CI checks ``shared/`` out beside the clone); ``JAXCONV_REFERENCE_TORCH`` names
another directory that holds ``book_models.py``. Tests that need them skip, saying where they
looked, when the file is absent.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _candidates() -> list[Path]:
    paths = [ROOT.parent / "shared" / "reference_torch", ROOT / "shared" / "reference_torch"]
    if os.environ.get("JAXCONV_REFERENCE_TORCH"):
        paths.insert(0, Path(os.environ["JAXCONV_REFERENCE_TORCH"]))
    return [p / "book_models.py" for p in paths]


@functools.cache
def _load() -> ModuleType | None:
    for path in _candidates():
        if path.is_file():
            spec = importlib.util.spec_from_file_location("book_models", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    return None


def book_models() -> ModuleType:
    """The reference module, or a skip naming the paths that were tried."""
    pytest.importorskip("torch")
    module = _load()
    if module is None:
        tried = ", ".join(str(p) for p in _candidates())
        pytest.skip(f"the torch reference networks are not there (tried {tried})")
    return module


def reference_net(name: str, seed: int = 0, **kwargs):
    """The reference network ``name`` (a key of book_models.MODELS; ``vgg11`` takes
    ``conv_arch=``), drawn with torch's default init under ``seed``, with random batch-norm
    affine parameters and running statistics (so that they matter), in eval mode."""
    import torch

    bm = book_models()
    torch.manual_seed(seed)
    net = bm.MODELS[name][0](**kwargs)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
                module.bias.copy_(torch.tensor(rng.normal(0, 0.2, c)))
                module.running_mean.copy_(torch.tensor(rng.normal(0, 0.2, c)))
                module.running_var.copy_(torch.tensor(rng.uniform(0.5, 1.5, c)))
                module.num_batches_tracked.fill_(int(rng.integers(0, 1000)))
    return net.eval()
