"""Benchmark: jaxconv against PyTorch eager and plain Flax, per op and per LeNet epoch.

    python experiments/benchmark.py --quick     # the same as `jaxconv bench --quick`

A thin entry point kept for existing commands: the benchmark is the package
:mod:`jaxconv.bench` (``jaxconv bench --help`` lists the options; they are the same here).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a checkout, not installed

from jaxconv.bench.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(prog="python experiments/benchmark.py"))
