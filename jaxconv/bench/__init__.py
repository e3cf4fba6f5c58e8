"""The benchmark behind ``jaxconv bench``: jaxconv against PyTorch and plain JAX/Flax.

One job per module:

- :mod:`~jaxconv.bench.timing`: paired rounds in a rotating order, medians, compile apart,
  the cores this process may use;
- :mod:`~jaxconv.bench.contenders`: what runs: PyTorch (optional), plain Flax, jaxconv;
- :mod:`~jaxconv.bench.sections`: what is measured: ``ops``, ``family``, ``epoch`` (and the
  floor), ``profile``, ``sweep``;
- :mod:`~jaxconv.bench.report`: rows, the machine, markdown tables with spelled-out ratios;
- :mod:`~jaxconv.bench.suite`: one whole run; :mod:`~jaxconv.bench.cli`: its options and
  the ``bench`` command;
- :mod:`~jaxconv.bench._engine`: the only place that asks jaxconv's internals anything.
"""

from __future__ import annotations

from jaxconv.bench.cli import main
from jaxconv.bench.report import Row, render

__all__ = ["Row", "main", "render"]
