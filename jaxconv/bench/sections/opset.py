"""Section ``opset``: every op of torch.nn.functional's conv and pooling family that jaxconv
has, once each, at a moderate CNN-like size (issue 14's "nothing may be pathologically slow").

Each row times, forward and forward+backward (gradients of every floating input of
``0.5 * |y - target|^2``, jitted), channels first: PyTorch (the baseline), ``jaxconv.<op>``
and, where plain JAX has the same function, that (``lax.conv_general_dilated`` for convs and
transposed convs, ``lax.reduce_window`` for max/avg/Lp pooling,
``lax.conv_general_dilated_patches`` for ``unfold``). Adaptive pooling, ``max_unpool``,
``fold`` and the pixel shuffles have no plain-JAX twin, so they are timed against PyTorch only.
A jaxconv row slower than :data:`SLOW` times PyTorch says so in its note.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxconv.bench.contenders import PASSES, Setup, jax_pass, torch_passes
from jaxconv.bench.report import Row
from jaxconv.bench.sections import family
from jaxconv.bench.sections.common import time_rows

#: A jaxconv time above this many times PyTorch's is flagged as pathologically slow.
SLOW = 5.0
SLOW_NOTE = f"SLOW: > {SLOW:g}x PyTorch"
REDUCE_WINDOW = "lax.reduce_window"
PATCHES = "lax.conv_general_dilated_patches"


@dataclasses.dataclass(frozen=True)
class OpCase:
    """One call ``torch.nn.functional.<op>(*inputs, *args, **kwargs)`` (also jaxconv's).

    ``inputs`` are the shapes of the floating tensor arguments, in the op's order (input,
    then weight for the convs). ``unpool_from``: for ``max_unpool``, the shape of the tensor
    whose ``max_pool`` (kernel ``args[0]``) gives the input values and the indices (a
    constant argument after the input, not differentiated); ``inputs`` is then empty.
    """

    op: str
    inputs: tuple[tuple[int, ...], ...]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    unpool_from: tuple[int, ...] | None = None

    @property
    def rank(self) -> int:
        """Spatial dimensions (1, 2 or 3)."""
        return int(self.op[-2]) if self.op[-2].isdigit() else 2  # unfold, fold, pixel_*: 2-D

    def label(self) -> str:
        """e.g. ``max_pool2d 8x32x32x32 (3,) s2 p1``."""
        first = self.unpool_from if self.unpool_from is not None else self.inputs[0]
        shape = "x".join(map(str, first))
        if self.unpool_from is not None:
            shape = f"max_pool of {shape} ->"
        extra = ["w " + "x".join(map(str, s)) for s in self.inputs[1:]]
        extra += [str(a) for a in self.args]
        extra += [f"{_short(k)}{v}" for k, v in self.kwargs.items()]
        return " ".join([self.op, shape, *extra])


def _short(name: str) -> str:
    return {"stride": "s", "padding": "p", "output_padding": "op"}.get(name, f"{name}=")


def opset_cases(quick: bool) -> list[OpCase]:
    """The whole op set of issue 14 in 1-D, 2-D and 3-D: batch 8, 32 channels, length 1024,
    32 x 32 or 16^3 (tiny sizes under ``quick``). Pools: ResNet's 3/2/1 max and avg windows, 2/2
    Lp and unpool windows; adaptive output sizes that do not divide the input's."""
    n, c = (2, 4) if quick else (8, 32)
    spatial = (
        {1: (16,), 2: (8, 8), 3: (4, 4, 4)} if quick else {1: (1024,), 2: (32, 32), 3: (16,) * 3}
    )
    adaptive = {1: (5,), 2: (3, 3), 3: (3, 3, 3)} if quick else {1: (100,), 2: (7, 7), 3: (5,) * 3}
    cases = []
    for d in (1, 2, 3):
        x = (n, c, *spatial[d])
        half = (n, c, *(s // 2 for s in spatial[d]))
        k3 = (c, c) + (3,) * d
        cases += [
            OpCase(f"conv{d}d", (x, k3), kwargs={"padding": 1}),
            OpCase(
                f"conv_transpose{d}d",
                (half, k3),
                kwargs={"stride": 2, "padding": 1, "output_padding": 1},
            ),
            OpCase(f"max_pool{d}d", (x,), (3,), {"stride": 2, "padding": 1}),
            OpCase(f"avg_pool{d}d", (x,), (3,), {"stride": 2, "padding": 1}),
            OpCase(f"lp_pool{d}d", (x,), (2.0, 2)),
            OpCase(f"adaptive_avg_pool{d}d", (x,), (adaptive[d],)),
            OpCase(f"adaptive_max_pool{d}d", (x,), (adaptive[d],)),
            OpCase(f"max_unpool{d}d", (), (2,), unpool_from=x),
        ]
    x2 = (n, c, *spatial[2])
    cols = (n, c * 9, math.prod(spatial[2]))
    cases += [
        OpCase("unfold", (x2,), (3,), {"padding": 1}),
        OpCase("fold", (cols,), (spatial[2], 3), {"padding": 1}),
        OpCase("pixel_shuffle", ((n, 4 * c, *(s // 2 for s in spatial[2])),), (2,)),
        OpCase("pixel_unshuffle", (x2,), (2,)),
    ]
    return cases


def case_arrays(case: OpCase, rng: np.random.Generator) -> tuple[list[np.ndarray], list[Any]]:
    """(floating inputs, constants) of one call, float32: a conv's weight scaled by its fan-in;
    ``max_unpool``'s values and indices from ``jaxconv.max_pool<d>d(..., return_indices=True)``
    (indices int64, as PyTorch takes them)."""
    import jaxconv

    if case.unpool_from is not None:
        src = rng.standard_normal(case.unpool_from).astype(np.float32)
        pool = getattr(jaxconv, f"max_pool{case.rank}d")
        values, indices = pool(src, case.args[0], return_indices=True)
        return [np.array(values)], [np.asarray(indices).astype(np.int64)]  # writable copies
    floats = [rng.standard_normal(s).astype(np.float32) for s in case.inputs]
    if case.op.startswith("conv"):
        floats[1] /= np.float32(math.sqrt(math.prod(case.inputs[1][1:])))
    return floats, []


def jaxconv_fn(case: OpCase) -> Callable[..., Any]:
    """``(*inputs, *constants) -> jaxconv.<op>(..., *args, **kwargs)``."""
    import jaxconv

    op = getattr(jaxconv, case.op)
    return lambda *a: op(*a, *case.args, **case.kwargs)


def torch_fn(torch: Any, case: OpCase) -> Callable[..., Any]:
    """``(*tensors) -> torch.nn.functional.<op>(..., *args, **kwargs)``."""
    op = getattr(torch.nn.functional, case.op)
    return lambda *a: op(*a, *case.args, **case.kwargs)


def _window(case: OpCase, value: Any) -> tuple[int, ...]:
    """An int or a tuple as the full (1, 1, *spatial) window tuple of lax.reduce_window."""
    spatial = (value,) * case.rank if isinstance(value, int) else tuple(value)
    return (1, 1, *spatial)


def _reduce_window_fn(case: OpCase) -> Callable[[Any], Any]:
    """Max, average (padding counted, torch's default) or Lp pooling in plain
    ``lax.reduce_window``, channels first, PyTorch's function for these arguments (no
    ceil_mode, no dilation)."""
    import jax.numpy as jnp
    from jax import lax

    kind = case.op.split("_pool")[0]
    if kind == "lp":
        p, kernel = case.args[0], case.args[1]
        stride = case.kwargs.get("stride", kernel)
    else:
        kernel = case.args[0]
        stride = case.kwargs.get("stride", kernel)
    window, strides = _window(case, kernel), _window(case, stride)
    pad = case.kwargs.get("padding", 0)
    pads = [(0, 0), (0, 0)] + [(pad, pad)] * case.rank
    size = math.prod(window)

    def pool(x: Any) -> Any:
        if kind == "max":
            return lax.reduce_window(x, -jnp.inf, lax.max, window, strides, pads)
        if kind == "avg":
            return lax.reduce_window(x, 0.0, lax.add, window, strides, pads) / size
        return lax.reduce_window(x**p, 0.0, lax.add, window, strides, pads) ** (1.0 / p)

    return pool


def _patches_fn(case: OpCase) -> Callable[[Any], Any]:
    """``unfold`` in plain ``lax.conv_general_dilated_patches``: its (N, C * kh * kw, oh, ow)
    patches, channel-major as torch's columns, flattened to (N, C * kh * kw, L)."""
    from jax import lax

    k = _window(case, case.args[0])[2:]
    pad = case.kwargs.get("padding", 0)

    def unfold(x: Any) -> Any:
        y = lax.conv_general_dilated_patches(
            x, k, (1, 1), [(pad, pad)] * 2, dimension_numbers=("NCHW", "OIHW", "NCHW")
        )
        return y.reshape(y.shape[0], y.shape[1], -1)  # (N, C*kh*kw, oh, ow) -> (N, C*kh*kw, L)

    return unfold


def plain_fn(case: OpCase) -> tuple[str, Callable[..., Any]] | None:
    """(name, function) of plain JAX's twin of ``case``'s op, or None where plain JAX has none."""
    if case.op.startswith("conv"):
        fam = family.FamilyCase(
            case.op,
            case.op,
            case.inputs[0],
            case.inputs[1],
            case.kwargs.get("stride", 1),
            case.kwargs.get("padding", 0),
            case.kwargs.get("output_padding", 0),
        )
        return family.PLAIN, family.lax_fn(fam)
    if case.op.split("_pool")[0] in ("max", "avg", "lp") and "_pool" in case.op:
        return REDUCE_WINDOW, _reduce_window_fn(case)
    if case.op == "unfold":
        return PATCHES, _patches_fn(case)
    return None


def _flag(row: Row) -> Row:
    """``row`` with the SLOW note where it is jaxconv's and above :data:`SLOW` x PyTorch."""
    if row.contender.startswith("jaxconv.") and row.ratio is not None and row.ratio > SLOW:
        return dataclasses.replace(row, note=SLOW_NOTE)
    return row


def bench_case(case: OpCase, setup: Setup) -> list[Row]:
    """One op: fwd and fwd+bwd of PyTorch, jaxconv and plain JAX where it has the op."""
    import jax

    from jaxconv.kernels.dispatch import compiler_options

    rng = np.random.default_rng(5)
    floats, consts = case_arrays(case, rng)
    ours = jaxconv_fn(case)
    jf = [jax.device_put(a, setup.dev) for a in floats]
    jc = [jax.device_put(a.astype(np.int32), setup.dev) for a in consts]
    out = jax.eval_shape(ours, *jf, *jc)
    ct = rng.standard_normal(out.shape).astype(np.float32)
    jct = jax.device_put(ct, setup.dev)
    jax_fns = {f"jaxconv.{case.op}": ours}
    options = {f"jaxconv.{case.op}": compiler_options()}  # as jaxconv.jit; plain JAX: none
    plain = plain_fn(case)
    if plain is not None:
        jax_fns[plain[0]] = plain[1]
    torch_runs = {}
    if setup.torch is not None:
        torch_runs = torch_passes(setup, torch_fn(setup.torch, case), floats, ct, consts)
    rows: list[Row] = []
    for passes in PASSES:
        runners: dict[str, Callable[[], Any]] = {}
        compile_s: dict[str, float] = {}
        failed: list[Row] = []
        for name, f in jax_fns.items():
            try:
                runners[name], compile_s[name] = jax_pass(
                    f, jf, jct, passes, jc, options=options.get(name)
                )
            except Exception as err:  # noqa: BLE001 - one contender's failure is its row
                why = f"FAILED: {type(err).__name__}: {err}".splitlines()[0][:160]
                failed.append(Row("opset", case.label(), passes, name, math.nan, note=why))
        if torch_runs:
            runners["torch"] = torch_runs[passes]
        timed = time_rows(setup, "opset", case.label(), passes, runners, compile_s, "torch")
        rows += [_flag(r) for r in timed] + failed
    return rows
