"""Section ``resnet``: the book's ResNet-18 training step (NCHW 1x96x96 images, batch 64,
Adam 1e-3, batch norm in training mode) side by side, and where jaxconv's step spends its time.

Contenders, timed in one run in a rotating order, ratios to PyTorch:

- PyTorch eager: the book's torch ResNet-18 (``reference_torch/book_models.py``, found as the
  tests find it), one step of forward, backward and ``Adam.step``. Where that file is not there
  the row says so and the others still run.
- jaxconv: ``jaxconv.models.resnet18`` and ``optax.adam``, one jitted step that updates the
  parameters, the optimizer state and the batch statistics (as :mod:`jaxconv.steps` does), in
  both of the networks' layouts: ``layout="NCHW"`` (torch's) and ``"NHWC"`` (channels last:
  each conv runs without transposes around it, Adam reads the HWIO gradients in stored order;
  the batch is transposed once, outside the step). The note ``auto`` marks the layout training
  picks on this backend (:func:`jaxconv.kernels.dispatch.default_network_layout`), which the
  profile runs.
- plain Flax: the same architecture in ``flax.linen`` (Conv, BatchNorm, max_pool; NHWC), what a
  Flax user writes without jaxconv, with the same optax step.

A second table times the steps as training runs them: :data:`SCAN_STEPS` steps of jaxconv's
network (training's layout) inside one ``lax.scan`` (as :func:`jaxconv.steps.train_epoch`
runs an epoch), per step, against as many PyTorch steps. XLA:CPU compiles some convolution
gradients into slower forms inside loops than in a plain jit, so the jitted step alone does
not show an epoch's speed. Plain Flax is left out of it: its convolutions are all XLA's, the
slow forms in loops, which would make one timed call take tens of seconds.

The profile (``--profile`` with this section) runs jaxconv's step under ``jax.profiler`` and
sums XLA:CPU's thunks (or a GPU's kernels) by kind of work: convolutions forward and backward by
shape, batch norm, max pooling, elementwise, the optimizer.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from jaxconv.bench.contenders import Setup, torch_sync
from jaxconv.bench.report import Row
from jaxconv.bench.sections.common import time_rows
from jaxconv.bench.timing import compiled, log

ROWS = {
    "torch": "PyTorch eager, book ResNet-18, Adam",
    "jaxconv": "jaxconv.models.resnet18(layout='NCHW') + optax.adam, jitted step",
    "jaxconv_nhwc": "jaxconv.models.resnet18(layout='NHWC') + optax.adam, jitted step",
    "flax": "plain Flax NHWC ResNet-18 + optax.adam, jitted step",
}
#: (batch, image side) of the book's setting, and of ``--quick``.
FULL, QUICK = (64, 96), (4, 32)
LEARNING_RATE = 1e-3
#: Steps per timed call in the scanned table (a scan of one step is no loop once compiled).
SCAN_STEPS = 2
#: Where the torch reference is looked for, relative to the repository root (as the tests).
REFERENCE_DIRS = ("../shared/reference_torch", "shared/reference_torch")
TOP_KINDS = 16


def book_models_path() -> Path | None:
    """``book_models.py`` of the torch reference: under ``$JAXCONV_REFERENCE_TORCH``, else
    beside or inside the repository root; None where it is in none of them."""
    root = Path(__file__).resolve().parents[3]
    dirs = [root / d for d in REFERENCE_DIRS]
    if os.environ.get("JAXCONV_REFERENCE_TORCH"):
        dirs.insert(0, Path(os.environ["JAXCONV_REFERENCE_TORCH"]))
    return next((d / "book_models.py" for d in dirs if (d / "book_models.py").is_file()), None)


def load_book_models() -> ModuleType | None:
    """The torch reference module, or None where its file is not found."""
    path = book_models_path()
    if path is None:
        return None
    spec = importlib.util.spec_from_file_location("book_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def batch_data(batch: int, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded images (batch, 1, side, side) in [0, 1) and labels (batch,) int32 (the time
    does not depend on the pixels)."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, side, side), dtype=np.float32)
    return x, rng.integers(0, 10, batch).astype(np.int32)


# ---------------------------------------------------------------------------- contenders


def torch_runner(setup: Setup, book: ModuleType, x: np.ndarray, y: np.ndarray) -> Callable:
    """One training step of the book's torch ResNet-18 (train mode, Adam), warmed up."""
    torch, tdev = setup.torch, setup.tdev
    torch.manual_seed(0)
    net = book.resnet18().to(tdev).train()
    opt = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    loss_fn = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x).to(tdev), torch.from_numpy(y).long().to(tdev)
    sync = torch_sync(torch, tdev)

    def run() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(net(tx), ty).backward()
        opt.step()
        sync()

    run()
    return run


