"""Weights between PyTorch and jaxconv: ``from_torch(model, state_dict) -> variables`` and
``to_torch(model, variables) -> state_dict``.

jaxconv's layers (:mod:`jaxconv.nn`) keep torch's parameter names and layouts, and its
networks (:mod:`jaxconv.networks`) torch's module nesting, so a variable's path joined with
dots is its torch key: ``params["1"]["0"]["conv1"]["weight"]`` is ``"1.0.conv1.weight"``, and
``batch_stats["0"]["1"]["running_mean"]`` is ``"0.1.running_mean"``. For a channels-first model
conversion is renaming only; a channels-last one (``layout="NHWC"`` etc.) stores its conv
weights in the kernel form of its layout (OIHW as HWIO), and conversion transposes those,
each layer saying how through its ``torch_param_axes()`` (``{"weight": perm}``: stored =
torch's transposed by ``perm``). Linear weights are torch's in every layout (channels-last
``Flatten`` keeps torch's C-major order). Values are copied bit for bit (round trips are
exact).

The variables a model has are found by tracing its ``init`` on an input shape
(``jax.eval_shape``: nothing is computed or allocated): ``input_shape`` if given, else the
model's ``example_input_shape`` (every network of :mod:`jaxconv.networks` has one).

The state_dict is taken as torch saves it (``net.state_dict()`` or ``torch.load``): its keys,
with torch tensors or NumPy arrays as values. Missing or unexpected keys and shape mismatches
raise one ValueError that lists each key with both shapes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

__all__ = ["expected_variables", "from_torch", "to_torch", "torch_axes"]

#: Variables torch keeps as int64 buffers (jaxconv keeps them in JAX's default int).
_INT64_KEYS = ("num_batches_tracked",)


def _trace(
    model: nn.Module, input_shape: tuple[int, ...] | None
) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """``model.init``'s abstract variables, and torch key -> permutation of every variable a
    layer stores transposed from torch's (read off each called module's
    ``torch_param_axes()``), from one trace (``jax.eval_shape``: nothing is computed)."""
    shape = input_shape if input_shape is not None else getattr(model, "example_input_shape", None)
    if shape is None:
        raise ValueError(
            f"input_shape is needed to find {type(model).__name__}'s variables: pass a batched "
            "input shape the model accepts (the networks of jaxconv.networks carry one)"
        )
    axes: dict[str, tuple[int, ...]] = {}

    def record(next_fun: Any, args: Any, kwargs: Any, context: Any) -> Any:
        module = context.module
        if context.method_name == "__call__" and hasattr(module, "torch_param_axes"):
            for name, perm in module.torch_param_axes().items():
                axes[".".join((*module.path, name))] = tuple(perm)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        abstract = jax.eval_shape(
            model.init, jax.random.key(0), jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
        )
    return abstract, axes


def torch_axes(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> dict[str, tuple[int, ...]]:
    """torch key -> ``perm`` for every variable ``model`` stores as torch's value transposed by
    ``perm`` (``np.transpose(torch_value, perm)``): a channels-last model's conv weights;
    empty for a channels-first one."""
    return _trace(model, input_shape)[1]


def expected_variables(
    model: nn.Module, input_shape: tuple[int, ...] | None = None
) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """torch key -> (collection, shape, dtype) of every variable ``model`` has, the shape as
    torch's state_dict holds it (a channels-last conv weight's torch shape, not its stored
    one)."""
    return _expected(*_trace(model, input_shape))


def _expected(
    abstract: Mapping[str, Any], axes: Mapping[str, tuple[int, ...]]
) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    expected = {}
    for collection, tree in abstract.items():
        for key, leaf in traverse_util.flatten_dict(tree, sep=".").items():
            shape = tuple(leaf.shape)
            if key in axes:  # stored shape -> torch's: the inverse permutation
                shape = tuple(shape[i] for i in np.argsort(axes[key]))
            expected[key] = (collection, shape, leaf.dtype)
    return expected


def _as_numpy(value: Any) -> np.ndarray:
    """A torch tensor (any device, detached) or array-like as a NumPy array."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":  # NumPy has no bfloat16: widen exactly
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def _check_keys(
    expected: Mapping[str, tuple[str, tuple[int, ...], Any]],
    shapes: Mapping[str, tuple[int, ...]],
    source: str,
) -> None:
    """One ValueError naming every missing key, unexpected key and shape mismatch."""
    problems = []
    for key in expected.keys() - shapes.keys():
        problems.append(f"missing key {key!r} (the model expects shape {expected[key][1]})")
    for key in shapes.keys() - expected.keys():
        problems.append(f"unexpected key {key!r} (shape {shapes[key]}; not in the model)")
    for key in expected.keys() & shapes.keys():
        if tuple(shapes[key]) != expected[key][1]:
            problems.append(
                f"shape mismatch for {key!r}: {source} has {tuple(shapes[key])}, "
                f"the model expects {expected[key][1]}"
            )
    if problems:
        raise ValueError(f"{source} does not match the model:\n  " + "\n  ".join(sorted(problems)))


