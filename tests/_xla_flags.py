"""The XLA flags the test run compiles with: :func:`suite_xla_flags` (read by conftest before
JAX starts)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping

#: What the default run adds to ``XLA_FLAGS`` on a CPU-only JAX.
CPU_CODEGEN_FLAG = "--xla_backend_optimization_level=0"


def full_run(environ: Mapping[str, str]) -> bool:
    """``JAXCONV_TEST_FULL=1``: every case and example, compiled as users' programs are."""
    return environ.get("JAXCONV_TEST_FULL", "") == "1"


def cpu_only_jax(environ: Mapping[str, str]) -> bool:
    """Whether JAX can only run on the CPU here: ``JAX_PLATFORMS=cpu``, or neither an
    accelerator plugin (``jax_plugins``) nor ``libtpu`` installed."""
    if environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    has_plugin = importlib.util.find_spec("jax_plugins") is not None or bool(
        importlib.metadata.entry_points(group="jax_plugins")
    )
    return not has_plugin and importlib.util.find_spec("libtpu") is None


def suite_xla_flags(environ: Mapping[str, str]) -> str:
    """``environ``'s ``XLA_FLAGS`` with :data:`CPU_CODEGEN_FLAG` added, unless
    ``JAXCONV_TEST_FULL=1``, the flags already set an optimisation level, or an accelerator
    may run the tests (there they stay as given).

    Why: most of the suite's time is XLA:CPU compiling thousands of small programs, which
    LLVM does faster at optimisation level 0 (the suite's time: docs/BENCHMARKS.md). The
    programs' HLO (fusions, library calls, the paths jaxconv's dispatch chose) is the same;
    only the machine code of XLA's own loops is less optimised. ``JAXCONV_TEST_FULL=1``
    runs the code generation users get."""
    flags = environ.get("XLA_FLAGS", "")
    if full_run(environ) or "xla_backend_optimization_level" in flags or not cpu_only_jax(environ):
        return flags
    return f"{flags} {CPU_CODEGEN_FLAG}".strip()


def with_host_devices(environ: Mapping[str, str], devices: int) -> str:
    """``environ``'s ``XLA_FLAGS`` (this run's code generation kept) with ``devices`` CPU
    devices, for a child process that shards over them."""
    flags = environ.get("XLA_FLAGS", "")
    return f"{flags} --xla_force_host_platform_device_count={devices}".strip()
