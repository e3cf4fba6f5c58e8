"""jaxconv.shapes (conv parts): output sizes vs the chapter's formula and PyTorch, 'same'
padding vs PyTorch, receptive fields vs known stacks and a brute-force gradient count.
(pool_output_shape is tested in test_pool.py.)"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxconv.conv import conv2d
from jaxconv.shapes import conv_output_shape, conv_padding, effective_kernel, receptive_field

# --- conv_output_shape -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((8, 3, 1, 1), (8, 8)),
        ((8, (5, 3), 1, (2, 1)), (8, 8)),
        ((8, 3, 2, 1), (4, 4)),
        ((8, (3, 5), (3, 4), (0, 1)), (2, 2)),
        (((3, 3), 2), (2, 2)),
        (((6, 8), (1, 2)), (6, 7)),
    ],
)
def test_conv_output_shape_chapter(args, expected):
    assert conv_output_shape(*args) == expected


def test_ten_5x5_convs_shrink_240_to_200():
    size = (240, 240)
    for _ in range(10):
        size = conv_output_shape(size, 5)
    assert size == (200, 200)  # chapter 6.3's motivating example


_padding = st.one_of(
    st.integers(0, 4),
    st.tuples(st.integers(0, 4), st.integers(0, 4)),
    st.tuples(
        st.tuples(st.integers(0, 4), st.integers(0, 4)),
        st.tuples(st.integers(0, 4), st.integers(0, 4)),
    ),
    st.sampled_from(["same", "valid"]),
)


@settings(max_examples=300, deadline=None)
@given(
    n=st.tuples(st.integers(1, 40), st.integers(1, 40)),
    k=st.tuples(st.integers(1, 7), st.integers(1, 7)),
    s=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    d=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    padding=_padding,
)
def test_conv_output_shape_formula(n, k, s, d, padding):
    if padding == "same":
        s = (1, 1)
    # The chapter's floor((n - k + p + s) / s), p the total padding, k the dilated extent.
    if padding == "valid":
        p = (0, 0)
    elif padding == "same":
        p = (d[0] * (k[0] - 1), d[1] * (k[1] - 1))
    elif isinstance(padding, int):
        p = (2 * padding, 2 * padding)
    elif isinstance(padding[0], int):
        p = (2 * padding[0], 2 * padding[1])
    else:
        p = (sum(padding[0]), sum(padding[1]))
    keff = [d[a] * (k[a] - 1) + 1 for a in range(2)]
    if any(keff[a] > n[a] + p[a] for a in range(2)):
        with pytest.raises(ValueError, match="larger than the padded input"):
            conv_output_shape(n, k, s, padding, d)
        return
    expected = tuple((n[a] - keff[a] + p[a] + s[a]) // s[a] for a in range(2))
    assert conv_output_shape(n, k, s, padding, d) == expected
    if padding == "same":
        assert expected == n


def _torch_out_shape(torch, n, k, s, padding, d):
    """Output (H, W) of torch.nn.functional.conv2d, or None where torch refuses."""
    F = torch.nn.functional
    x = torch.zeros((1, 1, *n))
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        (t, b), (left, r) = padding
        x, padding = F.pad(x, (left, r, t, b)), 0
    w = torch.zeros((1, 1, *k))
    try:
        with warnings.catch_warnings():  # torch: 'same' with an even kernel may copy the input
            warnings.simplefilter("ignore", UserWarning)
            return tuple(F.conv2d(x, w, stride=s, padding=padding, dilation=d).shape[2:])
    except RuntimeError:  # kernel larger than the padded input
        return None


def test_conv_output_shape_matches_torch(torch):
    r = np.random.default_rng(3)
    refused = 0
    for i in range(80):
        k = tuple(int(v) for v in r.integers(1, 6, size=2))
        d = tuple(int(v) for v in r.integers(1, 3, size=2))
        form = i % 4
        s = (1, 1) if form == 3 else tuple(int(v) for v in r.integers(1, 4, size=2))
        padding = [
            int(r.integers(0, 3)),
            tuple(int(v) for v in r.integers(0, 3, size=2)),
            tuple(tuple(int(v) for v in r.integers(0, 3, size=2)) for _ in range(2)),
            "same",
        ][form]
        n = tuple(int(v) for v in r.integers(1, 14, size=2))
        expected = _torch_out_shape(torch, n, k, s, padding, d)
        if expected is None:
            refused += 1
            with pytest.raises(ValueError):
                conv_output_shape(n, k, s, padding, d)
        else:
            assert conv_output_shape(n, k, s, padding, d) == expected, (n, k, s, padding, d)
    assert 0 < refused < 40  # both branches exercised


# --- conv_padding ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "d"),
    [
        ((1, 1), (1, 1)),
        ((2, 3), (1, 1)),
        ((4, 5), (1, 2)),
        ((3, 2), (2, 3)),
        ((6, 1), (3, 1)),
        ((2, 2), (2, 2)),
    ],
)
def test_conv_padding_same_matches_torch(k, d, torch):
    F = torch.nn.functional
    pads = conv_padding("same", k, 1, d)
    assert [sum(p) for p in pads] == [d[a] * (k[a] - 1) for a in range(2)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn((1, 2, 9, 10), generator=g)
    w = torch.randn((3, 2, *k), generator=g)
    (t, b), (left, r) = pads
    with warnings.catch_warnings():  # torch warns that an even kernel may copy the input
        warnings.simplefilter("ignore", UserWarning)
        want = F.conv2d(x, w, padding="same", dilation=d)
    got = F.conv2d(F.pad(x, (left, r, t, b)), w, dilation=d)
    assert got.shape == want.shape == (1, 3, 9, 10)
    torch.testing.assert_close(got, want)
    # and jaxconv's conv2d with padding="same" agrees with torch's values
    y = conv2d(x.numpy(), w.numpy(), padding="same", dilation=d)
    np.testing.assert_allclose(y, want.numpy(), rtol=1e-5, atol=1e-5)


def test_conv_padding_forms():
    assert conv_padding(2, 3) == ((2, 2), (2, 2))
    assert conv_padding((1, 0), 3) == ((1, 1), (0, 0))
    assert conv_padding(((0, 1), (2, 3)), 3) == ((0, 1), (2, 3))
    assert conv_padding("valid", (5, 5)) == ((0, 0), (0, 0))
    assert conv_padding("same", (5, 4), 1, (1, 2)) == ((2, 2), (3, 3))
    assert conv_padding("same", (2, 4)) == ((0, 1), (1, 2))  # odd extra at bottom/right


# --- receptive_field -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        ([3], (3, 3)),
        ([3, 3], (5, 5)),
        ([3, 3, 3], (7, 7)),
        ([5, (2, 2), 5, (2, 2)], (16, 16)),  # LeNet: conv5, pool 2/2, conv5, pool 2/2
        ([(3, 1, 2)], (5, 5)),
        ([((5, 3), 1)], (5, 3)),
        ([(2, 2), (2, 2), (2, 2)], (8, 8)),
        ([], (1, 1)),
    ],
)
def test_receptive_field_known(layers, expected):
    assert receptive_field(layers) == expected


def _brute_force_field(layers, size: int = 48) -> tuple[int, int]:
    """Bounding box of the input pixels that reach output (0, 0) through conv2d stacks with
    all-ones kernels (pooling counts as a strided ones-kernel), measured by the gradient."""

    def net(x):
        for layer in layers:
            spec = layer if isinstance(layer, tuple) else (layer,)
            k, s, d = (list(spec) + [1, 1])[:3]
            kh, kw = (k, k) if isinstance(k, int) else k
            x = conv2d(x, jnp.ones((1, 1, kh, kw)), stride=s, dilation=d)
        return x[0, 0, 0, 0]

    g = np.asarray(jax.grad(net)(jnp.ones((1, 1, size, size))))
    rows, cols = np.nonzero(g[0, 0])
    return (int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1))


@pytest.mark.parametrize(
    "layers",
    [
        [3, 3],
        [5, (2, 2), 5, (2, 2)],
        [(3, 2), (3, 1, 2), ((1, 4), (1, 2))],
        [((2, 3), (2, 1)), (3, 3, (1, 2)), 2],
    ],
)
def test_receptive_field_brute_force(layers):
    assert receptive_field(layers) == _brute_force_field(layers)


def test_effective_kernel():
    assert [effective_kernel(3, d) for d in (1, 2, 3)] == [3, 5, 7]


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: conv_output_shape(4, 5), ValueError, "larger than the padded input along height"),
        (lambda: conv_output_shape((8, 4), (3, 3), dilation=(1, 2)), ValueError, "along width"),
        (lambda: conv_output_shape(8, 3, stride=0), ValueError, "^stride must be positive"),
        (lambda: conv_output_shape(8, 3, stride=True), TypeError, "^stride must be an int"),
        (lambda: conv_output_shape(8, 0), ValueError, "^kernel_size must be positive"),
        (lambda: conv_output_shape(8, 3, dilation=-1), ValueError, "^dilation must be positive"),
        (lambda: conv_output_shape(8, 3, padding=-1), ValueError, "^padding must be non-negative"),
        (lambda: conv_output_shape(8, 3, padding="full"), ValueError, "^padding string"),
        (lambda: conv_output_shape(8, 3, 2, "same"), ValueError, "needs stride 1"),
        (lambda: conv_output_shape(8.0, 3), TypeError, "^input_size must be"),
        (lambda: conv_padding((1, 2, 3), 3), TypeError, "^padding must be an int"),
        (lambda: receptive_field([(3, 1, 1, 1)]), ValueError, r"^layers\[0\] must be"),
        (lambda: receptive_field([3, (3, 0)]), ValueError, r"^layers\[1\].stride must be positive"),
        (lambda: receptive_field(["3"]), TypeError, r"^layers\[0\].kernel_size must be"),
    ],
)
def test_shape_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
