"""Compile options for tests that compile programs only to check what they compute.

jaxconv compiles a program that runs once (a network's init) with
:func:`jaxconv.kernels.dispatch.run_once_options`: LLVM's optimisation passes off
(``xla_backend_optimization_level=0``) and, on CPU, XLA's loop emitters. The HLO program,
and so the function computed, is the one the default options compile (IEEE arithmetic
either way; instruction selection, scheduling and vectorisation differ); its code is
generated in about half the time. A test that compiles a whole network's training step once
to compare its values with torch's, or that runs a benchmark section in a child process only
to check what it reports, runs such a program once. Not for tests about compile options or
speed.
"""

from __future__ import annotations

import os

from jaxconv.kernels.dispatch import run_once_options

#: ``compiler_options`` for ``jax.jit`` (those this jaxlib accepts).
UNOPTIMISED: dict = run_once_options()

#: The same options as ``XLA_FLAGS`` for a child process.
FLAGS = " ".join(f"--{k}={str(v).lower()}" for k, v in UNOPTIMISED.items())


def unoptimised_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """A copy of ``env`` (default: this process's environment) whose ``XLA_FLAGS`` also carry
    :data:`FLAGS`, for a child process that runs JAX programs (flags the child adds itself,
    such as the benchmark's ``--xla-flags``, come after these and win)."""
    env = dict(os.environ if env is None else env)
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {FLAGS}".strip()
    return env
