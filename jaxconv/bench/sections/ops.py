"""Section ``ops``: conv2d and pooling per layer, forward and forward+backward, against
PyTorch; conv forward+backward inside ``lax.scan``; the chapter's manual (vmap) paths
against their lax twins.

Each jaxconv conv path is asked for through the public ``jaxconv.conv2d(impl=, layout=)``:
``lax``, ``patches`` and ``vjp`` in NHWC (the models' layout) and ``vjp`` in CHWN (batch
last, what training runs on CPU); PyTorch runs NCHW. "auto" marks the path ``impl="auto"``
takes in NHWC.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxconv.bench import _engine
from jaxconv.bench.contenders import PASSES, Setup, jax_pass, scan_fn, torch_passes
from jaxconv.bench.report import Row
from jaxconv.bench.sections.common import time_rows
from jaxconv.bench.timing import compiled, jax_runner


@dataclasses.dataclass(frozen=True)
class ConvCase:
    """A conv layer: batch n, c -> o channels, h x h input, k x k kernel, padding p."""

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
    """A pooling layer: mode "max" or "avg", (n, c, h, h) input, k x k window, stride s,
    padding p."""

    name: str
    mode: str
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
    """LeNet's two conv layers and a ResNet 3x3 layer (tiny ones under ``quick``)."""
    if quick:
        return [ConvCase("LeNet conv1", 8, 1, 28, 6, 5, 2), ConvCase("ResNet", 2, 8, 12, 8, 3, 1)]
    return [
        ConvCase("LeNet conv1", 256, 1, 28, 6, 5, 2),
        ConvCase("LeNet conv2", 256, 6, 14, 16, 5, 0),
        ConvCase("ResNet", 8, 64, 56, 64, 3, 1),
    ]


def pool_cases(quick: bool) -> list[PoolCase]:
    """LeNet's 2x2 pools and ResNet's 3x3 stride-2 pool, max and avg."""
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


#: conv contender -> (layout, impl) of jaxconv.conv2d
CONV_IMPLS = {
    "lax": ("NHWC", "lax"),
    "patches": ("NHWC", "patches"),
    "vjp": ("NHWC", "vjp"),
    "vjp CHWN": ("CHWN", "vjp"),
}
SCAN_IMPLS = ("lax", "vjp", "vjp CHWN")


