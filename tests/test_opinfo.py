"""torch's own OpInfo sample and error inputs for every op of the conv/pool family.

For each op of :data:`OPS` that jaxconv has (``getattr(jaxconv, name)``; the others are reported
as skipped), torch's ``op_db`` gives sample inputs: each sample's tensors become NumPy arrays,
jaxconv is called with the same positional and keyword arguments, and its values (and indices)
must equal torch's output, and for float64 samples its input gradient torch autograd's.
Every sample runs under ``jax.jit``, and every :data:`conftest.EAGER_EVERY`-th one also
un-jitted (``JAXCONV_TEST_FULL=1``: every one both ways). Error inputs: where torch raises,
jaxconv must raise ValueError or TypeError.

Samples are subsampled deterministically (every k-th, at most :data:`PER_DTYPE` per dtype and
op) and generated with a fixed torch seed, so each test id names the same sample on every run
and in every xdist worker. Samples that exercise what jaxconv declares out of scope are
skipped by a named rule (:func:`out_of_scope`), never silently. Known failures of ops owned
elsewhere are ``xfail(strict=True)`` in :data:`XFAIL`, each with its reason.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EAGER_EVERY

import jaxconv

#: jaxconv name -> the OpInfo variants (op_db name, variant_test_name) that test it; an empty
#: tuple: torch's op_db has no OpInfo for the op.
OPS: dict[str, tuple[tuple[str, str], ...]] = {
    **{f"conv{n}d": ((f"nn.functional.conv{n}d", ""),) for n in (1, 2, 3)},
    **{f"conv_transpose{n}d": ((f"nn.functional.conv_transpose{n}d", ""),) for n in (1, 2, 3)},
    **{f"max_pool{n}d": ((f"nn.functional.max_pool{n}d", ""),) for n in (1, 2, 3)},
    **{f"avg_pool{n}d": ((f"nn.functional.avg_pool{n}d", ""),) for n in (1, 2, 3)},
    **{
        f"adaptive_{kind}_pool{n}d": ((f"nn.functional.adaptive_{kind}_pool{n}d", ""),)
        for kind in ("avg", "max")
        for n in (1, 2, 3)
    },
    **{f"lp_pool{n}d": () for n in (1, 2, 3)},
    **{
        f"max_unpool{n}d": (
            (f"nn.functional.max_unpool{n}d", ""),
            (f"nn.functional.max_unpool{n}d", "grad"),
        )
        for n in (1, 2, 3)
    },  # fmt: skip
    "unfold": (("nn.functional.unfold", ""),),
    "fold": (),
    "pixel_shuffle": (("nn.functional.pixel_shuffle", ""),),
    "pixel_unshuffle": (("nn.functional.pixel_unshuffle", ""),),
}

#: The most samples checked per op in each dtype (every k-th of torch's list, split between
#: the op's variants):
#: float64 samples check values and input gradients, float32 samples values.
PER_DTYPE = {"float64": 8, "float32": 4}
DTYPES = tuple(PER_DTYPE)
#: Tolerances against torch, per dtype (torch's float32 kernels sum in another order; a 3-D
#: transposed conv sums hundreds of products per output).
TOLERANCE = {"float64": 1e-10, "float32": 1e-4}

#: Known failures, by test id: the reason. Delete an entry once the op is fixed (strict: an
#: entry that passes fails the run).
XFAIL: dict[str, str] = {}


# --- torch's samples, generated once per process ----------------------------------------------


def _op_db() -> list[Any] | None:
    try:
        from torch.testing._internal.common_methods_invocations import op_db
    except ImportError:  # torch or expecttest missing
        return None
    return op_db


@functools.cache
def _opinfo(name: str, variant: str) -> Any:
    for info in _op_db() or ():
        if info.name == name and info.variant_test_name == variant:
            return info
    return None


@functools.cache
def _samples(name: str, variant: str, dtype: str, limit: int) -> list[Any]:
    """At most ``limit`` of one OpInfo's sample inputs in ``dtype`` (every k-th), with
    torch's RNG seeded once; pairs (index in torch's list, sample).

    The OpInfo's own generator (``sample_inputs_func``), not ``sample_inputs()``: that one
    wraps it in torch's test tracking, which walks the Python stack and reseeds every RNG
    before each sample: most of the time each pytest worker spent collecting the suite."""
    import torch

    torch.manual_seed(0)
    info = _opinfo(name, variant)
    samples = list(info.sample_inputs_func(info, "cpu", getattr(torch, dtype), True))
    step = max(1, math.ceil(len(samples) / limit))
    return [(i, s) for i, s in enumerate(samples) if i % step == 0]


@functools.cache
def _errors(name: str, variant: str) -> list[Any]:
    import torch

    torch.manual_seed(0)
    info = _opinfo(name, variant)
    if info.error_inputs_func is None:
        return []
    return list(info.error_inputs_func(info, "cpu"))


def _variant_id(name: str, variant: str) -> str:
    return name.removeprefix("nn.functional.") + (f".{variant}" if variant else "")


def _params(kind: str) -> list[Any]:
    """One pytest param per (op, variant, dtype, sample) or error input; ops jaxconv lacks,
    and ops op_db lacks, as one skipped param each, with the reason."""
    db = _op_db()
    params = []
    for op, variants in OPS.items():
        if getattr(jaxconv, op, None) is None:
            reason = f"jaxconv.{op} does not exist yet"
            params.append(pytest.param(op, None, None, None, id=op, marks=pytest.mark.skip(reason)))
            continue
        if db is None or not variants:
            reason = "torch's op_db is not importable" if db is None else f"op_db has no {op}"
            params.append(pytest.param(op, None, None, None, id=op, marks=pytest.mark.skip(reason)))
            continue
        for name, variant in variants:
            vid = _variant_id(name, variant)
            if kind == "errors":
                for i, _ in enumerate(_errors(name, variant)):
                    pid = f"{vid}-error{i:02d}"
                    params.append(pytest.param(op, (name, variant), None, i, id=pid,
                                               marks=_xfail(pid)))  # fmt: skip
                continue
            for dtype in DTYPES:
                for k, (i, _) in enumerate(_samples(name, variant, dtype, _limit(op, dtype))):
                    for mode in ("jit", "eager") if k % EAGER_EVERY == 0 else ("jit",):
                        pid = f"{vid}-{dtype}-{i:04d}-{mode}"
                        params.append(pytest.param(op, (name, variant), dtype, (i, mode),
                                                   id=pid, marks=_xfail(pid)))  # fmt: skip
    return params


def _limit(op: str, dtype: str) -> int:
    """An op's share of samples per variant: its variants split :data:`PER_DTYPE`."""
    return max(1, PER_DTYPE[dtype] // len(OPS[op]))


def _xfail(pid: str) -> list[Any]:
    return [pytest.mark.xfail(strict=True, reason=XFAIL[pid])] if pid in XFAIL else []


# --- conversion and comparison -----------------------------------------------------------------


def to_numpy(value: Any) -> Any:
    """torch tensors (nested in tuples, lists, dicts) as NumPy arrays; torch.Size as a tuple."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().resolve_conj().numpy().copy()
    if isinstance(value, torch.Size):
        return tuple(int(v) for v in value)
    if isinstance(value, tuple | list):
        return type(value)(to_numpy(v) for v in value)
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    return value


def out_of_scope(op: str, variant: str, sample: Any) -> str | None:
    """The named rule that puts a sample outside what jaxconv promises, or None."""
    import torch

    tensors = [sample.input, *sample.args, *sample.kwargs.values()]
    if any(isinstance(t, torch.Tensor) and t.is_complex() for t in tensors):
        return "complex dtypes are out of scope"
    if "memory_format" in sample.kwargs:
        return "torch's memory_format is out of scope (jaxconv has layout=)"
    return None


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple | list) else out


def _unique_indices_per_plane(op: str, variant: str, sample: Any) -> bool:
    """max_unpool's gradient equals torch's only without duplicate indices (jaxconv.unpool's
    docstring); the 'grad' variant's samples have none, the plain ones may."""
    if not op.startswith("max_unpool") or variant == "grad":
        return True
    n = int(op[-2])
    idx = sample.args[0].reshape(-1, math.prod(sample.args[0].shape[-n:]))
    return all(len(set(row.tolist())) == row.numel() for row in idx)


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "info", "dtype", "index"), _params("samples"))
def test_sample(op: str, info: tuple[str, str], dtype: str, index: tuple[int, str]) -> None:
    """One sample, run under ``jax.jit`` (mode "jit": one compile that returns the values and,
    where checked, the input gradient through ``jax.vjp``) or un-jitted ("eager")."""
    import torch

    name, variant = info
    index, mode = index
    sample = dict(_samples(name, variant, dtype, _limit(op, dtype)))[index]
    if (reason := out_of_scope(op, variant, sample)) is not None:
        pytest.skip(reason)
    op_fn = getattr(jaxconv, op)
    args, kwargs = to_numpy(tuple(sample.args)), to_numpy(dict(sample.kwargs))
    x = to_numpy(sample.input)
    wrap = jax.jit if mode == "jit" else (lambda f: f)
    tol = TOLERANCE[dtype]

    t_in = sample.input.detach().clone().requires_grad_(True)
    t_out = getattr(torch.nn.functional, name.removeprefix("nn.functional."))(
        t_in, *sample.args, **sample.kwargs
    )
    t_val = _first(t_out)
    # The input gradient is checked for float64 samples with a differentiable, non-empty
    # output (and, for max_unpool, no duplicate indices: a documented gradient rule).
    check_grad = (
        dtype == "float64"
        and t_val.requires_grad
        and t_val.numel() > 0
        and x.size > 0
        and _unique_indices_per_plane(op, variant, sample)
    )
    with jax.enable_x64(dtype == "float64"):
        if check_grad:
            g = np.random.default_rng(index).standard_normal(t_val.shape).astype(dtype)
            (t_grad,) = torch.autograd.grad(t_val, t_in, torch.tensor(g))

            def values_and_all(x):
                out = op_fn(x, *args, **kwargs)
                return _first(out), out  # the values (not indices) are differentiated

            def value_and_input_grad(x, g):
                # One forward pass for both: the values compared are the differentiated
                # call's (float32 samples check the plain call's).
                _, pull, out = jax.vjp(values_and_all, x, has_aux=True)
                return out, pull(g)[0]

            out, grad = wrap(value_and_input_grad)(x, g)
        else:
            out = wrap(lambda x: op_fn(x, *args, **kwargs))(x)
        expected = to_numpy(t_out)
        if isinstance(expected, tuple):  # (values, indices)
            assert isinstance(out, tuple) and len(out) == len(expected)
            for got, want in zip(out, expected, strict=True):
                assert got.shape == want.shape
                np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)
        else:
            assert out.shape == expected.shape and out.dtype == jnp.dtype(dtype)
            np.testing.assert_allclose(np.asarray(out), expected, rtol=tol, atol=tol)
        if check_grad:
            np.testing.assert_allclose(np.asarray(grad), t_grad.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize(("op", "info", "dtype", "index"), _params("errors"))
def test_error_input(op: str, info: tuple[str, str], dtype: None, index: int) -> None:
    import torch

    name, variant = info
    err = _errors(name, variant)[index]
    sample = err.sample_input
    fn = getattr(torch.nn.functional, name.removeprefix("nn.functional."))
    with pytest.raises(err.error_type):  # torch refuses it (as op_db says)
        fn(sample.input, *sample.args, **sample.kwargs)
    args, kwargs = to_numpy(tuple(sample.args)), to_numpy(dict(sample.kwargs))
    with pytest.raises((ValueError, TypeError)):
        getattr(jaxconv, op)(to_numpy(sample.input), *args, **kwargs)
