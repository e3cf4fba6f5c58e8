"""experiments/09_alexnet.py ... 15_densenet.py (chapter 7) in quick mode.

Each script's ``main(Config(quick=True, out_dir=tmp))`` runs once, in one test per script (one
test, so that pytest-xdist never runs a script in two workers); it checks the shapes the script
printed against the torch reference network walked layer by layer as the book does (on torch's
meta device: nothing computed), its parameter count against torch's, that its short training
ran, that the figures are PNGs, and what its section's figure measures.
"""

from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from _book_reference import book_models
from _runs import check_one_epoch_checkpoint
from conftest import load_script
from test_experiments import png_size

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

# script -> (torch reference name, its kwargs, the size the script prints the shapes at)
SCRIPTS = {
    "09_alexnet": ("alexnet", {}, 224),
    "10_vgg": ("vgg11", {}, 224),
    "11_nin": ("nin", {}, 224),
    "12_googlenet": ("googlenet", {}, 96),
    "13_batch_norm": ("lenet_bn", {}, 28),
    "14_resnet": ("resnet18", {}, 224),
    "15_densenet": ("densenet", {}, 96),
}

#: script -> (the recipe its quick run trains, at which image size): one epoch on 8 training
#: and 4 test images, batch 4 (experiments/_ch7.py). These runs are those networks'
#: one-epoch training tests; test_train_models trains the rest.
TRAINS = {
    "09_alexnet": ("alexnet", 193),
    "10_vgg": ("vgg11_small", 224),
    "11_nin": ("nin", 67),
    "12_googlenet": ("googlenet", 8),
    "13_batch_norm": ("lenet_bn", 28),
    "14_resnet": ("resnet18", 8),
    "15_densenet": ("densenet", 32),
}
QUICK_TEST, QUICK_STEPS = 4, 8 // 4