def bench_conv(case: ConvCase, setup: Setup) -> list[Row]:
    """One conv layer: every jaxconv path and PyTorch, fwd and fwd+bwd; then fwd+bwd per
    step inside lax.scan (ratio to lax)."""
    import jax

    import jaxconv
    from jaxconv.kernels.dispatch import compiler_options

    options = compiler_options()  # every row is jaxconv's conv2d, compiled as jaxconv.jit does

    args, dev = setup.args, setup.dev
    rng = np.random.default_rng(0)
    x = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(np.float32)
    w = (rng.standard_normal((case.o, case.c, case.k, case.k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(case.o).astype(np.float32)
    oh = case.h + 2 * case.p - case.k + 1
    ct = rng.standard_normal((case.n, case.o, oh, oh)).astype(np.float32)
    jw, jb = jax.device_put(w.transpose(2, 3, 1, 0), dev), jax.device_put(b, dev)  # HWIO
    arrays = {  # layout -> (x, target)
        "NHWC": tuple(jax.device_put(a.transpose(0, 2, 3, 1), dev) for a in (x, ct)),
        "CHWN": tuple(jax.device_put(a.transpose(1, 2, 3, 0), dev) for a in (x, ct)),
    }
    auto = _engine.conv_auto_impl(
        arrays["NHWC"][0].shape, jw.shape, np.float32, dev.platform, padding=case.p
    )

    def conv_with(name: str) -> Callable[..., Any]:
        layout, impl = CONV_IMPLS[name]
        return lambda x, w, b: jaxconv.conv2d(x, w, b, padding=case.p, layout=layout, impl=impl)

    torch_runs = {}
    if setup.torch is not None:
        F = setup.torch.nn.functional
        torch_runs = torch_passes(
            setup, lambda x, w, b: F.conv2d(x, w, b, padding=case.p), (x, w, b), ct
        )
    rows = []
    for passes in PASSES:
        runners: dict[str, Callable[[], Any]] = {}
        compile_s: dict[str, float] = {}
        for name, (layout, _) in CONV_IMPLS.items():
            ax, act = arrays[layout]
            runners[name], compile_s[name] = jax_pass(
                conv_with(name), (ax, jw, jb), act, passes, options=options
            )
        if torch_runs:
            runners["torch"] = torch_runs[passes]
        rows += time_rows(
            setup, "ops", case.label(), passes, runners, compile_s, "torch", auto=auto
        )

    # forward+backward inside lax.scan, as in a training epoch
    length = 2 if args.quick else 4
    runners, compile_s = {}, {}
    for name in SCAN_IMPLS:
        ax, act = arrays[CONV_IMPLS[name][0]]
        exe, compile_s[name] = compiled(
            scan_fn(conv_with(name), length), ax, jw, jb, act, options=options
        )
        runners[name] = jax_runner(exe, ax, jw, jb, act)
    reps = 1 if case.name == "ResNet" else args.reps  # lax's ResNet step takes seconds
    return rows + time_rows(
        setup,
        "scan",
        case.label(),
        "fwd+bwd per scan step",
        runners,
        compile_s,
        "lax",
        reps=reps,
        scale=1.0 / length,
        auto=auto,
    )


def bench_pool(case: PoolCase, setup: Setup) -> list[Row]:
    """One pooling layer: jaxconv, JAX's own reduce_window (with its select_and_scatter
    gradient for max) and PyTorch, fwd and fwd+bwd, NHWC for JAX."""
    import jax
    from jax import lax

    import jaxconv
    from jaxconv.kernels.dispatch import compiler_options

    rng = np.random.default_rng(1)
    x = rng.standard_normal((case.n, case.c, case.h, case.h)).astype(np.float32)
    oh = (case.h + 2 * case.p - case.k) // case.s + 1
    ct = rng.standard_normal((case.n, case.c, oh, oh)).astype(np.float32)
    jx, jct = (jax.device_put(a.transpose(0, 2, 3, 1), setup.dev) for a in (x, ct))  # NHWC
    win, strides = (1, case.k, case.k, 1), (1, case.s, case.s, 1)
    pads = ((0, 0), (case.p, case.p), (case.p, case.p), (0, 0))
    if case.mode == "max":
        ours = lambda x: jaxconv.max_pool2d(x, case.k, case.s, case.p, layout="NHWC")
        plain = lambda x: lax.reduce_window(x, -np.inf, lax.max, win, strides, pads)
    else:
        ours = lambda x: jaxconv.avg_pool2d(x, case.k, case.s, case.p, layout="NHWC")
        plain = lambda x: lax.reduce_window(x, 0.0, lax.add, win, strides, pads) / case.k**2

    torch_runs = {}
    if setup.torch is not None:
        tpool = getattr(setup.torch.nn.functional, f"{case.mode}_pool2d")
        torch_runs = torch_passes(setup, lambda x: tpool(x, case.k, case.s, case.p), (x,), ct)
    rows = []
    for passes in PASSES:
        runners, compile_s = {}, {}
        for name, f, options in (
            ("jaxconv", ours, compiler_options()),  # as jaxconv.jit compiles
            ("lax.reduce_window", plain, None),
        ):
            runners[name], compile_s[name] = jax_pass(f, (jx,), jct, passes, options=options)
        if torch_runs:
            runners["torch"] = torch_runs[passes]
        rows += time_rows(setup, "ops", case.label(), passes, runners, compile_s, "torch")
    return rows


def manual_cases(size: int, arrays: dict[str, Any]) -> list[tuple[str, Any, Any, tuple]]:
    """(label, lax function, manual function, arguments) of the chapter's manual paths."""
    import jaxconv

    X, K, X3, K4 = (arrays[k] for k in ("X", "K", "X3", "K4"))
    return [
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


def bench_manual(setup: Setup) -> list[Row]:
    """The chapter's manual (vmap) functions against their lax twins, jitted."""
    import jax

    args, dev = setup.args, setup.dev
    rng = np.random.default_rng(2)
    size = 32 if args.quick else 128
    shapes = {"X": (size, size), "K": (5, 5), "X3": (3, size, size), "K4": (8, 3, 3, 3)}
    arrays = {
        k: jax.device_put(rng.standard_normal(s).astype(np.float32), dev) for k, s in shapes.items()
    }
    cases = manual_cases(size, arrays)
    if args.quick:
        cases = cases[1:3]  # the nested vmaps and a pool: enough for a smoke test
    rows = []
    for label, lax_f, manual_f, fargs in cases:
        out = jax.eval_shape(lax_f, *fargs)
        ct = jax.device_put(rng.standard_normal(out.shape).astype(np.float32), dev)
        for passes in PASSES:
            runners, compile_s = {}, {}
            for name, f in (("lax", lax_f), ("manual (vmap)", manual_f)):
                runners[name], compile_s[name] = jax_pass(f, fargs, ct, passes)
            rows += time_rows(setup, "manual", label, passes, runners, compile_s, "lax")
    return rows
