"""Benchmark: jaxconv against PyTorch eager and plain Flax, per op and per LeNet epoch.

    python experiments/benchmark.py                          # CPU: ops and epoch (< 10 min)
    python experiments/benchmark.py --quick                  # tiny sizes, a smoke test (pytest)
    python experiments/benchmark.py --section epoch --json out.json
    python experiments/benchmark.py --device gpu --gpu-sweep # the whole GPU benchmark, one command

What it measures, side by side in one process on one machine:
  * ops: conv2d and pooling, forward and forward+backward (gradients of every input), for
    LeNet-sized and ResNet-sized layers: each jaxconv implementation (lax, patches, vjp; and
    which one ``impl="auto"`` picks), JAX's own reduce_window gradient for pooling, and
    PyTorch (NCHW). Conv forward+backward is also timed *inside* ``lax.scan``, where a
    training epoch runs it. Then the chapter's manual (vmap) paths against their lax twins.
  * epoch: a modern LeNet (ReLU, max pool), Adam 1e-3, batch 256: PyTorch eager as in the book
    (batches indexed from CPU tensors per step), PyTorch with the data on the device (GPU only:
    on a CPU it is the same loop), plain Flax with a jitted step per batch, plain Flax with the
    whole epoch in ``lax.scan``, and jaxconv (``jaxconv.train.train_epoch``) with each conv path.

Method: every contender is compiled first (compile time is reported apart) and warmed up once;
then the contenders of a row take turns, ``--rounds`` times, in a rotating order, so a load
change on a shared machine hits all of them alike. A time is the median over rounds; a ratio
is the median over rounds of (contender / baseline) in the same round. ``--steps`` times that
many optimizer steps and scales to a full 235-step epoch (the table says so). The load average
before and after is printed: above the core count, treat the absolute times as noise and read
the ratios only.

``--gpu-sweep`` reruns the epoch's JAX rows in a fresh process per XLA_FLAGS set (XLA reads the
flags once, when its backend starts; an unknown flag aborts that process only) and adds a table.
Tables are printed last; ``--json`` writes every number.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run from a checkout without `pip install -e .` (GPU machines)

TRAIN_IMAGES = 60_000  # an epoch's time is scaled to the whole training set

# XLA_FLAGS sets tried by --gpu-sweep: (label, flags, extra benchmark arguments). Command buffers
# (CUDA graphs) are XLA:GPU's answer to launch-bound loops: WHILE/CONDITIONAL put the scan's
# control flow itself into the graph. Values are DebugOptions.CommandBufferCmdType names.
GPU_SWEEP: list[tuple[str, str, list[str]]] = [
    ("default flags", "", []),
    ("command buffers off", "--xla_gpu_enable_command_buffer=", []),
    (
        "command buffers incl. WHILE, CONDITIONAL",
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,"
        "CONDITIONAL,WHILE",
        [],
    ),
    (
        "... and min graph size 1",
        "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUDNN,CUSTOM_CALL,"
        "CONDITIONAL,WHILE --xla_gpu_graph_min_graph_size=1",
        [],
    ),
    ("default flags, scan unroll 4", "", ["--unroll", "4"]),
    ("default flags, batch 1024", "", ["--batch", "1024"]),
]
GPU_SWEEP_ROWS = "jaxconv-auto,jaxconv-chwn,jaxconv-lax,flax-scan"
GPU_SWEEP_BUDGET_S = 290  # default --sweep-budget-s: a whole --gpu-sweep run stays < 6 min


# ---------------------------------------------------------------------------- timing core


@dataclasses.dataclass
class Row:
    """One timed contender of one benchmark line (what --json writes)."""

    table: str  # "ops", "scan", "manual", "epoch", "sweep"
    case: str  # e.g. "conv LeNet conv2 256x6x14x14 -> 16, 5x5"
    passes: str  # "fwd", "fwd+bwd", "epoch"
    contender: str
    seconds: float  # median over rounds (an epoch: scaled to 60,000 images)
    ratio: float | None = None  # median over rounds of seconds / baseline's seconds
    baseline: str | None = None
    compile_s: float | None = None
    note: str = ""


def paired_times(
    contenders: dict[str, Callable[[], Any]], rounds: int, reps: int
) -> dict[str, list[float]]:
    """Per-round median seconds of each contender; contenders take turns within a round.

    Each callable runs its work once and waits for it (block_until_ready / cuda sync). The
    order rotates every round so that none is always first after a pause.
    """
    names = list(contenders)
    out: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                contenders[name]()
                times.append(time.perf_counter() - t0)
            out[name].append(statistics.median(times))
    return out


def summarise(
    per_round: dict[str, list[float]], baseline: str | None, scale: float = 1.0
) -> dict[str, tuple[float, float | None]]:
    """name -> (median seconds * scale, median over rounds of the ratio to ``baseline``)."""
    result = {}
    for name, times in per_round.items():
        ratio = None
        if baseline is not None and baseline in per_round:
            ratio = statistics.median(
                t / b for t, b in zip(times, per_round[baseline], strict=True)
            )
        result[name] = (statistics.median(times) * scale, ratio)
    return result


def compiled(fn: Callable[..., Any], *args: Any) -> tuple[Callable[..., Any], float]:
    """``jax.jit(fn)`` lowered and compiled for ``args``, and the seconds that took."""
    import jax

    t0 = time.perf_counter()
    exe = jax.jit(fn).lower(*args).compile()
    return exe, time.perf_counter() - t0


def jax_runner(exe: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """A no-argument callable that runs ``exe(*args)`` and waits; warmed up once here."""
    import jax

    def run() -> Any:
        return jax.block_until_ready(exe(*args))

    run()
    return run


def torch_sync(device: str) -> Callable[[], None]:
    import torch

    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress; the tables go to stdout, last


# ---------------------------------------------------------------------------- ops


@dataclasses.dataclass(frozen=True)
class ConvCase:
    name: str
    n: int
    c: int
    h: int
    o: int
    k: int
    p: int

    def label(self) -> str:
        return (
            f"conv {self.name} {self.n}x{self.c}x{self.h}x{self.h} -> {self.o}, {self.k}x{self.k}"
        )


@dataclasses.dataclass(frozen=True)
class PoolCase:
    name: str
    mode: str  # "max" or "avg"
    n: int
    c: int
    h: int
    k: int
    s: int
    p: int

    def label(self) -> str:
        return (
            f"{self.mode} pool {self.name} {self.n}x{self.c}x{self.h}x{self.h}, "
            f"{self.k}x{self.k} s{self.s} p{self.p}"
        )


def conv_cases(quick: bool) -> list[ConvCase]:
    if quick:
        return [ConvCase("LeNet conv1", 8, 1, 28, 6, 5, 2), ConvCase("ResNet", 2, 8, 12, 8, 3, 1)]
    return [
        ConvCase("LeNet conv1", 256, 1, 28, 6, 5, 2),
        ConvCase("LeNet conv2", 256, 6, 14, 16, 5, 0),
        ConvCase("ResNet", 8, 64, 56, 64, 3, 1),
    ]


def pool_cases(quick: bool) -> list[PoolCase]:
    if quick:
        return [
            PoolCase("LeNet", "max", 8, 6, 28, 2, 2, 0),
            PoolCase("ResNet", "max", 2, 8, 16, 3, 2, 1),
        ]
    return [
        PoolCase("LeNet", "max", 256, 6, 28, 2, 2, 0),
        PoolCase("LeNet", "avg", 256, 6, 28, 2, 2, 0),
        PoolCase("ResNet", "max", 8, 64, 112, 3, 2, 1),
        PoolCase("ResNet", "avg", 8, 64, 112, 3, 2, 1),
    ]


def _grad_fn(f: Callable[..., Any], argnums: tuple[int, ...]) -> Callable[..., Any]:
    """Forward + backward: gradients of ``0.5 * |f(*args) - target|^2`` w.r.t. ``argnums``
    (target last), as PyTorch's ``y.backward(y - target)``. Not a linear loss: its gradient
    needs the forward pass, which XLA would otherwise drop as dead code."""
    import jax
    import jax.numpy as jnp

    def loss(*args: Any) -> Any:
        *inputs, target = args
        return 0.5 * jnp.sum(jnp.square(f(*inputs) - target))

    return jax.grad(loss, argnums=argnums)


def _scan_fn(f: Callable[..., Any], length: int) -> Callable[..., Any]:
    """``length`` forward+backward steps inside lax.scan, each updating x, w and b with their
    gradients (so that none of the three is loop-invariant or dead)."""
    import jax

    grad = _grad_fn(f, (0, 1, 2))

    def run(x: Any, w: Any, b: Any, target: Any) -> Any:
        def step(carry: Any, _: None) -> Any:
            grads = grad(*carry, target)
            return tuple(a - 1e-6 * g for a, g in zip(carry, grads, strict=True)), None

        return jax.lax.scan(step, (x, w, b), None, length=length)[0]

    return run


def bench_conv(case: ConvCase, args: argparse.Namespace, dev: Any, tdev: str) -> list[Row]:
    import jax
    import torch

    import jaxconv
    from jaxconv import conv as conv_lib

    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(np.float32)
    w = (rng.standard_normal((case.o, case.c, case.k, case.k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(case.o).astype(np.float32)
    oh = case.h + 2 * case.p - case.k + 1
    ct = rng.standard_normal((case.n, case.o, oh, oh)).astype(np.float32)
    # jaxconv in NHWC/HWIO, the models' layout, and in CHWN (batch last, what training runs
    # on CPU); PyTorch in its default NCHW
    jw, jb = jax.device_put(w.transpose(2, 3, 1, 0), dev), jax.device_put(b, dev)
    arrays = {
        "NHWC": tuple(jax.device_put(a.transpose(0, 2, 3, 1), dev) for a in (x, ct)),
        "CHWN": tuple(jax.device_put(a.transpose(1, 2, 3, 0), dev) for a in (x, ct)),
    }
    jx, jct = arrays["NHWC"]
    geom = conv_lib.conv_geometry(jx.shape, jw.shape, padding=case.p, layout="NHWC")
    auto = conv_lib.select_impl(geom, jx.dtype, dev.platform)
    # contender -> (layout, impl)
    impls = {"lax": ("NHWC", "lax"), "patches": ("NHWC", "patches"), "vjp": ("NHWC", "vjp"),
             "vjp CHWN": ("CHWN", "vjp")}  # fmt: skip

    def conv_with(name: str) -> Callable[..., Any]:
        layout, impl = impls[name]
        return lambda x, w, b: jaxconv.conv2d(x, w, b, padding=case.p, layout=layout, impl=impl)

    tx, tw, tb, tct = (torch.from_numpy(a).to(tdev) for a in (x, w, b, ct))
    sync = torch_sync(tdev)
    F = torch.nn.functional

    def torch_fwd() -> None:
        with torch.no_grad():
            F.conv2d(tx, tw, tb, padding=case.p)
        sync()

    gx, gw, gb = (t.clone().requires_grad_(True) for t in (tx, tw, tb))

    def torch_fwd_bwd() -> None:
        gx.grad = gw.grad = gb.grad = None
        y = F.conv2d(gx, gw, gb, padding=case.p)
        y.backward(y.detach() - tct)  # the gradient of 0.5 * |y - target|^2, as _grad_fn
        sync()

    rows = []
    for passes in ("fwd", "fwd+bwd"):
        runners: dict[str, Callable[[], Any]] = {}
        compile_s: dict[str, float] = {}
        for impl in impls:
            f = conv_with(impl)
            ax, act = arrays[impls[impl][0]]
            fn, fargs = (
                (f, (ax, jw, jb))
                if passes == "fwd"
                else (_grad_fn(f, (0, 1, 2)), (ax, jw, jb, act))
            )
            exe, compile_s[impl] = compiled(fn, *fargs)
            runners[impl] = jax_runner(exe, *fargs)
        torch_fwd() if passes == "fwd" else torch_fwd_bwd()  # warm-up
        runners["torch"] = torch_fwd if passes == "fwd" else torch_fwd_bwd
        log(f"  {case.label()} {passes}")
        stats = summarise(paired_times(runners, args.rounds, args.reps), "torch")
        for name, (sec, ratio) in stats.items():
            note = "auto" if name == auto else ""
            rows.append(
                Row(
                    "ops",
                    case.label(),
                    passes,
                    name,
                    sec,
                    ratio,
                    "torch",
                    compile_s.get(name),
                    note,
                )
            )

    # forward+backward inside lax.scan, as in a training epoch
    length = 2 if args.quick else 4
    runners, compile_s = {}, {}
    for impl in ("lax", "vjp", "vjp CHWN"):
        ax, act = arrays[impls[impl][0]]
        exe, compile_s[impl] = compiled(_scan_fn(conv_with(impl), length), ax, jw, jb, act)
        runners[impl] = jax_runner(exe, ax, jw, jb, act)
    log(f"  {case.label()} fwd+bwd in scan")
    reps = 1 if case.name == "ResNet" else args.reps  # lax's ResNet step takes seconds here
    stats = summarise(paired_times(runners, args.rounds, reps), "lax", 1.0 / length)
    for name, (sec, ratio) in stats.items():
        note = "auto" if name == auto else ""
        rows.append(
            Row(
                "scan",
                case.label(),
                "fwd+bwd per scan step",
                name,
                sec,
                ratio,
                "lax",
                compile_s[name],
                note,
            )
        )
    return rows


def bench_pool(case: PoolCase, args: argparse.Namespace, dev: Any, tdev: str) -> list[Row]:
    import jax
    import numpy as onp
    import torch
    from jax import lax

    import jaxconv

    rng = np.random.default_rng(1)
    x = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(np.float32)
    oh = (case.h + 2 * case.p - case.k) // case.s + 1
    ct = rng.standard_normal((case.n, case.c, oh, oh)).astype(np.float32)
    jx, jct = (jax.device_put(a.transpose(0, 2, 3, 1), dev) for a in (x, ct))
    win, strides = (1, case.k, case.k, 1), (1, case.s, case.s, 1)
    pads = ((0, 0), (case.p, case.p), (case.p, case.p), (0, 0))

    if case.mode == "max":
        ours = lambda x: jaxconv.max_pool2d(x, case.k, case.s, case.p, layout="NHWC")  # noqa: E731
        # JAX's own: reduce_window max with its select_and_scatter gradient
        plain = lambda x: lax.reduce_window(x, -onp.inf, lax.max, win, strides, pads)  # noqa: E731
    else:
        ours = lambda x: jaxconv.avg_pool2d(x, case.k, case.s, case.p, layout="NHWC")  # noqa: E731
        plain = lambda x: lax.reduce_window(x, 0.0, lax.add, win, strides, pads) / case.k**2  # noqa: E731

    tx, tct = (torch.from_numpy(a).to(tdev) for a in (x, ct))
    sync = torch_sync(tdev)
    tpool = getattr(torch.nn.functional, f"{case.mode}_pool2d")
    gx = tx.clone().requires_grad_(True)

    def torch_fwd() -> None:
        with torch.no_grad():
            tpool(tx, case.k, case.s, case.p)
        sync()

    def torch_fwd_bwd() -> None:
        gx.grad = None
        y = tpool(gx, case.k, case.s, case.p)
        y.backward(y.detach() - tct)
        sync()

    rows = []
    for passes in ("fwd", "fwd+bwd"):
        runners, compile_s = {}, {}
        for name, f in (("jaxconv", ours), ("lax.reduce_window", plain)):
            fn, fargs = (f, (jx,)) if passes == "fwd" else (_grad_fn(f, (0,)), (jx, jct))
            exe, compile_s[name] = compiled(fn, *fargs)
            runners[name] = jax_runner(exe, *fargs)
        torch_fwd() if passes == "fwd" else torch_fwd_bwd()
        runners["torch"] = torch_fwd if passes == "fwd" else torch_fwd_bwd
        log(f"  {case.label()} {passes}")
        stats = summarise(paired_times(runners, args.rounds, args.reps), "torch")
        for name, (sec, ratio) in stats.items():
            rows.append(
                Row("ops", case.label(), passes, name, sec, ratio, "torch", compile_s.get(name))
            )
    return rows


def bench_manual(args: argparse.Namespace, dev: Any) -> list[Row]:
    """The chapter's manual (vmap) functions against their lax twins, jitted."""
    import jax

    import jaxconv

    rng = np.random.default_rng(2)
    size = 32 if args.quick else 128
    X = jax.device_put(rng.standard_normal((size, size)).astype(np.float32), dev)
    K = jax.device_put(rng.standard_normal((5, 5)).astype(np.float32), dev)
    X3 = jax.device_put(rng.standard_normal((3, size, size)).astype(np.float32), dev)
    K4 = jax.device_put(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), dev)
    cases = [
        (f"corr2d {size}x{size} * 5x5", jaxconv.corr2d, jaxconv.corr2d_vmap, (X, K)),
        (
            f"corr2d_multi_in_out 3x{size}x{size} * 8x3x3x3",
            lambda X, K: jaxconv.corr2d_multi_in_out(X, K, impl="lax"),
            lambda X, K: jaxconv.corr2d_multi_in_out(X, K, impl="vmap"),
            (X3, K4),
        ),
        (
            f"pool2d max {size}x{size}, 3x3 s1",
            lambda X: jaxconv.max_pool2d(X[None], 3, 1)[0],
            lambda X: jaxconv.pool2d(X, 3, "max"),
            (X,),
        ),
        (
            f"pool2d avg {size}x{size}, 3x3 s1",
            lambda X: jaxconv.avg_pool2d(X[None], 3, 1)[0],
            lambda X: jaxconv.pool2d(X, 3, "avg"),
            (X,),
        ),
    ]
    if args.quick:
        cases = cases[1:3]  # the nested vmaps and a pool: enough for a smoke test
    rows = []
    for label, lax_f, manual_f, fargs in cases:
        out = jax.eval_shape(lax_f, *fargs)
        ct = jax.device_put(rng.standard_normal(out.shape).astype(np.float32), dev)
        for passes in ("fwd", "fwd+bwd"):
            runners, compile_s = {}, {}
            for name, f in (("lax", lax_f), ("manual (vmap)", manual_f)):
                argnums = tuple(range(len(fargs)))
                fn, a = (f, fargs) if passes == "fwd" else (_grad_fn(f, argnums), (*fargs, ct))
                exe, compile_s[name] = compiled(fn, *a)
                runners[name] = jax_runner(exe, *a)
            log(f"  {label} {passes}")
            stats = summarise(paired_times(runners, args.rounds, args.reps), "lax")
            for name, (sec, ratio) in stats.items():
                rows.append(Row("manual", label, passes, name, sec, ratio, "lax", compile_s[name]))
    return rows


