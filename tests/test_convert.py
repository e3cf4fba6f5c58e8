"""jaxconv.convert: torch state_dicts to variables and back, exactly, for every chapter-7
network (VGG-11 at reduced widths, and at the book's under ``JAXCONV_TEST_FULL=1``);
variables made in JAX load into the torch reference; errors name keys and shapes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _book_reference import reference_net
from conftest import FULL
from flax import traverse_util

from jaxconv import networks
from jaxconv import nn as jnn
from jaxconv.convert import from_torch, to_torch

#: Every chapter-7 network; VGG-11 at the book's widths (129M parameters, most of this file's
#: time) only under ``JAXCONV_TEST_FULL=1``: VGG11_SMALL converts through the same layers and
#: keys, and full-width VGG's keys and shapes are checked in test_networks.py
#: (test_structure_equals_torch).
NAMES = [n for n in networks.MODELS if FULL or n != "vgg11"] + ["vgg11_small"]


def _make(name: str):
    """(jaxconv model, reference name, factory kwargs) for a test id."""
    if name == "vgg11_small":  # full-width VGG (129M parameters) is checked by structure
        kwargs = {"conv_arch": networks.VGG11_SMALL}
        return networks.vgg11(**kwargs), "vgg11", kwargs
    return networks.MODELS[name][0](), name, {}


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_is_exact_and_loads_strictly(torch, name):
    model, ref_name, kwargs = _make(name)
    sd = reference_net(ref_name, seed=3, **kwargs).state_dict()
    variables = from_torch(model, sd)
    assert set(variables) <= {"params", "batch_stats"}
    for leaf in jax.tree_util.tree_leaves(variables):
        assert leaf.dtype in (jnp.float32, jnp.int32)
    back = to_torch(model, variables)
    assert back.keys() == sd.keys()
    for key, value in sd.items():
        assert back[key].dtype == value.dtype, key
        assert back[key].shape == value.shape, key
        assert torch.equal(back[key], value), key
    other = reference_net(ref_name, seed=4, **kwargs)
    other.load_state_dict(back, strict=True)
    for key, value in other.state_dict().items():
        assert torch.equal(value, sd[key]), key


def test_numpy_state_dict_gives_the_same_variables(torch):
    model = networks.lenet_bn()
    sd = reference_net("lenet_bn", seed=5).state_dict()
    a = from_torch(model, sd)
    b = from_torch(model, {k: v.numpy() for k, v in sd.items()})
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_jax_trained_variables_run_the_same_in_torch(torch):
    """The other direction: variables initialised and updated by a training step in JAX,
    exported, give torch's reference the same logits (evaluation mode)."""
    model = networks.lenet_bn()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((8, 1, 28, 28)).astype(np.float32)
    variables = networks.init_variables(model)
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    _, updates = train(variables, x * 2 + 1)
    variables = {**variables, **updates}
    net = reference_net("lenet_bn", seed=7)
    net.load_state_dict(to_torch(model, variables), strict=True)
    assert int(net.state_dict()["1.num_batches_tracked"]) == 1
    with torch.no_grad():
        want = net(torch.tensor(x)).numpy()
    got = jax.jit(model.apply)(variables, x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_any_module_with_an_input_shape(torch):
    """Modules without example_input_shape convert given input_shape; without it, a clear
    error."""
    model = jnn.Sequential((jnn.Conv2d(3, 4, 3), jnn.BatchNorm2d(4), jnn.ReLU()))
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        from_torch(model, net.state_dict())
    variables = from_torch(model, net.state_dict(), input_shape=(1, 3, 8, 8))
    back = to_torch(model, variables, input_shape=(1, 3, 8, 8))
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())


def _broken(sd: dict, how: str) -> dict:
    sd = dict(sd)
    if how == "missing":
        del sd["4.weight"]
    elif how == "unexpected":
        sd["16.weight"] = sd["15.weight"]
    elif how == "shape":
        sd["9.weight"] = sd["9.weight"][:, :100]
    return sd


@pytest.mark.parametrize(
    "how, pattern",
    [
        ("missing", r"missing key '4\.weight' \(the model expects shape \(16, 6, 5, 5\)\)"),
        ("unexpected", r"unexpected key '16\.weight' \(shape \(10, 84\)"),
        (
            "shape",
            r"shape mismatch for '9\.weight': state_dict has \(120, 100\), "
            r"the model expects \(120, 256\)",
        ),
    ],
)
def test_errors_name_key_and_shapes(torch, how, pattern):
    model = networks.lenet_bn()
    sd = reference_net("lenet_bn").state_dict()
    with pytest.raises(ValueError, match=pattern):
        from_torch(model, _broken(sd, how))


def test_all_problems_reported_at_once(torch):
    model = networks.lenet_bn()
    sd = reference_net("lenet_bn").state_dict()
    sd = _broken(_broken(_broken(sd, "missing"), "unexpected"), "shape")
    with pytest.raises(ValueError) as info:
        from_torch(model, sd)
    message = str(info.value)
    assert "'4.weight'" in message and "'16.weight'" in message and "'9.weight'" in message


def test_to_torch_checks_the_variables(torch):
    model = networks.lenet_bn()
    variables = from_torch(model, reference_net("lenet_bn").state_dict())
    flat = traverse_util.flatten_dict(variables["params"], sep=".")
    del flat["0.bias"]
    flat["0.weight"] = flat["0.weight"][:3]
    broken = {**variables, "params": traverse_util.unflatten_dict(flat, sep=".")}
    with pytest.raises(ValueError, match=r"missing key '0\.bias'") as info:
        to_torch(model, broken)
    assert "shape mismatch for '0.weight': variables has (3, 1, 5, 5)" in str(info.value)
