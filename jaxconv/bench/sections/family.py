"""Section ``family``: the convolutions past LeNet, where plain JAX on CPU is far behind
PyTorch: transposed, depthwise, a wide 3x3 layer, 1-D and 3-D.

Each row times, forward and forward+backward (gradients of input and weight), channels
first: PyTorch, plain ``lax.conv_general_dilated`` (what a JAX user writes without jaxconv)
and ``jaxconv.<op>`` where this jaxconv has it (a row says so where it has not). Ratios are
to PyTorch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxconv.bench.contenders import PASSES, Setup, jax_pass, torch_passes
from jaxconv.bench.report import Row
from jaxconv.bench.sections.common import time_rows

#: lax dimension numbers (input, kernel, output), channels first, by spatial rank
DIMENSION_NUMBERS = {
    1: ("NCH", "OIH", "NCH"),
    2: ("NCHW", "OIHW", "NCHW"),
    3: ("NCDHW", "OIDHW", "NCDHW"),
}
PLAIN = "lax.conv_general_dilated"


@dataclasses.dataclass(frozen=True)
class FamilyCase:
    """One layer, in ``torch.nn.functional``'s terms: ``op`` is its name (``conv1d``,
    ``conv2d``, ``conv3d``, ``conv_transpose2d``, ...), ``x`` the input shape (N, C, *spatial),
    ``w`` the weight's shape (O, C // groups, *k) for a conv, (C, O // groups, *k) for a
    transposed conv; stride, padding and output_padding the same on every axis."""

    name: str
    op: str
    x: tuple[int, ...]
    w: tuple[int, ...]
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    groups: int = 1

    @property
    def transposed(self) -> bool:
        return "transpose" in self.op

    @property
    def rank(self) -> int:
        return len(self.x) - 2

    def label(self) -> str:
        shape = "x".join(map(str, self.x))
        out = self.w[1] * self.groups if self.transposed else self.w[0]
        k = "x".join(map(str, self.w[2:]))
        geo = f"k{k} s{self.stride} p{self.padding}"
        if self.output_padding:
            geo += f" output_padding {self.output_padding}"
        if self.groups > 1:
            geo += f" groups {self.groups}"
        return f"{self.name}: {self.op} {shape} -> {out}, {geo}"

    def kwargs(self) -> dict[str, int]:
        """torch.nn.functional's keyword arguments (also jaxconv's)."""
        kw = {"stride": self.stride, "padding": self.padding, "groups": self.groups}
        if self.transposed:
            kw["output_padding"] = self.output_padding
        return kw

    def output_shape(self) -> tuple[int, ...]:
        """(N, O, *spatial out) by torch's formulas (dilation 1)."""
        k, s, p = self.w[2:], self.stride, self.padding
        if self.transposed:
            spatial = [
                (n - 1) * s - 2 * p + kk + self.output_padding
                for n, kk in zip(self.x[2:], k, strict=True)
            ]
            return (self.x[0], self.w[1] * self.groups, *spatial)
        spatial = [(n + 2 * p - kk) // s + 1 for n, kk in zip(self.x[2:], k, strict=True)]
        return (self.x[0], self.w[0], *spatial)


def family_cases(quick: bool) -> list[FamilyCase]:
    """The family's rows (a UNet's transposed conv, MobileNet's depthwise 3x3, ResNet-18's
    64 -> 64 at 96 px, an audio conv1d, a video/medical conv3d, then other strides, kernels
    and ranks of the same families, and ResNet-18's strided 3x3); tiny ones under
    ``quick``."""
    if quick:
        return [
            FamilyCase("transposed", "conv_transpose2d", (2, 4, 8, 8), (4, 3, 3, 3), 2, 1, 1),
            FamilyCase("depthwise", "conv2d", (2, 6, 10, 10), (6, 1, 3, 3), 1, 1, groups=6),
            FamilyCase("3x3", "conv2d", (2, 4, 8, 8), (4, 4, 3, 3), 1, 1),
            FamilyCase("conv1d", "conv1d", (2, 4, 64), (4, 4, 9)),
            FamilyCase("conv3d", "conv3d", (1, 2, 6, 6, 6), (4, 2, 3, 3, 3)),
        ]
    return [
        FamilyCase("transposed", "conv_transpose2d", (16, 64, 32, 32), (64, 32, 3, 3), 2, 1, 1),
        FamilyCase("depthwise 3x3", "conv2d", (32, 96, 56, 56), (96, 1, 3, 3), 1, 1, groups=96),
        FamilyCase(
            "3x3 64 -> 64 (ResNet-18 at 96 px)", "conv2d", (32, 64, 24, 24), (64, 64, 3, 3), 1, 1
        ),
        FamilyCase("conv1d k9", "conv1d", (32, 64, 4000), (64, 64, 9)),
        FamilyCase("conv3d k3", "conv3d", (4, 16, 32, 32, 32), (32, 16, 3, 3, 3)),
        # the families' other common shapes
        FamilyCase("transposed k4", "conv_transpose2d", (16, 64, 32, 32), (64, 32, 4, 4), 2, 1),
        FamilyCase("transposed 1-D", "conv_transpose1d", (16, 64, 1000), (64, 32, 4), 2, 1),
        FamilyCase("transposed 3-D", "conv_transpose3d", (2, 16, 8, 8, 8), (16, 16, 3, 3, 3),
                   2, 1, 1),
        FamilyCase("depthwise stride 2", "conv2d", (32, 96, 56, 56), (96, 1, 3, 3), 2, 1,
                   groups=96),
        FamilyCase("conv3d k3 stride 2", "conv3d", (4, 16, 32, 32, 32), (32, 16, 3, 3, 3), 2, 1),
        FamilyCase("3x3 stride 2 64 -> 128 (ResNet-18)", "conv2d", (32, 64, 24, 24),
                   (128, 64, 3, 3), 2, 1),
    ]  # fmt: skip


def lax_fn(case: FamilyCase) -> Callable[[Any, Any], Any]:
    """``(x, w) -> y`` in plain ``lax.conv_general_dilated``, with PyTorch's semantics. A
    transposed conv is the input gradient of the forward conv: the input dilated by the
    stride, padded by k - 1 - p (plus output_padding after), the kernel flipped with its two
    channel axes swapped (groups 1 only)."""
    from jax import lax

    dn = DIMENSION_NUMBERS[case.rank]
    s, p = case.stride, case.padding
    if not case.transposed:
        return lambda x, w: lax.conv_general_dilated(
            x,
            w,
            (s,) * case.rank,
            [(p, p)] * case.rank,
            dimension_numbers=dn,
            feature_group_count=case.groups,
        )
    if case.groups != 1:
        raise ValueError(f"{case.label()}: the plain transposed conv here takes groups 1 only")
    pads = [(k - 1 - p, k - 1 - p + case.output_padding) for k in case.w[2:]]

    def transposed(x: Any, w: Any) -> Any:
        # (C_in, O, *k) -> (O, C_in, *k), every spatial axis reversed
        w = w.swapaxes(0, 1)[(slice(None), slice(None), *[slice(None, None, -1)] * case.rank)]
        return lax.conv_general_dilated(
            x, w, (1,) * case.rank, pads, lhs_dilation=(s,) * case.rank, dimension_numbers=dn
        )

    return transposed


def jaxconv_fn(case: FamilyCase) -> Callable[[Any, Any], Any] | None:
    """``(x, w) -> jaxconv.<op>(x, w, None, **kwargs)``, or None where jaxconv has no such op."""
    import jaxconv

    op = getattr(jaxconv, case.op, None)
    if op is None:
        return None
    kw = case.kwargs()
    return lambda x, w: op(x, w, None, **kw)


def torch_fn(torch: Any, case: FamilyCase) -> Callable[[Any, Any], Any]:
    """``(x, w) -> torch.nn.functional.<op>(x, w, None, **kwargs)``."""
    op = getattr(torch.nn.functional, case.op)
    kw = case.kwargs()
    return lambda x, w: op(x, w, None, **kw)


def _failed(case: FamilyCase, passes: str, name: str, why: str) -> Row:
    return Row("family", case.label(), passes, name, math.nan, note=why[:160])


def bench_case(case: FamilyCase, setup: Setup) -> list[Row]:
    """One row of the family table: fwd and fwd+bwd of every contender that runs."""
    import jax

    from jaxconv.kernels.dispatch import compiler_options

    rng = np.random.default_rng(3)
    x = rng.standard_normal(case.x).astype(np.float32)
    w = (rng.standard_normal(case.w) / math.sqrt(np.prod(case.w[1:]))).astype(np.float32)
    ct = rng.standard_normal(case.output_shape()).astype(np.float32)
    jx, jw, jct = (jax.device_put(a, setup.dev) for a in (x, w, ct))
    ours = jaxconv_fn(case)
    jax_fns = {PLAIN: lax_fn(case)}
    ours_name = f"jaxconv.{case.op}"
    if ours is not None:
        jax_fns[ours_name] = ours
    torch_runs = {}
    if setup.torch is not None:
        torch_runs = torch_passes(setup, torch_fn(setup.torch, case), (x, w), ct)
    options = {ours_name: compiler_options()}  # as jaxconv.jit compiles; plain lax: none
    rows = []
    for passes in PASSES:
        runners: dict[str, Callable[[], Any]] = {}
        compile_s: dict[str, float] = {}
        extra: list[Row] = []
        if ours is None:
            extra.append(_failed(case, passes, ours_name, "not in this jaxconv"))
        for name, f in jax_fns.items():
            try:
                runners[name], compile_s[name] = jax_pass(
                    f, (jx, jw), jct, passes, options=options.get(name)
                )
            except Exception as err:  # noqa: BLE001 - one contender's failure is its row
                extra.append(_failed(case, passes, name, f"FAILED: {type(err).__name__}: {err}"))
        if torch_runs:
            runners["torch"] = torch_runs[passes]
        rows += time_rows(setup, "family", case.label(), passes, runners, compile_s, "torch")
        rows += extra
    return rows