# ---------------------------------------------------------------------------- epoch


def load_images(quick: bool, n_needed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST's training set (uint8 (n, 28, 28), int32 labels), or seeded random
    images of the same shape where the files are not available (timings do not depend on it)."""
    if not quick:
        try:
            from jaxconv import data as data_lib

            train = data_lib.load_fashion_mnist().train
            return np.asarray(train.images), np.asarray(train.labels, np.int32), "Fashion-MNIST"
        except Exception as err:  # noqa: BLE001 - any failure: fall back, and say so
            log(f"  Fashion-MNIST not loaded ({type(err).__name__}: {err}); random images")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_needed, 28, 28), dtype=np.uint8)
    return images, rng.integers(0, 10, n_needed).astype(np.int32), "random uint8 images"


class TorchLeNet:
    """The book's LeNet with ReLU and max pooling, PyTorch, NCHW."""

    @staticmethod
    def build() -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(6, 16, kernel_size=5), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(),
            nn.Linear(400, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, 10),
        )  # fmt: skip


def torch_epoch_runner(
    images: np.ndarray, labels: np.ndarray, steps: int, batch: int, tdev: str, on_device: bool
) -> Callable[[], None]:
    """``steps`` optimizer steps of the book's loop. ``on_device``: the data set lives on the
    device and batches are indexed there; otherwise (the book's DataLoader) every batch is
    indexed from CPU tensors and copied."""
    import torch

    torch.manual_seed(0)
    model = TorchLeNet.build().to(tdev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(images).float().div_(255).unsqueeze(1)  # (n, 1, 28, 28)
    Y = torch.from_numpy(labels).long()
    if on_device:
        X, Y = X.to(tdev), Y.to(tdev)
    sync = torch_sync(tdev)
    n = X.shape[0]

    def run() -> None:
        order = torch.randperm(n, device=X.device)
        for i in range(steps):
            idx = order[i * batch : (i + 1) * batch]
            xb, yb = X[idx].to(tdev), Y[idx].to(tdev)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
        sync()

    run()  # warm-up
    return run


def flax_lenet() -> Any:
    """Plain Flax LeNet (modern), NHWC: what a Flax user writes without jaxconv."""
    import flax.linen as nn

    class LeNet(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.relu(nn.Conv(6, (5, 5), padding=2)(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.relu(nn.Conv(16, (5, 5), padding="VALID")(x))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(120)(x))
            x = nn.relu(nn.Dense(84)(x))
            return nn.Dense(10)(x)

    return LeNet()


def _flax_step(model: Any, tx: Any) -> Callable[..., Any]:
    import jax
    import optax

    def step(carry: Any, batch: Any) -> Any:
        params, opt_state = carry
        xb, yb = batch
        x = xb.astype("float32")[..., None] / 255.0

        def loss_fn(p: Any) -> Any:
            logits = model.apply({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    return step


def flax_runners(
    X: Any, Y: Any, batch: int, unroll: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
    """Plain Flax: a jitted step per batch (data on device, batch gathered in the step), and
    the whole epoch in one lax.scan."""
    import jax
    import jax.numpy as jnp
    import optax

    model, tx = flax_lenet(), optax.adam(1e-3)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))["params"]
    carry0 = (params, tx.init(params))
    step = _flax_step(model, tx)
    n = X.shape[0]
    nb = n // batch

    def one_step(carry: Any, X: Any, Y: Any, order: Any, i: Any) -> Any:
        idx = jax.lax.dynamic_slice_in_dim(order, i * batch, batch)
        return step(carry, (X[idx], Y[idx]))[0]

    def epoch(carry: Any, X: Any, Y: Any, key: Any) -> Any:
        order = jax.random.permutation(key, n)[: nb * batch]
        xb, yb = X[order].reshape(nb, batch, 28, 28), Y[order].reshape(nb, batch)
        return jax.lax.scan(step, carry, (xb, yb), unroll=unroll)[0]

    key = jax.random.PRNGKey(1)
    order0 = jax.random.permutation(key, n)
    step_exe, step_c = compiled(one_step, carry0, X, Y, order0, jnp.int32(0))
    epoch_exe, epoch_c = compiled(epoch, carry0, X, Y, key)
    state = {"step": carry0, "scan": carry0}

    def run_step() -> None:
        order = jax.random.permutation(key, n)
        carry = state["step"]
        for i in range(nb):
            carry = step_exe(carry, X, Y, order, jnp.int32(i))
        state["step"] = jax.block_until_ready(carry)

    def run_scan() -> None:
        state["scan"] = jax.block_until_ready(epoch_exe(state["scan"], X, Y, key))

    run_step()
    run_scan()
    return (
        {"flax-step": run_step, "flax-scan": run_scan},
        {"flax-step": step_c, "flax-scan": epoch_c},
    )


def jaxconv_runner(
    X: Any, Y: Any, batch: int, unroll: int, conv_impl: str, layout: str | None = None
) -> tuple[Callable[[], Any], float]:
    """jaxconv's own whole-epoch function (``jaxconv.train.train_epoch``: LeNet from
    jaxconv.models, optax Adam 1e-3, shuffle on device, lax.scan over batches), with the
    activation layout training uses by default (None) or the one given."""
    import jax

    from jaxconv import train

    layout = layout or train.default_layout()
    model = train.LeNet("modern", conv_impl=conv_impl, layout=layout)
    state = train.TrainState.create(model, train.make_optimizer("adam", 1e-3), 0)
    t0 = time.perf_counter()
    exe = train.train_epoch.lower(state, X, Y, batch_size=batch, unroll=unroll).compile()
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run() -> None:
        new_state, metrics = exe(holder["state"], X, Y)
        holder["state"] = jax.block_until_ready(new_state)

    run()
    run.hlo = exe.as_text  # type: ignore[attr-defined]  # for --profile's op descriptions
    return run, compile_s


def describe_ops(hlo: str) -> dict[str, str]:
    """HLO instruction name -> "shape <- what it came from" (the last two parts of its JAX
    op_name metadata), so that a profile's "fusion.12" says which layer it belongs to."""
    import re

    out = {}
    pattern = r"^\s*(?:ROOT )?%([\w.-]+) = (\S+) [^\n]*?op_name=\"([^\"]+)\""
    for name, shape, op in re.findall(pattern, hlo, re.M):
        where = "/".join(op.split("/")[-2:])
        out[name] = f"{shape.split('{')[0]} <- {where}"
    return out


EPOCH_ROWS = {
    "torch-book": "PyTorch eager, book loop (batches indexed from CPU tensors)",
    "torch-device": "PyTorch eager, data on device",
    "flax-step": "plain Flax, jitted step per batch",
    "flax-scan": "plain Flax, whole epoch in lax.scan",
    "jaxconv-auto": "jaxconv train_epoch (scan), training's defaults",
    "jaxconv-chwn": "jaxconv train_epoch (scan), layout CHWN, conv impl auto",
    "jaxconv-nhwc": "jaxconv train_epoch (scan), layout NHWC, conv impl auto",
    "jaxconv-lax": "jaxconv train_epoch (scan), layout NHWC, conv impl lax",
    "jaxconv-vjp": "jaxconv train_epoch (scan), layout NHWC, conv impl vjp",
}
#: (layout, conv impl) of each jaxconv epoch row; layout None: training's default.
JAXCONV_ROWS = {
    "jaxconv-auto": (None, "auto"),
    "jaxconv-chwn": ("CHWN", "auto"),
    "jaxconv-nhwc": ("NHWC", "auto"),
    "jaxconv-lax": ("NHWC", "lax"),
    "jaxconv-vjp": ("NHWC", "vjp"),
}


def bench_epoch(args: argparse.Namespace, dev: Any, tdev: str) -> list[Row]:
    import jax

    from jaxconv import conv as conv_lib

    batch = args.batch
    steps = args.steps or (2 if args.quick else TRAIN_IMAGES // batch)
    full = TRAIN_IMAGES / batch  # every time is per 60,000 images: 234.4 steps of 256
    wanted = [r for r in args.epoch_rows.split(",") if r]
    if tdev == "cpu" and "torch-device" in wanted and "torch-book" in wanted:
        wanted.remove("torch-device")  # on a CPU both loops are the same loop
    from jaxconv.models import default_layout

    geom = conv_lib.conv_geometry((batch, 28, 28, 1), (5, 5, 1, 6), padding=2, layout="NHWC")
    auto = conv_lib.select_impl(geom, np.float32, dev.platform)
    layout = default_layout(dev.platform)

    def program(name: str) -> tuple[str, str]:  # (layout, impl) a row actually runs
        lay, impl = JAXCONV_ROWS[name]
        return lay or layout, auto if impl == "auto" else impl

    seen = set()  # a row that runs the same program as an earlier one (auto first) is dropped
    for name in [n for n in JAXCONV_ROWS if n in wanted]:
        if program(name) in seen:
            wanted.remove(name)
        seen.add(program(name))
    images, labels, source = load_images(args.quick, steps * batch)
    sub = slice(0, steps * batch)  # a partial epoch of `steps` steps, scaled to `full`
    X, Y = (jax.device_put(a[sub], dev) for a in (images, labels))
    log(f"  epoch: {steps} steps of batch {batch} ({source}), scaled to {full:.1f} steps")

    runners: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    if "torch-book" in wanted:
        runners["torch-book"] = torch_epoch_runner(
            images[sub], labels[sub], steps, batch, tdev, False
        )
    if "torch-device" in wanted:
        runners["torch-device"] = torch_epoch_runner(
            images[sub], labels[sub], steps, batch, tdev, True
        )
    if {"flax-step", "flax-scan"} & set(wanted):
        fl, fc = flax_runners(X, Y, batch, args.unroll)
        for name in ("flax-step", "flax-scan"):
            if name in wanted:
                runners[name], compile_s[name] = fl[name], fc[name]
    for name, (lay, impl) in JAXCONV_ROWS.items():
        if name in wanted:
            log(f"  compiling {name}")
            runners[name], compile_s[name] = jaxconv_runner(X, Y, batch, args.unroll, impl, lay)
    log(f"  timing {', '.join(runners)}")
    base = "torch-book" if "torch-book" in runners else None
    stats = summarise(paired_times(runners, args.epoch_rounds, 1), base, full / steps)
    scaled = f"{steps} steps timed, scaled to {full:.1f}"
    rows = []
    for name, (sec, ratio) in stats.items():
        note = "; ".join(
            s
            for s in (scaled,
                      f"layout {layout}, auto = {auto}" if name == "jaxconv-auto" else "",
                      f"unroll {args.unroll}" if args.unroll != 1 and "torch" not in name else "")
            if s
        )  # fmt: skip
        label = EPOCH_ROWS[name]
        rows.append(
            Row(
                "epoch",
                f"LeNet modern, batch {batch}, Adam 1e-3",
                "epoch",
                label,
                sec,
                ratio,
                base and EPOCH_ROWS[base],
                compile_s.get(name),
                note,
            )
        )
    return rows


# ---------------------------------------------------------------------------- the floor


def lenet_flops(batch: int) -> float:
    """Multiply-adds x 2 of one modern-LeNet training step (forward, weight gradients, input
    gradients where the backward pass needs them; elementwise work and Adam left out)."""
    conv1 = batch * 28 * 28 * 6 * 25  # forward; its weight gradient is as large; no dX
    conv2 = batch * 10 * 10 * 16 * 150  # forward, dW and dX
    dense = batch * (400 * 120 + 120 * 84 + 84 * 10)  # forward, dW and dX
    return 2.0 * (2 * conv1 + 3 * conv2 + 3 * dense)


def lenet_activation_bytes(batch: int) -> float:
    """float32 bytes of one step's activations (input, conv, pool and dense outputs) times 4:
    written in the forward pass, read back by the backward pass, and their gradients written
    and read once. A model of the compulsory memory traffic, not a measurement."""
    per_image = 28 * 28 + 28 * 28 * 6 + 14 * 14 * 6 + 10 * 10 * 16 + 5 * 5 * 16 + 120 + 84 + 10
    return 4.0 * 4 * batch * per_image


def bench_floor(args: argparse.Namespace, dev: Any, epoch_rows: list[Row]) -> list[Row]:
    """The machine's measured peaks (a large float32 matmul; reading a large array) and the
    floor they put under a LeNet epoch: its FLOPs at matmul speed, its compulsory activation
    traffic at read speed (the larger of the two)."""
    import jax
    import jax.numpy as jnp

    n = 512 if args.quick else 2048
    a = jax.device_put(np.random.default_rng(0).standard_normal((n, n)).astype(np.float32), dev)
    mm, _ = compiled(lambda a: a @ a, a)
    big = jax.device_put(np.ones(2**22 if args.quick else 2**25, np.float32), dev)
    rd, _ = compiled(jnp.sum, big)  # reads every byte once, allocates nothing
    times = paired_times({"mm": jax_runner(mm, a), "read": jax_runner(rd, big)}, args.rounds, 3)
    gflops = 2 * n**3 / statistics.median(times["mm"]) / 1e9
    gbytes = big.nbytes / statistics.median(times["read"]) / 1e9

    batch = args.batch
    steps = TRAIN_IMAGES / batch
    flops = lenet_flops(batch) * steps
    traffic = lenet_activation_bytes(batch) * steps
    floor = max(flops / (gflops * 1e9), traffic / (gbytes * 1e9))
    case = f"{dev.platform} peaks; LeNet epoch = 60,000 images at batch {batch}"
    rows = [
        Row("floor", case, "peak", f"float32 matmul {n}x{n}: {gflops:.1f} GFLOP/s", math.nan),
        Row("floor", case, "peak", f"sum of {big.nbytes // 2**20} MiB: {gbytes:.1f} GB/s read",
            math.nan),
        Row("floor", case, "epoch", f"LeNet FLOPs per epoch: {flops / 1e9:.0f} GFLOP",
            flops / (gflops * 1e9), note="at matmul speed"),
        Row("floor", case, "epoch",
            f"activation traffic per epoch (model): {traffic / 1e9:.1f} GB",
            traffic / (gbytes * 1e9), note="at read speed"),
    ]  # fmt: skip
    for r in epoch_rows:
        rows.append(Row("floor", case, "epoch", f"{r.contender}: share of the floor", r.seconds,
                        floor / r.seconds, note=f"floor {fmt_time(floor)}"))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- profile


def bench_profile(args: argparse.Namespace, dev: Any) -> list[Row]:
    """Where a jaxconv epoch step spends its time: one partial epoch under jax.profiler,
    device (GPU) kernels or XLA:CPU thunks summed by name, per step."""
    import collections
    import shutil

    import jax

    batch, steps = args.batch, args.steps or (2 if args.quick else 50)
    images, labels, _ = load_images(True, steps * batch)  # random: the data does not matter
    X, Y = jax.device_put(images, dev), jax.device_put(labels, dev)
    run, _ = jaxconv_runner(X, Y, batch, args.unroll, "auto")
    run()
    where = Path(tempfile.mkdtemp(prefix="jaxconv-profile-"))
    try:
        with jax.profiler.trace(str(where)):
            t0 = time.perf_counter()
            run()
            wall = time.perf_counter() - t0
        data = jax.profiler.ProfileData.from_file(str(next(where.rglob("*.xplane.pb"))))
        total: collections.Counter = collections.Counter()
        count: collections.Counter = collections.Counter()
        planes = [p for p in data.planes if p.name.startswith("/device:")]
        if planes:  # GPU: XLA's op line if the profiler wrote one, else the kernels per stream
            lines = [ln for p in planes for ln in p.lines]
            names = {ln.name for ln in lines}
            pick = "XLA Ops" if "XLA Ops" in names else "Stream"
            lines = [ln for ln in lines if ln.name.startswith(pick)]
        else:  # XLA:CPU: the thunks run on its Eigen threads
            pick = "XLA:CPU thunks"
            lines = [
                ln
                for p in data.planes
                if p.name.startswith("/host:CPU")
                for ln in p.lines
                if ln.name.startswith("tf_XLAEigen")
            ]
        for line in lines:
            for ev in line.events:
                if ev.name.startswith("ThunkExecutor"):
                    continue
                total[ev.name] += ev.duration_ns
                count[ev.name] += 1
    finally:
        shutil.rmtree(where, ignore_errors=True)
    case = f"jaxconv epoch step, batch {batch} ({pick})"
    busy = sum(total.values()) / 1e9
    rows = [
        Row("profile", case, "step", "wall time per step", wall / steps),
        Row("profile", case, "step", f"ops per step: {sum(count.values()) / steps:.0f}",
            busy / steps, busy / wall, note="busy / wall"),
    ]  # fmt: skip
    what = describe_ops(run.hlo()) if hasattr(run, "hlo") else {}
    for name, ns in total.most_common(12):
        note = f"x{count[name] / steps:.0f} per step; {what.get(name, '')}"[:150]
        rows.append(Row("profile", case, "step", name[:70], ns / 1e9 / steps, ns / 1e9 / busy,
                        note=note))  # fmt: skip
    return rows


# ---------------------------------------------------------------------------- GPU sweep


def gpu_sweep(args: argparse.Namespace) -> list[Row]:
    """Each XLA_FLAGS set in its own process; rows labelled with the flags."""
    rows: list[Row] = []
    start = getattr(args, "started", time.perf_counter())  # the budget counts from main()
    for label, flags, extra in GPU_SWEEP:
        elapsed = time.perf_counter() - start
        if elapsed > args.sweep_budget_s:
            log(f"  sweep: time budget spent, skipping {label!r}")
            rows.append(Row("sweep", label, "epoch", "skipped: --sweep-budget-s spent", math.nan,
                            note=flags))  # fmt: skip
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            cmd = [
                sys.executable,
                __file__,
                "--section",
                "epoch",
                "--device",
                args.device,
                "--epoch-rows",
                GPU_SWEEP_ROWS,
                "--epoch-rounds",
                str(args.epoch_rounds),
                f"--xla-flags={flags}",  # one token: a value starting with -- is not an option
                "--json",
                str(out),
                "--no-tables",
                "--no-floor",
            ] + extra
            if args.quick:
                cmd.append("--quick")
            log(f"  sweep: {label}: XLA_FLAGS={flags!r} {' '.join(extra)}")
            timeout = max(30.0, args.sweep_budget_s + 40 - elapsed)
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
                ok = proc.returncode == 0 and out.exists()
                why = "" if ok else (proc.stderr.strip().splitlines() or ["no output"])[-1][:160]
            except subprocess.TimeoutExpired:
                ok, why = False, f"timed out after {timeout:.0f} s"
            if not ok:
                rows.append(Row("sweep", label, "epoch", f"FAILED: {why}", math.nan, note=flags))
                continue
            for r in json.loads(out.read_text())["rows"]:
                r.update(
                    table="sweep", case=label, note="; ".join(s for s in (flags, r["note"]) if s)
                )
                rows.append(Row(**r))
    return rows


# ---------------------------------------------------------------------------- report


def machine_info(dev: Any) -> dict[str, Any]:
    import jax
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": f"{cpu}, {os.cpu_count()} logical cores"
        + (f", pinned to {sorted(os.sched_getaffinity(0))}" if _pinned() else ""),
        "device": str(dev.device_kind) if hasattr(dev, "device_kind") else str(dev),
        "jax": jax.__version__,
        "torch": f"{torch.__version__}, {torch.get_num_threads()} threads",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
    }
    try:
        import flax

        info["flax"] = flax.__version__
    except ImportError:
        pass
    return info


def _pinned() -> bool:
    return hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < (os.cpu_count() or 1)


def fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds:.3f} s" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def fmt_ratio(ratio: float | None) -> str:
    return "" if ratio is None or not math.isfinite(ratio) else f"{ratio:.2f}x"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def render(rows: list[Row], meta: dict[str, Any]) -> str:
    out = ["## jaxconv benchmark", ""]
    out += [f"- {k}: {v}" for k, v in meta.items()]
    titles = {
        "ops": "Ops: median time and ratio to PyTorch (paired rounds); 'auto' marks what "
        "impl='auto' runs",
        "scan": "Conv forward+backward per step inside lax.scan (a training epoch's setting); "
        "ratio to lax",
        "manual": "The chapter's manual (vmap) functions against lax, jitted; ratio to lax",
        "epoch": "LeNet epoch (seconds per epoch, compile apart); ratio to PyTorch's book loop",
        "floor": "The floor: measured peaks, and each epoch's time against max(FLOPs / matmul "
        "peak, activation bytes / read speed); ratio = floor / time",
        "profile": "Profile of a jaxconv epoch: time per step by op; ratio = share of busy time",
        "sweep": "GPU sweep: epoch rows per XLA_FLAGS set (each a fresh process)",
    }
    for table, title in titles.items():
        sel = [r for r in rows if r.table == table]
        if not sel:
            continue
        out += ["", f"### {title}", ""]
        if table in ("floor", "profile"):
            header = ["case", "what", "time", "ratio", "note"]
            body = [
                [r.case, r.contender, fmt_time(r.seconds), fmt_ratio(r.ratio), r.note] for r in sel
            ]
        elif table in ("epoch", "sweep"):
            header = ["case", "contender", "per epoch", "ratio", "compile", "note"]
            body = [
                [
                    r.case,
                    r.contender,
                    fmt_time(r.seconds),
                    fmt_ratio(r.ratio),
                    "" if r.compile_s is None else f"{r.compile_s:.1f} s",
                    r.note,
                ]
                for r in sel
            ]
        else:
            header = ["case", "pass", "contender", "median", "ratio", "note"]
            body = [
                [r.case, r.passes, r.contender, fmt_time(r.seconds), fmt_ratio(r.ratio), r.note]
                for r in sel
            ]
        out.append(markdown_table(header, body))
    return "\n".join(out)


# ---------------------------------------------------------------------------- main


def guarded(table: str, case: str, fn: Callable[..., list[Row]], *args: Any) -> list[Row]:
    """``fn(*args)``'s rows, or one FAILED row saying why: one broken case (a backend
    without some op, out of memory) must not cost the rest of a run's tables."""
    try:
        return fn(*args)
    except Exception as err:  # noqa: BLE001 - reported in the table and on stderr
        import traceback

        traceback.print_exc()
        why = f"{type(err).__name__}: {err}".splitlines()[0][:160]
        return [Row(table, case, "-", f"FAILED: {why}", math.nan)]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, 1 round (a smoke test)")
    p.add_argument("--section", choices=("ops", "epoch", "all"), default="all")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps timed per epoch round, scaled to a full epoch "
        "(default: 40 on CPU, a full epoch on GPU)",
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
    p.add_argument("--sweep-budget-s", type=float, default=GPU_SWEEP_BUDGET_S,
                   help="start no sweep process later than this into the run")  # fmt: skip
    p.add_argument("--json", type=Path, default=None, help="write every row and the metadata here")
    p.add_argument("--profile", action="store_true",
                   help="also profile a jaxconv epoch: time per step by op")  # fmt: skip
    p.add_argument("--no-tables", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-floor", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    gpu = args.device == "gpu"
    if args.steps is None and not gpu and not args.quick:
        args.steps = 40
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.reps = args.reps or (1 if args.quick else 3)
    args.epoch_rounds = args.epoch_rounds or (1 if args.quick else 3)
    if args.quick:
        args.batch = min(args.batch, 32)
    return args


def configure_environment(args: argparse.Namespace) -> None:
    """Set what JAX reads once, at backend start: the platform and XLA_FLAGS."""
    if args.device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
    if args.xla_flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()


def main(argv: Sequence[str] | None = None) -> list[Row]:
    args = parse_args(argv)
    args.started = time.perf_counter()
    configure_environment(args)
    import jax
    import torch

    dev = jax.devices()[0]
    if args.device == "gpu" and dev.platform != "gpu":
        raise SystemExit(f"--device gpu: JAX sees no GPU (devices: {jax.devices()})")
    if args.device == "gpu" and not torch.cuda.is_available():
        raise SystemExit("--device gpu: PyTorch sees no CUDA device")
    tdev = "cuda" if args.device == "gpu" else "cpu"
    if tdev == "cpu" and hasattr(os, "sched_getaffinity"):
        # as many threads as cores this process may use (under `taskset -c 1`: one, as XLA)
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    load_before = os.getloadavg()
    rows: list[Row] = []
    t0 = time.perf_counter()
    if args.section in ("ops", "all"):
        log("ops")
        for case in conv_cases(args.quick):
            rows += guarded("ops", case.label(), bench_conv, case, args, dev, tdev)
        for case in pool_cases(args.quick):
            rows += guarded("ops", case.label(), bench_pool, case, args, dev, tdev)
        rows += guarded("manual", "manual paths", bench_manual, args, dev)
    if args.section in ("epoch", "all"):
        log("epoch")
        epoch_rows = guarded("epoch", "LeNet epoch", bench_epoch, args, dev, tdev)
        rows += epoch_rows
        if not args.no_floor:
            log("machine peaks")
            rows += guarded("floor", "peaks", bench_floor, args, dev, epoch_rows)
    if args.profile:
        log("profile")
        rows += guarded("profile", "profile", bench_profile, args, dev)
    if args.gpu_sweep:
        log("GPU sweep")
        rows += gpu_sweep(args)
    meta = machine_info(dev)
    meta["load average (1 min) before / after"] = (
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    meta["benchmark wall time"] = f"{time.perf_counter() - t0:.0f} s"
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "rows": [dataclasses.asdict(r) for r in rows]}, indent=1)
        )
    if not args.no_tables:
        print(render(rows, meta))
    return rows


if __name__ == "__main__":
    main()
