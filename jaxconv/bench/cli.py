"""``jaxconv bench`` (also ``python -m jaxconv.bench`` and ``experiments/benchmark.py``):
jaxconv against PyTorch eager and plain JAX/Flax, per op and per LeNet epoch.

    jaxconv bench                                  # CPU: ops and LeNet epoch (< 10 min)
    jaxconv bench --quick                          # tiny sizes, a smoke test (pytest)
    jaxconv bench --section epoch --json out.json
    jaxconv bench --section family                 # transposed, depthwise, wide, 1-D, 3-D convs
    jaxconv bench --section opset                  # every op of the conv/pool family, 1-D to 3-D
    jaxconv bench --section resnet --profile       # the book's ResNet-18 train step, and by op
    jaxconv bench --device gpu --profile --gpu-sweep   # the whole GPU benchmark, one command

Sections: ``ops`` (conv2d and pooling, fwd and fwd+bwd, per jaxconv path, against PyTorch;
conv fwd+bwd inside lax.scan; the chapter's manual paths against lax), ``epoch`` (a modern
LeNet epoch: PyTorch's book loop, plain Flax per step and in lax.scan, jaxconv's
train_epoch; and the floor the machine's peaks put under it), ``all`` (ops and epoch: the
default run), ``family`` (the conv family past LeNet, apart), ``opset`` (every conv,
pooling, unpooling, fold and pixel-shuffle op in 1-D, 2-D and 3-D, apart) and ``resnet``
(the book's ResNet-18 training step: PyTorch, jaxconv, plain Flax; with ``--profile``, its
time by kind of op instead of the LeNet epoch's profile). Every contender
is compiled first (compile time apart); the contenders of a row take turns in a rotating
order; a time is the median over rounds, a ratio the median over rounds of contender /
baseline. The load average before and after is printed: above the core count, read the
ratios only. Without PyTorch its rows are skipped (and said so). Tables are printed last;
``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jaxconv.bench.contenders import EPOCH_ROWS
from jaxconv.bench.sections.sweep import GPU_SWEEP_BUDGET_S

SECTIONS = ("ops", "epoch", "all", "family", "opset", "resnet")
CPU_EPOCH_STEPS = 40  # timed per epoch round on CPU, scaled to a full epoch
QUICK_BATCH = 32


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options on ``p`` (the same for every way of starting it)."""
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (a smoke test)")
    p.add_argument(
        "--section",
        choices=SECTIONS,
        default="all",
        help="all: ops and epoch (default); family: the conv family past LeNet; "
        "opset: every conv/pool/fold op of torch.nn.functional's family, 1-D to 3-D; "
        "resnet: the book's ResNet-18 train step",
    )
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps timed per epoch round, scaled to a full epoch "
        f"(default: {CPU_EPOCH_STEPS} on CPU, a full epoch on GPU)",
    )
    p.add_argument("--batch", type=int, default=256, help="epoch batch size (default 256)")
    p.add_argument("--rounds", type=int, default=None, help="paired rounds per op (default 5)")
    p.add_argument("--reps", type=int, default=None, help="calls per op per round (default 3)")
    p.add_argument("--epoch-rounds", type=int, default=None, help="paired epoch rounds (default 3)")
    p.add_argument(
        "--epoch-rows",
        default=",".join(EPOCH_ROWS),
        help=f"comma-separated epoch contenders from {', '.join(EPOCH_ROWS)}",
    )
    p.add_argument("--unroll", type=int, default=1, help="lax.scan unroll of the JAX epoch rows")
    p.add_argument("--xla-flags", default=None, help="appended to XLA_FLAGS before JAX starts")
    p.add_argument(
        "--gpu-sweep",
        action="store_true",
        help="also run the epoch's JAX rows under each XLA_FLAGS set of GPU_SWEEP",
    )
    p.add_argument(
        "--sweep-budget-s",
        type=float,
        default=GPU_SWEEP_BUDGET_S,
        help="start no sweep process later than this into the run",
    )
    p.add_argument(
        "--ops",
        default=None,
        help="opset section: only the ops whose name starts with one of these (comma-separated, "
        "e.g. adaptive,max_unpool)",
    )
    p.add_argument("--json", type=Path, default=None, help="write every row and the metadata here")
    p.add_argument(
        "--profile",
        action="store_true",
        help="also profile a jaxconv epoch (with --section resnet: the ResNet-18 step) by op",
    )
    p.add_argument("--no-tables", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-floor", action="store_true", help=argparse.SUPPRESS)
    return p


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the defaults that depend on other options (``--quick``, ``--device``); in place."""
    gpu = args.device == "gpu"
    if args.steps is None and not gpu and not args.quick:
        args.steps = CPU_EPOCH_STEPS
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.reps = args.reps or (1 if args.quick else 3)
    args.epoch_rounds = args.epoch_rounds or (1 if args.quick else 3)
    if args.quick:
        args.batch = min(args.batch, QUICK_BATCH)
    return args


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """The standalone parser (``python -m jaxconv.bench``, ``experiments/benchmark.py``)."""
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return add_arguments(p)


def parse_args(argv: Sequence[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    """Parsed and resolved options."""
    return resolve(build_parser(prog).parse_args(argv))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to the ``jaxconv`` command's subparsers; it runs
    :func:`command`."""
    p = subparsers.add_parser(
        "bench",
        help="benchmark ops and LeNet epochs against PyTorch and plain JAX/Flax",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=command, quiet=False)
    return p


def _command_line(argv: Sequence[str] | None, default: str) -> str:
    """How this run was started, for the report: ``default`` (the program's name as the
    caller gives it) and the options."""
    words = list(sys.argv[1:] if argv is None else argv)
    return " ".join([default, *words])


def command(args: argparse.Namespace) -> int:
    """``jaxconv bench``: run with the parsed ``args``; exit status 0."""
    from jaxconv.bench.suite import run

    resolve(args)
    if not hasattr(args, "command_line"):
        words = sys.argv[1:]  # `jaxconv bench ...` or `python -m jaxconv.cli bench ...`
        rest = words[words.index("bench") + 1 :] if "bench" in words else []
        args.command_line = " ".join(["jaxconv bench", *rest])
    run(args)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m jaxconv.bench") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run, return the exit status."""
    args = parse_args(argv, prog)
    args.command_line = _command_line(argv, prog)
    return command(args)
