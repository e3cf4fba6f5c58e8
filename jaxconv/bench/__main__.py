"""``python -m jaxconv.bench [options]``: the benchmark (see :mod:`jaxconv.bench.cli`)."""

import sys

from jaxconv.bench.cli import main

sys.exit(main())
