"""``jaxconv.jit``: ``jax.jit`` with the XLA compile options jaxconv chooses for the backend.

jaxconv compiles its own programs (training's epoch and evaluation, the benchmark's jaxconv
rows) with :func:`jaxconv.kernels.dispatch.compiler_options`; on CPU they make XLA run 2-D
convolutions with its own kernels instead of YNNPACK's, which do not use a second thread
(docs/BENCHMARKS.md). ``jaxconv.jit`` gives a user's own program the same: a training step
around ``jaxconv.models.resnet18``, or any function of jaxconv's ops. The options change which
kernel runs a convolution, never the function computed; under plain ``jax.jit`` jaxconv's ops
compute the same, with XLA's default kernels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from jaxconv.kernels.dispatch import compiler_options


def jit(fun: Callable[..., Any], **kwargs: Any) -> Any:
    """``jax.jit(fun, **kwargs)`` compiled with jaxconv's options for JAX's default backend
    (read when ``jit`` is called); ``compiler_options`` given here are added to them and win
    where both set one."""
    options = {**compiler_options(), **(kwargs.pop("compiler_options", None) or {})}
    return jax.jit(fun, compiler_options=options or None, **kwargs)
