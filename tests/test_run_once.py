"""The compile options of programs that run once (a network's init):
:func:`jaxconv.kernels.dispatch.run_once_options`.

They may change how fast the program compiles, never what it computes: an init compiled with
them gives the same bits as one compiled with the portable :data:`RUN_ONCE` alone
(test_networks.py checks ``init_variables``, compiled with them, against ``jax.jit``'s
optimised ``model.init``). An option this jaxlib refuses is dropped.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv import networks
from jaxconv.kernels import dispatch

ON_CPU = jax.default_backend() == "cpu"


def test_options_by_backend():
    assert dispatch.run_once_options("gpu") == dispatch.RUN_ONCE
    assert dispatch.run_once_options("tpu") == dispatch.RUN_ONCE
    if ON_CPU:
        accepted = dispatch._accepted("cpu", tuple(dispatch.CPU_RUN_ONCE.items()))
        extra = dispatch.CPU_RUN_ONCE if accepted else {}
        assert dispatch.run_once_options() == {**dispatch.RUN_ONCE, **extra}


@pytest.mark.skipif(not ON_CPU, reason="the added option is XLA:CPU's")
def test_an_option_this_jaxlib_refuses_is_dropped(monkeypatch):
    monkeypatch.setattr(dispatch, "CPU_RUN_ONCE", {"xla_cpu_no_such_option_ro": False})
    assert dispatch.run_once_options() == dispatch.RUN_ONCE


@pytest.mark.parametrize("name", ["lenet_bn", "nin"])
def test_an_init_compiled_with_them_is_the_same_function(name):
    model = networks.MODELS[name][0]()
    x = jnp.zeros(model.example_input_shape, jnp.float32)
    lowered = jax.jit(model.init).lower(jax.random.key(0), x)
    key = jax.random.key(11)
    fast = lowered.compile(dispatch.run_once_options())(key, x)
    portable = lowered.compile(dict(dispatch.RUN_ONCE))(key, x)
    assert jax.tree.structure(fast) == jax.tree.structure(portable)
    for a, b in zip(jax.tree.leaves(fast), jax.tree.leaves(portable), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not all(np.all(a == 0) for a in jax.tree.leaves(fast["params"]))
