"""What the benchmark runs against what: jaxconv, PyTorch (optional), plain JAX and Flax.

Each contender is a no-argument callable that runs its work once and waits for it. PyTorch is
optional at run time: :func:`load_torch` returns None where it is not installed, and the
sections then leave its rows out (and say so once).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from jaxconv.bench.timing import compiled, jax_runner, log, usable_cores

PASSES = ("fwd", "fwd+bwd")

TORCH_MISSING = "PyTorch is not installed: its rows are skipped and ratios to it left empty"


@dataclasses.dataclass
class Setup:
    """Where a run happens: its arguments, JAX's device, PyTorch's device name ("cpu" or
    "cuda") and the torch module (None: not installed)."""

    args: Any
    dev: Any
    tdev: str
    torch: Any


def load_torch(device: str) -> Any:
    """The torch module, with as many CPU threads as cores this process may use (under
    ``taskset -c 1``: one, as XLA), or None (with a message) where it is not installed."""
    try:
        import torch
    except ImportError:
        log(f"note: {TORCH_MISSING}")
        return None
    if device == "cpu":
        torch.set_num_threads(usable_cores())
    return torch


def torch_sync(torch: Any, tdev: str) -> Callable[[], None]:
    """Waits for PyTorch's queued work on ``tdev`` (CUDA runs asynchronously; CPU does not)."""
    return torch.cuda.synchronize if tdev == "cuda" else (lambda: None)


# ---------------------------------------------------------------------------- op contenders


def grad_fn(f: Callable[..., Any], argnums: tuple[int, ...]) -> Callable[..., Any]:
    """Forward + backward: gradients of ``0.5 * |f(*args) - target|^2`` w.r.t. ``argnums``
    (target last), as PyTorch's ``y.backward(y - target)``. Not a linear loss: its gradient
    needs the forward pass, which XLA would otherwise drop as dead code."""
    import jax
    import jax.numpy as jnp

    def loss(*args: Any) -> Any:
        *inputs, target = args
        return 0.5 * jnp.sum(jnp.square(f(*inputs) - target))

    return jax.grad(loss, argnums=argnums)


def scan_fn(f: Callable[..., Any], length: int) -> Callable[..., Any]:
    """``length`` forward+backward steps of ``f(x, w, b)`` inside lax.scan, each updating x,
    w and b with their gradients (so that none of the three is loop-invariant or dead)."""
    import jax

    grad = grad_fn(f, (0, 1, 2))

    def run(x: Any, w: Any, b: Any, target: Any) -> Any:
        def step(carry: Any, _: None) -> Any:
            grads = grad(*carry, target)
            return tuple(a - 1e-6 * g for a, g in zip(carry, grads, strict=True)), None

        return jax.lax.scan(step, (x, w, b), None, length=length)[0]

    return run


def jax_pass(
    f: Callable[..., Any],
    inputs: Sequence[Any],
    target: Any,
    passes: str,
    constants: Sequence[Any] = (),
    options: dict[str, Any] | None = None,
) -> tuple[Callable[[], Any], float]:
    """A warmed-up runner of ``f(*inputs, *constants)`` ("fwd") or of the gradients of every
    input ("fwd+bwd", see :func:`grad_fn`; ``constants``, e.g. integer indices, are passed
    but not differentiated), compiled apart with the XLA compile ``options`` (see
    :func:`~jaxconv.bench.timing.compiled`), and its compile seconds."""
    if passes == "fwd":
        fn, args = f, (*inputs, *constants)
    else:
        fn, args = grad_fn(f, tuple(range(len(inputs)))), (*inputs, *constants, target)
    exe, seconds = compiled(fn, *args, options=options)
    return jax_runner(exe, *args), seconds


