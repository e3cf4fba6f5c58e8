"""The ``jaxconv`` command, a thin layer over :mod:`jaxconv.train`.

    jaxconv train                                   # modern LeNet, Adam 3e-3 cosine, 10 epochs
    jaxconv train --model resnet18                  # the book's ResNet: 96 px, SGD 0.05, batch 256
    jaxconv train --model vgg11_small --image-size 224 --train-subset 1024 --epochs 1
    jaxconv train --variant classic --optimizer sgd --lr 0.9   # the book's settings
    jaxconv train --epochs 1 --train-subset 512 --test-subset 256 --out-dir /tmp/run
    jaxconv train --resume --epochs 20              # continue runs/lenet-modern to epoch 20
    jaxconv train --devices 4 --batch-size 1024     # data-parallel over 4 devices (default: all)
    jaxconv train --coordinator-address 10.0.0.1:1234 --num-processes 2 --process-id 0
                                                    # one of several hosts (one command each)
    jaxconv evaluate --checkpoint runs/lenet-modern
    jaxconv demo                                    # the chapter's small examples
    jaxconv bench --quick                           # ops and LeNet epochs beside PyTorch

Exit status: 0 done; 2 bad input (``jaxconv: error: ...`` on stderr, no traceback, naming
the flag to change: the library's errors name their parameter, :data:`FLAGS` spells it);
1 training diverged (the last good checkpoint is kept); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
from collections.abc import Iterator, Sequence

PROG = "jaxconv"

#: How the command line spells what the library's errors call a parameter (see
#: :class:`jaxconv.errors.ArgumentError`): every message names the flag to change.
FLAGS = {
    "model": "--model",
    "image_size": "--image-size",
    "variant": "--variant",
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "optimizer": "--optimizer",
    "learning_rate": "--lr",
    "lr_schedule": "--lr-schedule",
    "seed": "--seed",
    "out_dir": "--out-dir",
    "data_dir": "--data-dir",
    "data_dir=...": "--data-dir DIR",
    "verify=False": "--no-verify",
    "train_subset": "--train-subset",
    "test_subset": "--test-subset",
    "resume=True": "--resume",
    "tensorboard=True": "--tensorboard",
    "conv_impl": "--conv-impl",
    "layout": "--layout",
    "devices": "--devices",
    "num_processes": "--num-processes",
    "process_id": "--process-id",
    "coordinator_address": "--coordinator-address",
    "checkpoint path": "--checkpoint",
}


def _train(args: argparse.Namespace) -> int:
    from jaxconv.train import TrainConfig, fit

    multihost = (args.coordinator_address, args.num_processes, args.process_id)
    if args.distributed or any(flag is not None for flag in multihost):
        from jaxconv.distributed import initialize

        initialize(*multihost)  # before anything else touches JAX's devices
    config = TrainConfig(
        model=args.model,
        image_size=args.image_size,
        variant=args.variant,
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
        out_dir=args.out_dir,
        data_dir=args.data_dir,
        verify=args.verify,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        resume=args.resume,
        tensorboard=args.tensorboard,
        progress=not args.quiet,
        conv_impl=args.conv_impl,
        layout=args.layout,
        devices=args.devices,
    )
    result = fit(config)
    if not result.epochs_trained:
        print(f"nothing to do: {result.out_dir} is already at epoch {int(result.state.epoch)}")
        return 0
    last = result.history[-1]
    seconds = [r["epoch_seconds"] for r in result.history[-result.epochs_trained :]]
    print(
        f"epoch {last['epoch']}: train loss {last['train_loss']:.3f}, train acc "
        f"{last['train_acc']:.3f}, test acc {last['test_acc']:.3f}; "
        f"{last['epoch_seconds']:.2f} s/epoch ({last['examples_per_second']:,.0f} examples/s); "
        f"mean {sum(seconds) / len(seconds):.2f} s/epoch over {_epochs(len(seconds))}; "
        f"out_dir {result.out_dir}"
    )
    return 0


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _evaluate(args: argparse.Namespace) -> int:
    from jaxconv.train import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        data_dir=args.data_dir,
        test_subset=args.test_subset,
        batch_size=args.batch_size,
        verify=args.verify,
    )
    if args.json:
        print(json.dumps(result))
    else:
        model = f"LeNet {result['variant']}" if result["model"] == "lenet" else result["model"]
        print(
            f"{result['checkpoint']} ({model}, epoch {result['epoch']}): "
            f"test loss {result['test_loss']:.4f}, test acc {result['test_acc']:.4f} "
            f"on {result['examples']} examples"
        )
    return 0


def _demo(args: argparse.Namespace) -> int:
    import jax.numpy as jnp
    import numpy as np

    from jaxconv.conv import corr2d
    from jaxconv.models import format_summary, learn_kernel, lenet_summary
    from jaxconv.pool import pool2d

    np.set_printoptions(precision=4, suppress=True)
    X = jnp.arange(9.0).reshape(3, 3)
    K = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    print("6.2.1 cross-correlation: corr2d(X, K), X = 0..8 as 3x3, K = [[0, 1], [2, 3]]")
    print(np.asarray(corr2d(X, K)))

    edges = jnp.ones((6, 8)).at[:, 2:6].set(0.0)  # a dark band between light sides
    K = jnp.array([[1.0, -1.0]])
    Y = corr2d(edges, K)
    print("\n6.2.3 edge detection: X = ones((6, 8)) with columns 2..5 zero, K = [[1, -1]]")
    print(np.asarray(Y))
    print(
        "corr2d(X.T, K) is all zero (horizontal edges are not seen):",
        bool(jnp.all(corr2d(edges.T, K) == 0)),
    )

    params, losses = learn_kernel(edges, Y, (1, 2))
    print("\n6.2.4 learning the kernel from (X, Y): Conv2D((1, 2)), 10 steps, lr 3e-2")
    for i in range(1, len(losses), 2):
        print(f"epoch {i + 1}, loss {float(losses[i]):.3f}")
    print("learned kernel:", np.asarray(params["weight"]))

    print("\n6.5 pooling: pool2d(X, (2, 2)), X = 0..8 as 3x3")
    print("max:\n", np.asarray(pool2d(X, (2, 2))), sep="")
    print("avg:\n", np.asarray(pool2d(X, (2, 2), "avg")), sep="")

    print("\n6.6 LeNet (classic), each layer's output shape (NCHW, as in the book):")
    print(format_summary(lenet_summary("classic")))
    return 0


def _data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        default=None,
        metavar="DIR",
        help="folder of the Fashion-MNIST IDX files (default: $JAXCONV_DATA_DIR, else "
        "Debian's /usr/share/datasets/fashion-mnist)",
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        help="skip the SHA-256 check of the data (for data you trust as it is)",
    )


def build_parser() -> argparse.ArgumentParser:
    from jaxconv.bench.cli import add_parser as add_bench_parser
    from jaxconv.conv import IMPLEMENTATIONS
    from jaxconv.models import MODEL_LAYOUTS, VARIANTS
    from jaxconv.networks import LAYOUTS as NETWORK_LAYOUTS
    from jaxconv.recipes import MODEL_NAMES, RECIPES
    from jaxconv.steps import LR_SCHEDULES, OPTIMIZERS
    from jaxconv.train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog=PROG, description="LeNet and the CNN chapter in JAX.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser(
        "train",
        help="train LeNet or a chapter-7 network on Fashion-MNIST",
        description="Train LeNet or a chapter-7 network on Fashion-MNIST (resized on device "
        "to the network's size); the optimizer, learning rate and batch size default to the "
        "book's for the model.",
    )
    recipes = "; ".join(
        f"{name} {r.image_size}px {r.optimizer} "
        f"{'' if r.learning_rate is None else f'{r.learning_rate:g} '}batch {r.batch_size}"
        for name, r in RECIPES.items()
    )
    train.add_argument(
        "--model",
        choices=MODEL_NAMES,
        default=defaults.model,
        help="the network (default: %(default)s); vgg11 is full width, vgg11_small the "
        f"quarter-width VGG-11 the book trains. The book's recipes: {recipes}",
    )
    train.add_argument(
        "--image-size",
        type=int,
        default=None,
        metavar="S",
        help="resize the 28x28 images to SxS on device (default: the book's size for the "
        "model, see --model; each network accepts a range set by its flatten and pool sizes)",
    )
    train.add_argument(
        "--variant",
        choices=VARIANTS,
        default=defaults.variant,
        help="LeNet's: classic: sigmoid + avg pool (the book); modern: ReLU + max pool "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--epochs",
        type=int,
        default=defaults.epochs,
        help="train until this many epochs are done (default: %(default)s)",
    )
    train.add_argument(
        "--batch-size",
        type=int,
        default=None,
        metavar="N",
        help="examples per optimizer step, over all devices (default: the model's: lenet 256, "
        "see --model)",
    )
    lr_defaults = ", ".join(f"{name} {lr:g}" for name, (_, lr) in OPTIMIZERS.items())
    train.add_argument(
        "--optimizer",
        choices=tuple(OPTIMIZERS),
        default=None,
        help="optax optimizer (default: the model's: lenet adam, sgd for the others)",
    )
    train.add_argument(
        "--lr",
        type=float,
        default=None,
        help="learning rate: the rate of every step under a constant schedule, the peak "
        "under cosine (default: the model's with its own optimizer, see --model; else the "
        f"optimizer's: {lr_defaults})",
    )
    train.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default=None,
        help="constant, or cosine decay from --lr to 0 over --epochs (default: constant, as "
        "the book; cosine for the modern LeNet)",
    )
    train.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="initial params and the shuffling order (default: %(default)s)",
    )
    train.add_argument(
        "--out-dir",
        default=None,
        metavar="DIR",
        help="checkpoints, metrics.jsonl, curves.png (default: runs/lenet-VARIANT, "
        "runs/MODEL for the others)",
    )
    _data_flags(train)
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest readable checkpoint in --out-dir",
    )
    train.add_argument(
        "--tensorboard",
        action="store_true",
        help="also write TensorBoard events (needs tensorboardX or TensorFlow)",
    )
    train.add_argument(
        "--train-subset",
        type=int,
        default=None,
        metavar="N",
        help="use the first N training examples (default: all 60000)",
    )
    train.add_argument(
        "--test-subset",
        type=int,
        default=None,
        metavar="N",
        help="use the first N test examples (default: all 10000)",
    )
    train.add_argument(
        "--conv-impl",
        choices=tuple(IMPLEMENTATIONS),
        default=None,
        help="jaxconv.conv2d implementation (default: conv2d's own choice)",
    )
    train.add_argument(
        "--layout",
        choices=tuple(dict.fromkeys(NETWORK_LAYOUTS + MODEL_LAYOUTS)),
        default=None,
        help="the model's layout: LeNet's activations NHWC or CHWN (default: CHWN on CPU, NHWC "
        "elsewhere); a chapter-7 network's NCHW or NHWC (channels last; default: NHWC on CPU, "
        "NCHW elsewhere)",
    )
    train.add_argument(
        "--devices",
        type=int,
        default=None,
        metavar="N",
        help="data-parallel over N devices (default: all; --batch-size is split evenly)",
    )
    hosts = train.add_argument_group(
        "many hosts",
        "start the same command on every host, each with its own --process-id; "
        "out-dir must be on a file system every host sees",
    )
    hosts.add_argument(
        "--coordinator-address",
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port (default: $JAX_COORDINATOR_ADDRESS)",
    )
    hosts.add_argument(
        "--num-processes",
        type=int,
        default=None,
        metavar="N",
        help="how many processes (hosts) take part (default: detected, else 1)",
    )
    hosts.add_argument(
        "--process-id",
        type=int,
        default=None,
        metavar="I",
        help="this process's index, 0..N-1; process 0 writes the files",
    )
    hosts.add_argument(
        "--distributed",
        action="store_true",
        help="join a multi-host run that JAX detects (Slurm, Open MPI, Kubernetes, Cloud TPU)",
    )
    train.add_argument("--quiet", action="store_true", help="no progress bar or log lines")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser(
        "evaluate",
        help="test accuracy of a saved checkpoint",
        description="Test loss and accuracy of a saved checkpoint.",
    )
    evaluate.add_argument(
        "--checkpoint",
        required=True,
        metavar="DIR",
        help="a run's out-dir, its checkpoints/ folder or one epoch's folder",
    )
    _data_flags(evaluate)
    evaluate.add_argument(
        "--test-subset",
        type=int,
        default=None,
        metavar="N",
        help="use the first N test examples (default: all 10000)",
    )
    evaluate.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        metavar="N",
        help="examples per evaluation step (default: %(default)s)",
    )
    evaluate.add_argument("--json", action="store_true", help="print the result as JSON")
    evaluate.add_argument("--quiet", action="store_true", help="no log lines")
    evaluate.set_defaults(func=_evaluate)

    demo = sub.add_parser("demo", help="print the chapter's small examples")
    demo.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(func=_demo)
    add_bench_parser(sub)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each line (a caller may have swapped it since)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


@contextlib.contextmanager
def _cli_logging(quiet: bool) -> Iterator[None]:
    """jaxconv's INFO lines to stderr unless quiet, orbax's (absl) logging off (its failed
    saves log tracebacks from its threads; the error reaches main, which prints one line);
    the loggers are put back as they were afterwards (main may run inside another program)."""
    log, absl = logging.getLogger("jaxconv"), logging.getLogger("absl")
    saved = (log.level, log.propagate, absl.level)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("jaxconv: %(message)s"))
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False  # orbax puts a handler on the root logger: print each line once
    absl.setLevel(logging.CRITICAL)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.level, log.propagate, absl.level = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    from jaxconv.errors import ArgumentError
    from jaxconv.train import TrainingDiverged

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse's own usage errors (status 2) and --help (0)
        return int(exit_.code or 0)
    try:
        with _cli_logging(args.quiet):
            return args.func(args)
    except TrainingDiverged as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as err:  # bad input; DataError and CheckpointError included
        message = err.render(FLAGS) if isinstance(err, ArgumentError) else str(err)
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
