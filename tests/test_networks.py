"""The chapter-7 networks equal the torch reference (``../shared/reference_torch/book_models.py``).

For every network: random torch weights (and random batch-norm parameters and running
statistics), converted with ``from_torch``, give the same logits in evaluation; the batch-norm
networks also in training, with the same updated running statistics; and the same gradient of
the cross-entropy loss for one batch, parameter by parameter (in evaluation for the dropout
networks, whose masks are random; in training for the batch-norm ones). Images are as small as
each network allows (AlexNet 193 pixels and VGG 224: batch 1, and VGG11_SMALL); full-width VGG
is checked by structure.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _book_reference import book_models, reference_net
from flax import traverse_util

from jaxconv import networks
from jaxconv.convert import expected_variables, from_torch, to_torch
from jaxconv.nn import count_params

RTOL = 1e-4  # max |ours - torch| / max |torch|, float32
GRAD_RTOL = 1e-4
GRAD_ATOL = 1e-5

# name -> (factory kwargs, batch, image size, train mode for the gradient)
CASES = {
    "alexnet": ({}, 1, 193, False),
    "vgg11": ({"conv_arch": networks.VGG11_SMALL}, 1, 224, False),
    "nin": ({}, 2, 75, False),
    "googlenet": ({}, 2, 32, False),
    "lenet_bn": ({}, 8, 28, True),
    "resnet18": ({}, 4, 64, True),  # 32 px leaves batch norm 4 values per channel: ill-conditioned
    "densenet": ({}, 4, 32, True),
}

#: The seed of each case's images where it is not 2: with 2 these had a max-pool window whose
#: two largest inputs differ by under :data:`POOL_MARGIN` (see :func:`max_pool_gaps`).
INPUT_SEEDS = {"vgg11": 5, "nin": 3, "resnet18": 6}

#: Smallest gap allowed between the two largest inputs of a max-pool window (relative to the
#: pool's largest input). Max pooling's gradient jumps where they tie: within float32
#: rounding of a tie, two correct implementations of the layers before the pool may route
#: the gradient to different elements.
POOL_MARGIN = 1e-6


@contextlib.contextmanager
def max_pool_gaps(torch, net):
    """Collects, for every ``nn.MaxPool2d`` of ``net`` run inside the block, the smallest gap
    between the largest and the second largest input of a window whose maximum is positive
    (windows of ReLU zeros pass no gradient), relative to the pool's largest |input|. Exact
    ties are left out: with stride-1 pools over pooled maps they are copies of one value,
    whose gradient reaches the same element either way."""
    gaps: list[float] = []

    def hook(module, inputs, out):
        assert module.dilation in (1, (1, 1)), module  # the windows below are undilated
        a = inputs[0].detach().double()
        k, s, p = (
            torch.nn.modules.utils._pair(v)
            for v in (module.kernel_size, module.stride, module.padding)
        )
        (oh, ow), size = out.shape[-2:], a.shape[-2:]
        ends = [
            max(0, (o - 1) * st + kk - n - pp)
            for o, st, kk, n, pp in zip((oh, ow), s, k, size, p, strict=True)
        ]
        a_pad = torch.nn.functional.pad(a, (p[1], ends[1], p[0], ends[0]), value=-float("inf"))
        taps = torch.stack([
            a_pad[..., i : i + (oh - 1) * s[0] + 1 : s[0], j : j + (ow - 1) * s[1] + 1 : s[1]]
            for i in range(k[0]) for j in range(k[1])
        ])  # fmt: skip
        top = taps.topk(2, dim=0).values
        gap = (top[0] - top[1]) / a.abs().max()
        kept = gap[(top[0] > 0) & (gap > 0)]
        gaps.append(float(kept.min()) if kept.numel() else float("inf"))

    handles = [
        m.register_forward_hook(hook) for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)
    ]
    try:
        yield gaps
    finally:
        for h in handles:
            h.remove()


def _rel(ours, theirs) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))


def _jax_step(model, train: bool, grads: bool = True):
    """Evaluation logits, and the loss, its logits, updated statistics and parameter gradient
    (None unless ``grads``) in ``train`` mode, in one compiled function. Out of training mode
    the loss's logits are the evaluation logits: the network runs forward once."""

    def step(variables, x, labels):
        def loss_fn(params):
            v = {**variables, "params": params}
            if train:
                logits, updates = model.apply(v, x, train=True, mutable=["batch_stats"])
            else:
                logits, updates = model.apply(v, x), {}
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, updates)

        if grads:
            (loss, (logits, updates)), g = jax.value_and_grad(loss_fn, has_aux=True)(
                variables["params"]
            )
        else:
            (loss, (logits, updates)), g = loss_fn(variables["params"]), None
        return (model.apply(variables, x) if train else logits), loss, logits, updates, g

    return jax.jit(step)  # values compared, not speed


