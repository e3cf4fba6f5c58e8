"""Shared fixtures: the eager/jit variant, the PyTorch oracle, a seeded generator."""

from __future__ import annotations

import os

# Tests compare against float64 references; keep XLA on full-precision matmuls and convs.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "highest")

from _xla_flags import full_run, suite_xla_flags

# Inherited by the xdist workers and by the scripts the tests start; read once, when JAX starts.
os.environ["XLA_FLAGS"] = suite_xla_flags(os.environ)

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


#: ``JAXCONV_TEST_FULL=1``: every case of the seeded sweeps that use :func:`with_variants`
#: runs both eager and jitted, and sweeps that size themselves by :data:`FULL` run all their
#: cases, and XLA compiles as users' programs do (:func:`_xla_flags.suite_xla_flags`). By
#: default (the README's test command) a sweep runs every case jitted and a quarter of them
#: eager too: un-jitted JAX compiles every primitive of every new shape on its own,
#: which made the eager half most of a sweep's time, and a quarter of the cases already
#: covers each padding form, layout and path un-jitted.
FULL = full_run(os.environ)
EAGER_EVERY = 1 if FULL else 4


def with_variants(cases, ids=None) -> list:
    """``pytest.param(case, variant)`` for ``@pytest.mark.parametrize(("c", "variant"), ...)``:
    each case under ``jax.jit``, and cases ``0, EAGER_EVERY, 2*EAGER_EVERY, ...`` also eager
    (in the ``variant`` fixture's ids)."""
    params = []
    for i, case in enumerate(cases):
        name = str(i) if ids is None else ids(case)
        params.append(pytest.param(case, jax.jit, id=f"{name}-jit"))
        if i % EAGER_EVERY == 0:
            params.append(pytest.param(case, _identity, id=f"{name}-eager"))
    return params


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