def run(name: str, out_dir: Path) -> tuple[dict, str]:
    """The script's ``main`` in quick mode: what it returns and what it printed."""
    module = load_script(EXPERIMENTS / f"{name}.py", f"experiment_{name}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = module.main(module.Config(out_dir=out_dir, quick=True))
    return result, buf.getvalue()


def torch_walk(name: str, kwargs: dict, size: int) -> tuple[list[tuple[str, tuple]], int]:
    """The book's loop over the reference network: ``[(class name, output shape)]`` of each
    top-level layer on a (1, 1, size, size) input, and the parameter count."""
    import torch

    net = book_models().MODELS[name][0](**kwargs).to("meta").eval()
    x = torch.empty((1, 1, size, size), device="meta")
    rows = []
    for layer in net:
        x = layer(x)
        rows.append((type(layer).__name__, tuple(x.shape)))
    return rows, sum(p.numel() for p in net.parameters())


def check_shapes_and_parameters_are_the_books(name: str, result: dict, out: str) -> None:
    ref_name, kwargs, size = SCRIPTS[name]
    rows, n_params = torch_walk(ref_name, kwargs, size)
    assert result["shapes"] == rows
    assert result["n_params"] == n_params
    assert f"{n_params:,} parameters" in out
    for layer, shape in rows:
        assert f"{layer} output shape:\t {shape}" in out


def check_quick_training_ran_and_the_figures_are_pngs(result: dict, out: str) -> None:
    assert len(result["history"]) == 1
    assert all(math.isfinite(v) for v in result["final"].values())
    assert "epoch 1: loss" in out
    assert result["figures"]
    for figure in result["figures"]:
        width, height = png_size(figure)
        assert width > 200 and height > 150


def check_the_quick_run_saved_and_evaluates(name: str, result: dict, out_dir: Path) -> None:
    model, size = TRAINS[name]
    check_one_epoch_checkpoint(
        out_dir / "run-quick", model, size, QUICK_STEPS, result["history"], QUICK_TEST
    )


def check_vgg_small_is_a_quarter_of_the_channels(result: dict, out: str) -> None:
    full = [s[1] for _, s in result["shapes"][:5]]
    small = [s[1] for _, s in result["small_shapes"][:5]]
    assert full == [64, 128, 256, 512, 512] and small == [c // 4 for c in full]
    assert [s[-1] for _, s in result["shapes"][:5]] == [112, 56, 28, 14, 7]
    import torch  # noqa: F401  (the reference needs it)

    ref = book_models()
    assert result["n_params_small"] == sum(
        p.numel() for p in ref.vgg(ref.VGG11_SMALL).to("meta").parameters()
    )


def check_nin_has_no_dense_parameters(result: dict, out: str) -> None:
    split = result["params_by_kind"]
    assert split["nin"]["linear"] == 0 and split["nin"]["conv"] == result["n_params"]
    assert split["alexnet"]["linear"] > 0.9 * sum(split["alexnet"].values())


def check_inception_channels_add_up(result: dict, out: str) -> None:
    split = result["inception_channels"]
    assert len(split) == 9
    assert split[0] == (192, (64, 128, 32, 32))  # the book's first block: 256 channels out
    for (_, paths), (c_in, _) in zip(split, split[1:], strict=False):
        assert sum(paths) == c_in or sum(paths) in (480, 832)  # a pool between stages
    assert sum(split[-1][1]) == 1024


def check_batch_norm_keeps_each_layer_near_mean_0_std_1(result: dict, out: str) -> None:
    assert result["gamma"].shape == result["beta"].shape == (6,)
    with_bn = np.array(result["activation_stats"]["with batch norm"])  # (4, 2): mean, std
    without = np.array(result["activation_stats"]["without batch norm"])
    assert with_bn.shape == without.shape == (4, 2)
    # with batch norm each layer's input is centred and of unit-order spread...
    assert np.all(np.abs(with_bn[:, 0]) < 1.0) and np.all(
        (with_bn[:, 1] > 0.3) & (with_bn[:, 1] < 3)
    )
    # ... closer to (0, 1) than without it, layer by layer on the whole
    dist = lambda s: np.abs(s[:, 0]) + np.abs(np.log(s[:, 1]))  # noqa: E731
    assert dist(with_bn).sum() < dist(without).sum()
    assert "first BatchNorm2d: gamma" in out


def check_residual_stack_learns_where_the_plain_one_does_not(result: dict, out: str) -> None:
    plain, residual = result["stack_losses"]["plain"], result["stack_losses"]["residual"]
    assert plain.shape == residual.shape and len(plain) >= 20
    assert residual[-5:].mean() < plain[-5:].mean() - 0.1
    assert abs(plain[0] - math.log(10)) < 0.2  # both start near chance


def check_densenet_blocks_and_channel_growth(result: dict, out: str) -> None:
    assert result["block_shape"] == (4, 23, 8, 8)
    assert result["transition_shape"] == (4, 10, 4, 4)
    growth = dict(result["channel_growth"])
    blocks = [s[1] for name, s in result["shapes"] if name == "DenseBlock"]
    assert blocks == [growth[f"block {i} conv 4"] for i in range(1, 5)] == [192, 224, 240, 248]
    transitions = [s[1] for name, s in result["shapes"][2:7:2]]
    assert transitions == [growth[f"transition {i}"] for i in range(1, 4)] == [96, 112, 120]


#: script -> what its section's figure measures (AlexNet's figure is its kernels: a PNG)
SECTION_CHECKS = {
    "09_alexnet": lambda result, out: None,
    "10_vgg": check_vgg_small_is_a_quarter_of_the_channels,
    "11_nin": check_nin_has_no_dense_parameters,
    "12_googlenet": check_inception_channels_add_up,
    "13_batch_norm": check_batch_norm_keeps_each_layer_near_mean_0_std_1,
    "14_resnet": check_residual_stack_learns_where_the_plain_one_does_not,
    "15_densenet": check_densenet_blocks_and_channel_growth,
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_quick_run(name, tmp_path):
    result, out = run(name, tmp_path)
    check_shapes_and_parameters_are_the_books(name, result, out)
    check_quick_training_ran_and_the_figures_are_pngs(result, out)
    check_the_quick_run_saved_and_evaluates(name, result, tmp_path)
    SECTION_CHECKS[name](result, out)