@pytest.mark.parametrize("name", list(CASES))
def test_equal_to_torch(torch, name):
    kwargs, batch, size, train = CASES[name]
    net = reference_net(name, seed=1, **kwargs)
    model = networks.MODELS[name][0](**kwargs)
    variables = from_torch(model, net.state_dict())
    rng = np.random.default_rng(INPUT_SEEDS.get(name, 2))
    x = rng.standard_normal((batch, 1, size, size)).astype(np.float32)
    labels = rng.integers(0, 10, batch)

    eval_logits, loss, logits, updates, grads = _jax_step(model, train)(variables, x, labels)

    tx = torch.tensor(x)
    with torch.no_grad():
        t_eval = net(tx).numpy()
    assert eval_logits.shape == t_eval.shape == (batch, 10)
    assert _rel(eval_logits, t_eval) <= RTOL, _rel(eval_logits, t_eval)

    net.train(train)
    with max_pool_gaps(torch, net) as gaps:
        t_logits = net(tx)
    assert min(gaps, default=np.inf) > POOL_MARGIN, f"images near a max-pool tie: {gaps}"
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(labels))
    t_loss.backward()
    assert _rel(logits, t_logits.detach().numpy()) <= RTOL
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-4)

    if train:  # the running statistics after one training batch
        new = to_torch(model, {**variables, **updates})
        t_state = net.state_dict()
        for key, value in t_state.items():
            if "running" in key:
                assert _rel(new[key].numpy(), value.numpy()) <= RTOL, key
            elif key.endswith("num_batches_tracked"):
                assert torch.equal(new[key], value), key

    t_grads = {k: p.grad.numpy() for k, p in net.named_parameters()}
    ours = traverse_util.flatten_dict(grads, sep=".")
    assert ours.keys() == t_grads.keys()
    # A conv bias right before batch norm has a zero gradient in training (the norm removes
    # it): both sides are float32 rounding noise there. So each parameter's error may be
    # GRAD_RTOL of its own largest entry or GRAD_ATOL of the network's largest entry.
    scale = max(np.abs(g).max() for g in t_grads.values())
    for k, g in t_grads.items():
        err = np.abs(ours[k] - g).max()
        assert err <= GRAD_RTOL * np.abs(g).max() + GRAD_ATOL * scale, (k, err, np.abs(g).max())


@pytest.mark.parametrize("name", list(networks.MODELS) + ["vgg11_small"])
def test_structure_equals_torch(torch, name):
    """Variable keys and shapes, parameter counts and the output shape at the book's image
    size, for every network at full size (torch's on the meta device: nothing allocated),
    and with other num_classes / in_channels."""
    bm = book_models()
    kwargs = {"conv_arch": networks.VGG11_SMALL} if name == "vgg11_small" else {}
    name = "vgg11" if name == "vgg11_small" else name
    for extra in ({}, {"num_classes": 7, "in_channels": 3}):
        model = networks.MODELS[name][0](**kwargs, **extra)
        with torch.device("meta"):
            net = bm.MODELS[name][0](**kwargs, **extra)
        want = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        got = {k: shape for k, (_, shape, _) in expected_variables(model).items()}
        assert got == want
        size = networks.MODELS[name][1]
        shape = (2, extra.get("in_channels", 1), size, size)
        abstract = jax.eval_shape(
            model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
        )
        assert count_params(abstract) == sum(p.numel() for p in net.parameters())
        out = jax.eval_shape(model.apply, abstract, jax.ShapeDtypeStruct(shape, jnp.float32))
        assert out.shape == (2, extra.get("num_classes", 10))


def _random_variables(model, shape: tuple[int, ...], seed: int = 0):
    """Variables of ``model`` drawn with NumPy (compiling ``model.init``'s random number
    generation takes longer than these tests need)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(
        model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32)
    )
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.0, a.shape) * 0.2, a.dtype), abstract
    )


def test_training_call_conventions():
    """apply(train=True) needs mutable batch_stats where there is batch norm and a dropout
    rng where there is dropout; evaluation needs neither."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 28, 28), np.float32)
    model = networks.lenet_bn()
    variables = _random_variables(model, x.shape)
    # Jitted: un-jitted, every primitive would compile on its own.
    train = jax.jit(
        lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]),
    )
    logits, updates = train(variables, x)
    assert logits.shape == (2, 10) and set(updates) == {"batch_stats"}
    with pytest.raises(Exception, match="batch_stats"):
        jax.jit(lambda v, x: model.apply(v, x, train=True))(variables, x)
    model = networks.nin()
    x = rng.standard_normal((2, 1, 67, 67), np.float32)  # NiN's smallest input
    variables = _random_variables(model, x.shape)
    train = jax.jit(
        lambda v, x, key: model.apply(v, x, train=True, rngs={"dropout": key}),
    )
    a, b = train(variables, x, jax.random.key(1)), train(variables, x, jax.random.key(2))
    assert a.shape == (2, 10) and not np.allclose(a, b)
    evaluate = jax.jit(model.apply)
    np.testing.assert_array_equal(evaluate(variables, x), evaluate(variables, x))


# The input sizes each network accepts (its docstring's) are checked for every network
# through its recipe in test_train_models.py (test_image_size_limits_are_the_networks).


def test_init_variables_is_model_init():
    model = networks.lenet_bn()
    fast = networks.init_variables(model, seed=3)
    plain = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 1, 28, 28)))
    assert jax.tree_util.tree_structure(fast) == jax.tree_util.tree_structure(plain)
    for a, b in zip(jax.tree_util.tree_leaves(fast), jax.tree_util.tree_leaves(plain), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-7)
    other = networks.init_variables(model, seed=4)
    assert not np.allclose(other["params"]["0"]["weight"], fast["params"]["0"]["weight"])