def torch_passes(
    setup: Setup,
    f: Callable[..., Any],
    inputs: Sequence[np.ndarray],
    target: np.ndarray,
    constants: Sequence[np.ndarray] = (),
) -> dict[str, Callable[[], None]]:
    """PyTorch's ``{"fwd": ..., "fwd+bwd": ...}`` runners of ``f(*tensors, *constants)`` on
    its device, warmed up once; fwd+bwd takes the gradients of every input (not of the
    ``constants``), as :func:`grad_fn`."""
    torch, sync = setup.torch, torch_sync(setup.torch, setup.tdev)
    plain = [torch.from_numpy(a).to(setup.tdev) for a in inputs]
    consts = [torch.from_numpy(a).to(setup.tdev) for a in constants]
    tct = torch.from_numpy(target).to(setup.tdev)
    grads = [t.clone().requires_grad_(True) for t in plain]

    def fwd() -> None:
        with torch.no_grad():
            f(*plain, *consts)
        sync()

    def fwd_bwd() -> None:
        for t in grads:
            t.grad = None
        y = f(*grads, *consts)
        y.backward(y.detach() - tct)  # the gradient of 0.5 * |y - target|^2, as grad_fn
        sync()

    fwd()
    fwd_bwd()
    return {"fwd": fwd, "fwd+bwd": fwd_bwd}


# ---------------------------------------------------------------------------- LeNet epoch

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
IMAGE_HW = (28, 28)  # Fashion-MNIST's images


def torch_lenet(torch: Any) -> Any:
    """The book's LeNet with ReLU and max pooling, PyTorch, NCHW."""
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 6, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(6, 16, kernel_size=5),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    )


def torch_epoch_runner(
    setup: Setup, images: np.ndarray, labels: np.ndarray, steps: int, batch: int, on_device: bool
) -> Callable[[], None]:
    """``steps`` optimizer steps of the book's loop (Adam 1e-3). ``on_device``: the data set
    lives on the device and batches are indexed there; otherwise (the book's DataLoader)
    every batch is indexed from CPU tensors and copied."""
    torch, tdev = setup.torch, setup.tdev
    torch.manual_seed(0)
    model = torch_lenet(torch).to(tdev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    X = torch.from_numpy(images).float().div_(255).unsqueeze(1)  # (n, 1, 28, 28)
    Y = torch.from_numpy(labels).long()
    if on_device:
        X, Y = X.to(tdev), Y.to(tdev)
    sync = torch_sync(torch, tdev)
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
        x = xb.astype("float32")[..., None] / 255.0  # (B, 28, 28) uint8 -> (B, 28, 28, 1)

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
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, *IMAGE_HW, 1)))["params"]
    carry0 = (params, tx.init(params))
    step = _flax_step(model, tx)
    n = X.shape[0]
    nb = n // batch

    def one_step(carry: Any, X: Any, Y: Any, order: Any, i: Any) -> Any:
        idx = jax.lax.dynamic_slice_in_dim(order, i * batch, batch)
        return step(carry, (X[idx], Y[idx]))[0]

    def epoch(carry: Any, X: Any, Y: Any, key: Any) -> Any:
        order = jax.random.permutation(key, n)[: nb * batch]
        xb, yb = X[order].reshape(nb, batch, *IMAGE_HW), Y[order].reshape(nb, batch)
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
    X: Any, Y: Any, batch: int, unroll: int, conv_impl: str, layout: str
) -> tuple[Callable[[], Any], float]:
    """jaxconv's own whole-epoch function (``jaxconv.train.train_epoch``: LeNet from
    jaxconv.models, optax Adam 1e-3, shuffle on device, lax.scan over batches) in the
    activation ``layout`` given, and its compile seconds. The runner's ``hlo()`` gives the
    compiled program's text (for the profile's op descriptions)."""
    import jax

    from jaxconv import train
    from jaxconv.kernels.dispatch import compiler_options
    from jaxconv.models import LeNet

    model = LeNet("modern", conv_impl=conv_impl, layout=layout)
    state = train.TrainState.create(model, train.make_optimizer("adam", 1e-3), 0)
    t0 = time.perf_counter()
    exe = train.train_epoch.lower(state, X, Y, batch_size=batch, unroll=unroll).compile(
        compiler_options()  # as training compiles it
    )
    compile_s = time.perf_counter() - t0
    holder = {"state": state}

    def run() -> None:
        new_state, _ = exe(holder["state"], X, Y)
        holder["state"] = jax.block_until_ready(new_state)

    run()
    run.hlo = exe.as_text  # type: ignore[attr-defined]
    return run, compile_s