def jax_step(apply: Callable[..., Any], tx: Any) -> Callable[..., Any]:
    """``(params, batch_stats, opt_state, x, y) -> same, loss``: one optimizer step of a Flax
    model with batch norm, ``apply(variables, x)`` returning (logits, updated variables)."""
    import jax
    import optax

    def step(params: Any, batch_stats: Any, opt_state: Any, x: Any, y: Any) -> Any:
        def loss_fn(p: Any) -> Any:
            logits, updates = apply({"params": p, "batch_stats": batch_stats}, x)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
            return loss, updates["batch_stats"]

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        with jax.named_scope("optimizer"):  # the profile's name for this part
            updates, opt_state = tx.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
        return params, stats, opt_state, loss

    return step


def scanned(step: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` over the leading axis of stacked batches ``x`` and ``y`` inside one
    ``lax.scan``, carrying parameters, batch statistics and optimizer state: an epoch's form."""
    import jax

    def steps(params: Any, batch_stats: Any, opt_state: Any, xs: Any, ys: Any) -> Any:
        def body(carry: Any, xy: Any) -> Any:
            *carry, loss = step(*carry, *xy)
            return tuple(carry), loss

        carry, losses = jax.lax.scan(body, (params, batch_stats, opt_state), (xs, ys))
        return *carry, losses

    return steps


def step_runner(
    step: Callable[..., Any],
    variables: dict[str, Any],
    tx: Any,
    x: Any,
    y: Any,
    options: dict[str, Any] | None = None,
    steps: int = 0,
) -> tuple[Callable[[], None], float, Callable[[], str]]:
    """A warmed-up runner of the compiled ``step`` (XLA compile ``options``) that carries its
    state from call to call, its compile seconds, and the compiled program's HLO text. With
    ``steps``, each call runs that many steps on the batch inside one ``lax.scan``."""
    import jax
    import jax.numpy as jnp

    params = variables["params"]
    carry = [params, variables.get("batch_stats", {}), tx.init(params)]
    if steps:
        step, x, y = scanned(step), jnp.stack([x] * steps), jnp.stack([y] * steps)
    exe, seconds = compiled(step, *carry, x, y, options=options)

    def run() -> None:
        *new, _ = exe(*carry, x, y)
        carry[:] = jax.block_until_ready(new)

    run()
    return run, seconds, exe.as_text


def as_layout(x: Any, layout: str) -> Any:
    """An NCHW batch in ``layout`` ("NCHW" or "NHWC")."""
    return x.transpose(0, 2, 3, 1) if layout == "NHWC" else x


def jaxconv_runner(
    x: Any, y: Any, layout: str | None = None, steps: int = 0
) -> tuple[Callable[[], None], float, Callable[[], str]]:
    """jaxconv's ResNet-18 step on the NCHW batch ``x`` (the book's), in ``layout`` (None:
    :func:`~jaxconv.kernels.dispatch.default_network_layout`, what training takes); with
    ``steps``, that many steps inside one ``lax.scan`` per call."""
    import optax

    from jaxconv.kernels.dispatch import compiler_options, default_network_layout
    from jaxconv.models import resnet18
    from jaxconv.networks import init_variables

    layout = default_network_layout() if layout is None else layout
    model, tx = resnet18(layout=layout), optax.adam(LEARNING_RATE)
    x = as_layout(x, layout)
    variables = init_variables(model, 0, x.shape)

    def apply(v: Any, xb: Any) -> Any:
        return model.apply(v, xb, train=True, mutable=["batch_stats"])

    # compiled as jaxconv.jit compiles it (what `jaxconv train` does for its epoch)
    return step_runner(jax_step(apply, tx), variables, tx, x, y, compiler_options(), steps)


#: jaxconv's compiled step per (device, batch, side, layout): the table and the profile of one
#: run share it (compiling ResNet-18 is most of a quick run).
_COMPILED: dict[tuple[Any, int, int, str], tuple[Callable[[], None], float, Callable[[], str]]] = {}

#: The row of each layout.
LAYOUT_ROWS = {"NCHW": ROWS["jaxconv"], "NHWC": ROWS["jaxconv_nhwc"]}


def training_layout(dev: Any) -> str:
    """The layout training runs a chapter-7 network in on ``dev``'s backend."""
    from jaxconv.kernels.dispatch import default_network_layout

    return default_network_layout(dev.platform)


def shared_jaxconv_runner(
    dev: Any, batch: int, side: int, layout: str | None = None
) -> tuple[Callable[[], None], float, Callable[[], str]]:
    """:func:`jaxconv_runner` on :func:`batch_data` on ``dev`` in ``layout`` (None: the
    training layout of ``dev``'s backend), compiled once per process."""
    import jax

    layout = training_layout(dev) if layout is None else layout
    key = (dev, batch, side, layout)
    if key not in _COMPILED:
        x, y = (jax.device_put(a, dev) for a in batch_data(batch, side))
        _COMPILED[key] = jaxconv_runner(x, y, layout)
    return _COMPILED[key]


def flax_resnet18(num_classes: int = 10) -> Any:
    """Plain Flax ResNet-18 (the book's architecture), NHWC: what a Flax user writes."""
    import flax.linen as nn

    class Block(nn.Module):
        c: int
        strides: int = 1
        project: bool = False

        @nn.compact
        def __call__(self, x: Any, train: bool) -> Any:
            norm = lambda: nn.BatchNorm(use_running_average=not train, momentum=0.9)  # noqa: E731
            s = (self.strides, self.strides)
            y = nn.relu(norm()(nn.Conv(self.c, (3, 3), s, padding=1)(x)))
            y = norm()(nn.Conv(self.c, (3, 3), padding=1)(y))
            if self.project:
                x = nn.Conv(self.c, (1, 1), s)(x)
            return nn.relu(y + x)

    class ResNet18(nn.Module):
        @nn.compact
        def __call__(self, x: Any, train: bool = True) -> Any:
            x = nn.Conv(64, (7, 7), (2, 2), padding=3)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
            for i, c in enumerate((64, 128, 256, 512)):
                x = Block(c, 1 if i == 0 else 2, i > 0)(x, train)
                x = Block(c)(x, train)
            return nn.Dense(num_classes)(x.mean(axis=(1, 2)))

    return ResNet18()


def flax_runner(x: Any, y: Any) -> tuple[Callable[[], None], float, Callable[[], str]]:
    """The plain Flax step (NHWC input: the transpose of the book's NCHW batch)."""
    import jax
    import optax

    model, tx = flax_resnet18(), optax.adam(LEARNING_RATE)
    xh = x.transpose(0, 2, 3, 1)
    variables = jax.jit(model.init)(jax.random.key(0), xh)

    def apply(v: Any, xb: Any) -> Any:
        return model.apply(v, xb, train=True, mutable=["batch_stats"])

    return step_runner(jax_step(apply, tx), variables, tx, xh, y)


def bench_resnet(setup: Setup) -> list[Row]:
    """The ResNet-18 table: each contender's time per training step, ratio to PyTorch."""
    import jax

    batch, side = QUICK if setup.args.quick else FULL
    case = f"ResNet-18 train step, batch {batch}, 1x{side}x{side}, Adam, batch norm"
    xn, yn = batch_data(batch, side)
    x, y = jax.device_put(xn, setup.dev), jax.device_put(yn, setup.dev)
    runners: dict[str, Callable[[], Any]] = {}
    compile_s: dict[str, float] = {}
    rows: list[Row] = []
    if setup.torch is None:
        rows.append(Row("resnet", case, "step", ROWS["torch"], np.nan, note="torch not installed"))
    else:
        book = load_book_models()
        if book is None:
            why = "the torch reference book_models.py was not found"
            rows.append(Row("resnet", case, "step", ROWS["torch"], np.nan, note=why))
        else:
            runners[ROWS["torch"]] = torch_runner(setup, book, xn, yn)
    for layout, row in LAYOUT_ROWS.items():
        log(f"  compiling jaxconv {layout}")
        runners[row], compile_s[row], _ = shared_jaxconv_runner(setup.dev, batch, side, layout)
    log("  compiling flax")
    runners[ROWS["flax"]], compile_s[ROWS["flax"]], _ = flax_runner(x, y)
    base = ROWS["torch"] if ROWS["torch"] in runners else None
    reps = 1 if setup.args.quick else 2
    auto = LAYOUT_ROWS[training_layout(setup.dev)]
    rows += time_rows(setup, "resnet", case, "step", runners, compile_s, base, reps=reps, auto=auto)
    return rows + bench_resnet_scan(setup, runners.get(ROWS["torch"]), x, y, reps)


def bench_resnet_scan(
    setup: Setup, torch_step: Callable[[], None] | None, x: Any, y: Any, reps: int
) -> list[Row]:
    """The scanned table: :data:`SCAN_STEPS` steps per call, jaxconv's inside one
    ``lax.scan`` in training's layout, PyTorch's one after another; times per step."""
    batch = x.shape[0]
    case = f"ResNet-18, {SCAN_STEPS} train steps in one call, batch {batch}, per step"
    layout = training_layout(setup.dev)
    name = f"jaxconv.models.resnet18(layout='{layout}') + optax.adam, steps inside lax.scan"
    log(f"  compiling jaxconv {layout}, {SCAN_STEPS} steps in lax.scan")
    runner, seconds, _ = jaxconv_runner(x, y, layout, SCAN_STEPS)
    runners, compile_s = {name: runner}, {name: seconds}
    base = None
    if torch_step is not None:
        base = f"{ROWS['torch']}, {SCAN_STEPS} steps"
        runners[base] = lambda: [torch_step() for _ in range(SCAN_STEPS)]
    return time_rows(
        setup, "resnet_scan", case, "step", runners, compile_s, base, reps=reps,
        scale=1 / SCAN_STEPS, auto=name,
    )  # fmt: skip


# ---------------------------------------------------------------------------- the profile

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.-]+) = (\S+) [^\n]*?op_name=\"([^\"]*)\"", re.M)


def stat_paths(batch_stats: Any, prefix: str = "") -> list[str]:
    """The module paths (``"1/0/bn1"``) that hold batch statistics: the batch norms."""
    if not isinstance(batch_stats, dict) or not all(
        isinstance(v, dict) for v in batch_stats.values()
    ):
        return [prefix.rstrip("/")]
    return [p for k, v in batch_stats.items() for p in stat_paths(v, f"{prefix}{k}/")]


def kind_of(shape: str, op_name: str, norm_paths: list[str]) -> str:
    """The kind of work of an HLO instruction (a fusion is named after its root): ``conv
    fwd/bwd -> shape`` for a convolution (bwd: under JAX's transpose), ``max pool``, ``batch
    norm`` (under a module path in ``norm_paths``), ``optimizer`` (the step's named scope),
    ``transpose`` (layout changes), else ``elementwise/other`` (ReLU, residual adds, loss)."""
    side = "bwd" if "transpose(" in op_name else "fwd"
    last = op_name.rsplit("/", 1)[-1]
    if "conv_general_dilated" in last or last == "dot_general" and "conv" in op_name:
        return f"conv {side} -> {shape.split('{')[0]}"
    if "optimizer" in op_name:
        return "optimizer"
    if re.search(r"max_pool|reduce_window_max|select_and_(scatter|gather)", op_name):
        return f"max pool {side}"
    if any(f"/{p}/" in op_name for p in norm_paths):
        return f"batch norm {side}"
    if last.startswith("transpose"):
        return "transpose (layout)"
    return f"elementwise/other {side}"


def thunk_times(run: Callable[[], None]) -> tuple[collections.Counter, str]:
    """Nanoseconds per XLA:CPU thunk (or GPU kernel) name over one call of ``run``, under
    ``jax.profiler``, and which events were read."""
    import jax

    from jaxconv.bench.sections.profile import _event_lines, counts

    where = Path(tempfile.mkdtemp(prefix="jaxconv-profile-"))
    total: collections.Counter = collections.Counter()
    try:
        with jax.profiler.trace(str(where)):
            run()
        data = jax.profiler.ProfileData.from_file(str(next(where.rglob("*.xplane.pb"))))
        pick, lines = _event_lines(data)
        for line in lines:
            for ev in line.events:
                if counts(ev.name):
                    total[ev.name] += ev.duration_ns
    finally:
        shutil.rmtree(where, ignore_errors=True)
    return total, pick


def torch_op_times(setup: Setup, run: Callable[[], None]) -> collections.Counter:
    """Self time in nanoseconds per aten op over one call of ``run`` (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    return collections.Counter(
        {e.key: int(e.self_cpu_time_total * 1e3) for e in prof.key_averages()}
    )


def bench_resnet_profile(setup: Setup) -> list[Row]:
    """jaxconv's ResNet-18 step by kind of work (and PyTorch's by aten op, where it runs):
    seconds per step and share of the busy time."""
    import time

    import jax

    from jaxconv.kernels.dispatch import compiler_options

    batch, side = QUICK if setup.args.quick else FULL
    xn, yn = batch_data(batch, side)
    x = jax.device_put(xn, setup.dev)
    run, _, hlo = shared_jaxconv_runner(setup.dev, batch, side)
    total, pick = thunk_times(run)
    norms = stat_paths(jaxconv_batch_stats(x))
    kinds = {n: kind_of(shape, op, norms) for n, shape, op in _INSTRUCTION.findall(hlo())}
    by_kind: collections.Counter = collections.Counter()
    for name, ns in total.items():
        by_kind[kinds.get(name, "unnamed (XLA's own)")] += ns
    busy = sum(by_kind.values())
    layout = training_layout(setup.dev)
    case = f"jaxconv ResNet-18 step, {layout}, batch {batch}, {side}x{side} ({pick})"
    t0 = time.perf_counter()
    run()
    wall = time.perf_counter() - t0
    # XLA's own convolutions (jaxconv's compile options on CPU) hand their work to the thread
    # pool and their thunks end before it does: the busy time leaves most of them out.
    note = "XLA's convolutions mostly outside the thunks" if compiler_options() else ""
    rows = [
        Row("profile", case, "step", "wall time per step (one call, unprofiled)", wall),
        Row("profile", case, "step", "busy time per step", busy / 1e9, 1.0, note=note),
    ]
    rows += [
        Row("profile", case, "step", kind, ns / 1e9, ns / busy)
        for kind, ns in by_kind.most_common(TOP_KINDS)
    ]
    book = load_book_models() if setup.torch is not None else None
    if book is not None and setup.tdev == "cpu":
        ops = torch_op_times(setup, torch_runner(setup, book, xn, yn))
        tbusy = sum(ops.values())
        tcase = f"PyTorch ResNet-18 step, batch {batch}, {side}x{side} (aten ops, self time)"
        rows.append(Row("profile", tcase, "step", "busy time per step", tbusy / 1e9, 1.0))
        rows += [
            Row("profile", tcase, "step", op, ns / 1e9, ns / tbusy)
            for op, ns in ops.most_common(TOP_KINDS)
        ]
    return rows


def jaxconv_batch_stats(x: Any) -> Any:
    """The batch statistics tree of jaxconv's ResNet-18 (only its structure is used; it is
    the same in every layout) for the NCHW batch ``x``."""
    import jax

    from jaxconv.models import resnet18

    shapes = jax.eval_shape(resnet18().init, jax.random.key(0), x)
    return shapes["batch_stats"]
