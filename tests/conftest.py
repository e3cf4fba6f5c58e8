"""Shared fixtures: the eager/jit variant, the PyTorch oracle, a seeded generator."""

from __future__ import annotations

import os

# Tests compare against float64 references; keep XLA on full-precision matmuls and convs.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import jax
import numpy as np
import pytest


def _identity(f):
    return f


@pytest.fixture(params=[_identity, jax.jit], ids=["eager", "jit"])
def variant(request):
    """Wraps a function as-is or under ``jax.jit``; tests run once each way."""
    return request.param


@pytest.fixture(scope="session")
def torch():
    """PyTorch (CPU build), the independent oracle; skips the test where it is not installed."""
    return pytest.importorskip("torch")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def gpu_available() -> bool:
    return any(d.platform == "gpu" for d in jax.devices())


requires_gpu = pytest.mark.skipif(not gpu_available(), reason="needs a GPU")


def load_script(path: Path, name: str) -> ModuleType:
    """Import a script (``experiments/<name>.py``; names starting with digits cannot be
    imported by ``import``) as the module ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module
