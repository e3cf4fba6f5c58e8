"""The chapter-7 networks built channels last (``layout="NHWC"``) equal the torch reference.

For every network: random torch weights (random batch-norm parameters and running statistics
too), converted with ``from_torch`` into the NHWC network (conv weights transposed to HWIO,
Linear weights as they are), give torch's logits on the same images transposed to NHWC; the
batch-norm networks also in training, with torch's updated running statistics (``to_torch``
back). For two networks (one with batch norm in training, one without) the gradient of the
cross-entropy, parameter by parameter, in torch's order. Inputs are as small as each network
allows; one compiled function per network (test_networks._jax_step).
"""

from __future__ import annotations

import numpy as np
import pytest
from _book_reference import reference_net
from flax import traverse_util
from test_networks import RTOL, _jax_step, _rel

from jaxconv import networks
from jaxconv.convert import expected_variables, from_torch, to_torch, torch_axes

# name -> (factory kwargs, batch, image size, train mode, check gradients)
CASES = {
    "alexnet": ({}, 1, 193, False, False),
    "vgg11": ({"conv_arch": networks.VGG11_SMALL}, 1, 224, False, False),
    "nin": ({}, 2, 67, False, True),
    "googlenet": ({}, 2, 32, False, False),
    "lenet_bn": ({}, 8, 28, True, True),
    "resnet18": ({}, 4, 32, True, False),
    "densenet": ({}, 4, 32, True, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_channels_last_network_equals_torch(torch, name):
    kwargs, batch, size, train, grads = CASES[name]
    net = reference_net(name, seed=1, **kwargs)
    model = networks.MODELS[name][0](**kwargs, layout="NHWC")
    shape = (batch, size, size, 1)
    assert model.example_input_shape[1:] in ((224, 224, 1), (96, 96, 1), (28, 28, 1))
    variables = from_torch(model, net.state_dict(), shape)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, batch)

    eval_logits, _, logits, updates, g = _jax_step(model, train, grads)(
        variables, x.transpose(0, 2, 3, 1), labels
    )

    tx = torch.tensor(x)
    with torch.no_grad():
        t_eval = net(tx).numpy()
    assert eval_logits.shape == t_eval.shape == (batch, 10)
    assert _rel(eval_logits, t_eval) <= RTOL, _rel(eval_logits, t_eval)

    net.train(train)
    t_logits = net(tx)
    assert _rel(logits, t_logits.detach().numpy()) <= RTOL
    if train:  # the running statistics after one training batch, back in torch's keys
        new = to_torch(model, {**variables, **updates}, shape)
        for key, value in net.state_dict().items():
            if "running" in key:
                assert _rel(new[key].numpy(), value.numpy()) <= RTOL, key
            elif key.endswith("num_batches_tracked"):
                assert torch.equal(new[key], value), key
    if grads:
        torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels)).backward()
        t_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
        axes = torch_axes(model, shape)
        ours = {
            k: np.transpose(v, np.argsort(axes[k])) if k in axes else np.asarray(v)
            for k, v in traverse_util.flatten_dict(g, sep=".").items()
        }
        assert ours.keys() == t_grads.keys()
        # A conv bias right before batch norm has a zero gradient in training: float32 noise
        # on both sides, so each error may also be 1e-5 of the network's largest entry.
        scale = max(np.abs(v).max() for v in t_grads.values())
        for k, want in t_grads.items():
            assert ours[k].shape == want.shape, k
            err = np.abs(ours[k] - want).max()
            assert err <= 1e-4 * np.abs(want).max() + 1e-5 * scale, (k, err)


@pytest.mark.parametrize("name", list(networks.MODELS))
def test_channels_last_structure(torch, name):
    """Torch's keys and shapes through ``expected_variables`` at the book's size; every conv
    weight (and only those) stored transposed, HWIO; conversion round-trips bit for bit."""
    size = networks.MODELS[name][1]
    first = networks.MODELS[name][0]()
    last = networks.MODELS[name][0](layout="NHWC")
    assert last.example_input_shape == (1, size, size, 1)
    want = expected_variables(first)
    assert expected_variables(last) == want
    axes = torch_axes(last)
    assert torch_axes(first) == {}
    convs = {k for k, (_, shape, _) in want.items() if len(shape) == 4}
    assert set(axes) == convs and all(p == (2, 3, 1, 0) for p in axes.values())


def test_round_trip_and_same_init(torch):
    """The same seed draws the same network in both layouts; to_torch(from_torch(sd)) is sd."""
    first, last = networks.lenet_bn(), networks.lenet_bn(layout="NHWC")
    v_first = networks.init_variables(first, 0)
    v_last = networks.init_variables(last, 0)
    sd = to_torch(first, v_first)
    sd_last = to_torch(last, v_last)
    assert sd.keys() == sd_last.keys()
    for k in sd:
        assert torch.equal(sd[k], sd_last[k]), k
    back = to_torch(last, from_torch(last, sd))
    for k in sd:
        assert torch.equal(back[k], sd[k]), k
    hwio = v_last["params"]["0"]["weight"]
    assert hwio.shape == (5, 5, 1, 6)


def test_layout_errors():
    with pytest.raises(ValueError, match="layout must be one of"):
        networks.resnet18(layout="CHWN")
    with pytest.raises(ValueError, match="layout must be one of"):
        networks.vgg11(layout="nhwc")
    model = networks.resnet18(layout="NHWC")
    with pytest.raises(ValueError, match="state_dict does not match"):
        from_torch(model, {"0.0.weight": np.zeros((64, 1, 7, 7))})
