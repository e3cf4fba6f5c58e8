"""Section ``epoch``: a modern LeNet epoch (ReLU, max pool, Adam 1e-3) side by side, and the
floor the machine's measured peaks put under it.

Contenders: PyTorch eager as in the book (batches indexed per step from CPU tensors),
PyTorch with the data on the device (GPU only: on a CPU it is the same loop), plain Flax with
a jitted step per batch, plain Flax with the whole epoch in ``lax.scan``, and
``jaxconv.train.train_epoch`` with training's defaults and with chosen layouts and conv paths
(a row that would run the same program as an earlier one is left out). ``--steps`` steps are
timed and scaled to the 60,000 training images (the note says so).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxconv.bench import _engine
from jaxconv.bench.contenders import (
    EPOCH_ROWS,
    IMAGE_HW,
    JAXCONV_ROWS,
    Setup,
    flax_runners,
    jaxconv_runner,
    torch_epoch_runner,
)
from jaxconv.bench.report import Row, fmt_time
from jaxconv.bench.timing import compiled, jax_runner, log, paired_times, summarise

TRAIN_IMAGES = 60_000  # an epoch's time is scaled to the whole training set
QUICK_STEPS = 2


def load_images(quick: bool, n_needed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST's training set (uint8 (n, 28, 28), int32 labels) and its name, or seeded
    random images of the same shape where the files are not available (or under ``quick``):
    timings do not depend on the pixels."""
    if not quick:
        try:
            from jaxconv import data as data_lib

            train = data_lib.load_fashion_mnist().train
            return np.asarray(train.images), np.asarray(train.labels, np.int32), "Fashion-MNIST"
        except Exception as err:  # noqa: BLE001 - any failure: fall back, and say so
            log(f"  Fashion-MNIST not loaded ({type(err).__name__}: {err}); random images")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n_needed, *IMAGE_HW), dtype=np.uint8)
    return images, rng.integers(0, 10, n_needed).astype(np.int32), "random uint8 images"


def epoch_programs(
    wanted: list[str], layout: str, auto: str, tdev: str, has_torch: bool
) -> list[str]:
    """The rows of ``wanted`` worth running: PyTorch's rows only with torch, its on-device
    loop not on a CPU (the same loop as the book's there), and no jaxconv row whose
    (layout, impl) an earlier one already runs ("auto" resolved to ``auto``, layout None to
    training's ``layout``)."""
    out = [r for r in wanted if has_torch or not r.startswith("torch")]
    if tdev == "cpu" and "torch-device" in out and "torch-book" in out:
        out.remove("torch-device")
    seen = set()
    for name in [n for n in JAXCONV_ROWS if n in out]:
        lay, impl = JAXCONV_ROWS[name]
        program = (lay or layout, auto if impl == "auto" else impl)
        if program in seen:
            out.remove(name)
        seen.add(program)
    return out


def bench_epoch(setup: Setup) -> list[Row]:
    """The epoch table: each contender's seconds per 60,000 images, ratio to the book loop."""
    import jax

    args, dev = setup.args, setup.dev
    batch = args.batch
    steps = args.steps or (QUICK_STEPS if args.quick else TRAIN_IMAGES // batch)
    full = TRAIN_IMAGES / batch  # every time is per 60,000 images: 234.4 steps of 256
    layout = _engine.training_layout(dev.platform)
    auto = _engine.conv_auto_impl(
        (batch, *IMAGE_HW, 1), (5, 5, 1, 6), np.float32, dev.platform, padding=2
    )
    wanted = [r for r in args.epoch_rows.split(",") if r]
    wanted = epoch_programs(wanted, layout, auto, setup.tdev, setup.torch is not None)
    images, labels, source = load_images(args.quick, steps * batch)
    sub = slice(0, steps * batch)  # a partial epoch of `steps` steps, scaled to `full`
    X, Y = (jax.device_put(a[sub], dev) for a in (images, labels))
    log(f"  epoch: {steps} steps of batch {batch} ({source}), scaled to {full:.1f} steps")

    runners: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    for name, on_device in (("torch-book", False), ("torch-device", True)):
        if name in wanted:
            runners[name] = torch_epoch_runner(
                setup, images[sub], labels[sub], steps, batch, on_device
            )
    if {"flax-step", "flax-scan"} & set(wanted):
        fl, fc = flax_runners(X, Y, batch, args.unroll)
        for name in ("flax-step", "flax-scan"):
            if name in wanted:
                runners[name], compile_s[name] = fl[name], fc[name]
    for name, (lay, impl) in JAXCONV_ROWS.items():
        if name in wanted:
            log(f"  compiling {name}")
            runners[name], compile_s[name] = jaxconv_runner(
                X, Y, batch, args.unroll, impl, lay or layout
            )
    log(f"  timing {', '.join(runners)}")
    base = "torch-book" if "torch-book" in runners else None
    stats = summarise(paired_times(runners, args.epoch_rounds, 1), base, full / steps)
    scaled = f"{steps} steps timed, scaled to {full:.1f}"
    rows = []
    for name, (sec, ratio) in stats.items():
        notes = (
            scaled,
            f"layout {layout}, auto = {auto}" if name == "jaxconv-auto" else "",
            f"unroll {args.unroll}" if args.unroll != 1 and "torch" not in name else "",
        )
        rows.append(
            Row(
                "epoch",
                f"LeNet modern, batch {batch}, Adam 1e-3",
                "epoch",
                EPOCH_ROWS[name],
                sec,
                ratio,
                base and EPOCH_ROWS[base],
                compile_s.get(name),
                "; ".join(s for s in notes if s),
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


def bench_floor(setup: Setup, epoch_rows: list[Row]) -> list[Row]:
    """The machine's measured peaks (a large float32 matmul; reading a large array) and the
    floor they put under a LeNet epoch: its FLOPs at matmul speed, its compulsory activation
    traffic at read speed (the larger of the two); each epoch row's share of that floor."""
    import jax
    import jax.numpy as jnp

    args, dev = setup.args, setup.dev
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
        Row(
            "floor",
            case,
            "peak",
            f"sum of {big.nbytes // 2**20} MiB: {gbytes:.1f} GB/s read",
            math.nan,
        ),
        Row(
            "floor",
            case,
            "epoch",
            f"LeNet FLOPs per epoch: {flops / 1e9:.0f} GFLOP",
            flops / (gflops * 1e9),
            note="at matmul speed",
        ),
        Row(
            "floor",
            case,
            "epoch",
            f"activation traffic per epoch (model): {traffic / 1e9:.1f} GB",
            traffic / (gbytes * 1e9),
            note="at read speed",
        ),
    ]
    for r in epoch_rows:
        if math.isfinite(r.seconds):
            rows.append(
                Row(
                    "floor",
                    case,
                    "epoch",
                    f"{r.contender}: share of the floor",
                    r.seconds,
                    floor / r.seconds,
                    note=f"floor {fmt_time(floor)}",
                )
            )
    return rows