def from_torch(
    model: nn.Module, state_dict: Mapping[str, Any], input_shape: tuple[int, ...] | None = None
) -> dict[str, Any]:
    """The variables (``{"params": ..., "batch_stats": ...}``) of ``model`` from a torch
    state_dict of the matching network.

    Args:
      model: a jaxconv network (or any module whose variable paths are torch's keys).
      state_dict: torch key -> torch tensor or array, e.g. ``net.state_dict()``.
      input_shape: a batched input shape the model accepts; default its
        ``example_input_shape``.

    Returns:
      A dict of nested dicts of JAX arrays, for ``model.apply``. Values are cast to the
      model's dtypes (float32 parameters; ``num_batches_tracked`` as JAX's default int).

    Raises:
      ValueError: missing or unexpected keys or shape mismatches (all of them, each with both
        shapes), or no input shape to trace the model with.
    """
    abstract, axes = _trace(model, input_shape)
    expected = _expected(abstract, axes)
    arrays = {key: _as_numpy(value) for key, value in state_dict.items()}
    _check_keys(expected, {k: a.shape for k, a in arrays.items()}, "state_dict")
    collections: dict[str, dict[str, Any]] = {}
    for key, (collection, _, dtype) in expected.items():
        array = np.transpose(arrays[key], axes[key]) if key in axes else arrays[key]
        collections.setdefault(collection, {})[key] = jnp.asarray(array, dtype=dtype)
    return {
        collection: traverse_util.unflatten_dict(flat, sep=".")
        for collection, flat in collections.items()
    }


def to_torch(
    model: nn.Module, variables: Mapping[str, Any], input_shape: tuple[int, ...] | None = None
) -> OrderedDict[str, Any]:
    """A torch state_dict of ``model``'s variables, which the matching torch network loads
    with ``load_state_dict(strict=True)``.

    Args:
      model: the jaxconv network the variables belong to.
      variables: ``{"params": ..., "batch_stats": ...}`` as ``model.init`` or training give.
      input_shape: as in :func:`from_torch`.

    Returns:
      An OrderedDict torch key -> CPU torch tensor with the variable's dtype
      (``num_batches_tracked`` as int64, torch's dtype for it).

    Raises:
      ValueError: variables missing, unexpected or of the wrong shape for ``model``.
    """
    import torch  # only this direction needs torch

    abstract, axes = _trace(model, input_shape)
    expected = _expected(abstract, axes)
    flat = {}
    for tree in variables.values():
        flat.update(traverse_util.flatten_dict(dict(tree), sep="."))
    shapes = {k: np.shape(v) for k, v in flat.items()}
    for key in axes.keys() & shapes.keys():  # compare in torch's order, as from_torch does
        if len(shapes[key]) == len(axes[key]):
            shapes[key] = tuple(shapes[key][i] for i in np.argsort(axes[key]))
    _check_keys(expected, shapes, "variables")
    state = OrderedDict()
    for key in expected:
        array = np.asarray(flat[key])
        if key in axes:
            array = np.transpose(array, np.argsort(axes[key]))
        array = np.array(array)  # a writable contiguous host copy: from_numpy shares memory
        if key.rsplit(".", 1)[-1] in _INT64_KEYS:
            array = array.astype(np.int64)
        state[key] = torch.from_numpy(array)
    return state
