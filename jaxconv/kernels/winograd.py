"""3x3 stride-1 convolutions by Winograd's minimal filtering, F(m x m, 3 x 3).

Why: a 3x3 convolution computes each output from 9 products per channel pair. Winograd's
algorithm (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016) computes
an m x m tile of outputs from a (m + 2) x (m + 2) tile of inputs with (m + 2)**2 products per
channel pair instead of 9 m**2: 25 instead of 81 for m = 3, 36 instead of 144 for m = 4. The
products become (m + 2)**2 independent matrix products over the channels, which XLA:CPU runs
as fast, batched matrix products; the transforms around them are sums of strided slices,
which it fuses into a few elementwise loops. No convolution is left, so no convolution kernel
limits it, inside ``lax.scan`` or out.

What it computes, for x (N, H, W, Cin) and w (3, 3, Cin, Cout) (HWIO):

    V = B^T d B  per input tile d (m + 2 square, tiles m apart over the padded input)
    U = G g G^T  per channel pair's 3x3 kernel g
    M = sum over Cin of U * V   ((m + 2)**2 matrix products (tiles, Cin) @ (Cin, Cout))
    Y = A^T M A  per output tile (m x m), the tiles laid side by side and cropped

``B^T, G, A^T`` come from the interpolation points below (:func:`winograd_matrices`). The
algorithm is exact in exact arithmetic; in floating point the transforms add rounding: with
float32 the error measured against a float64 oracle was up to a few times that of a direct
float32 convolution (docs/BENCHMARKS.md), which is why the dispatch takes it for float32
layers only where it is much faster, and float64 keeps the direct paths.

The batch goes through in chunks (a ``lax.map``) of a few images, so that a chunk's
transformed tiles (2.8x the chunk's input for m = 3) stay in cache between the transform that
writes them and the matrix products that read them: whole, for a batch of 64 on 24x24x64 they
were 26 MB, and the transforms ran several times slower from memory.

Derivatives (:func:`winograd_conv_nhwc`, a ``custom_jvp``): every step is an ordinary linear
JAX operation, but JAX's own reverse mode of them (the transposed strided slices, the chunk
loop's transpose) measured slower than XLA's gradient convolutions. So both gradients are
written out by Winograd too: the input gradient of a 3x3 stride-1 conv is itself one
(:func:`input_gradient_nhwc`), and the weight gradient is a sum over tiles of products of
transformed input and output-gradient tiles (:func:`weight_gradient_nhwc`; 25 products per
tile and channel pair instead of 81). Forward mode and higher derivatives work.
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxconv._args import Padding
from jaxconv.geometry import ConvGeometry
from jaxconv.kernels.nhwc import from_nhwc, to_nhwc
from jaxconv.kernels.windows import largest_divisor
from jaxconv.kernels.xla import conv_lax

Array = jax.Array
Pair = tuple[int, int]

#: Interpolation points of F(m, 3) (the point at infinity is added): small integers keep the
#: transforms' coefficients small, which keeps their rounding small.
POINTS = {2: (0, 1, -1), 3: (0, 1, -1, 2), 4: (0, 1, -1, 2, -2)}

#: The tile the dispatch runs: F(3x3, 3x3), 25 products for 9 outputs (81 directly). F(4x4)
#: (36 for 16) was about as fast in the measured layers and its float32 error twice m = 3's.
TILE = 3

#: Bytes of transformed input tiles a chunk of the batch aims at (see the module docstring):
#: well inside the 32 MB L3 of the measured CPU, with the chunk's input and output beside it.
CHUNK_BYTES = 4 * 2**20

#: The layouts this path is written for (NCHW is transposed to NHWC and back).
WINOGRAD_LAYOUTS = ("NHWC", "NCHW")


@functools.cache
def winograd_matrices(m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(B^T, G, A^T)`` of F(m, 3) from :data:`POINTS`: shapes (t, t), (t, 3), (m, t) with
    t = m + 2, such that for a length-t input d and a length-3 kernel g the m outputs of their
    cross-correlation are ``A^T ((G g) * (B^T d))``.

    Toom-Cook: A^T evaluates at the points (rows p**i), G scales the kernel's polynomial by
    each point's Lagrange denominator, B^T is then the unique map that makes the identity hold,
    solved exactly in rationals.
    """
    points = [Fraction(p) for p in POINTS[m]]
    t = m + 2
    at = [[Fraction(0)] * t for _ in range(m)]
    g = [[Fraction(0)] * 3 for _ in range(t)]
    for j, p in enumerate(points):
        denominator = Fraction(1)
        for q in points:
            if q != p:
                denominator *= p - q
        for i in range(m):
            at[i][j] = p**i
        for k in range(3):
            g[j][k] = p**k / denominator
    at[m - 1][t - 1] = g[t - 1][2] = Fraction(1)
    # For each input position j: sum_k A^T[i, k] G[k, l] B^T[k, j] = [j == i + l], for all
    # outputs i and taps l (m * 3 equations, t unknowns, consistent by construction).
    bt = [[Fraction(0)] * t for _ in range(t)]
    for j in range(t):
        rows = [[at[i][k] * g[k][tap] for k in range(t)] for i in range(m) for tap in range(3)]
        rhs = [Fraction(int(j == i + tap)) for i in range(m) for tap in range(3)]
        for k, value in enumerate(_solve(rows, rhs)):
            bt[k][j] = value
    return tuple(np.array(a, np.float64) for a in (bt, g, at))  # type: ignore[return-value]


def _solve(rows: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction]:
    """The solution of a consistent, full-column-rank linear system, exactly (Gauss-Jordan
    over the rationals; the systems here have at most 18 rows)."""
    a = [row[:] + [b] for row, b in zip(rows, rhs, strict=True)]
    n = len(rows[0])
    for col in range(n):
        pivot = next(r for r in range(col, len(a)) if a[r][col] != 0)
        a[col], a[pivot] = a[pivot], a[col]
        a[col] = [v / a[col][col] for v in a[col]]
        for r in range(len(a)):
            if r != col and a[r][col] != 0:
                a[r] = [v - a[r][col] * p for v, p in zip(a[r], a[col], strict=True)]
    if any(row[-1] != 0 for row in a[n:]):
        raise ValueError("inconsistent system")
    return [a[i][-1] for i in range(n)]


def _combine(coefficients: np.ndarray, arrays: list[Array]) -> Array:
    """sum_i coefficients[i] * arrays[i], skipping zeros and multiplying by +-1 for free."""
    total = None
    for c, a in zip(coefficients.tolist(), arrays, strict=True):
        if c == 0:
            continue
        term = a if c == 1 else -a if c == -1 else a * c
        total = term if total is None else total + term
    assert total is not None  # every row of the matrices has a nonzero
    return total


def tile_grid(x_shape: tuple[int, ...], pads: Padding, m: int) -> tuple[Pair, Pair]:
    """The stride-1 3x3 conv's output size (oh, ow) for an NHWC ``x_shape`` and per-side
    ``pads``, and the m x m tiles (th, tw) that cover it (the last ones may overhang)."""
    (top, bottom), (left, right) = pads
    out = (x_shape[1] + top + bottom - 2, x_shape[2] + left + right - 2)
    return out, (-(-out[0] // m), -(-out[1] // m))


def pad_to_tiles(x: Array, pads: Padding, out: Pair, tiles: Pair, m: int) -> Array:
    """x (N, H, W, C) with the user's ``pads`` and zeros after them, so that the tiles of
    :func:`tile_grid` read inside: the last tile's overhang ``tiles * m - out`` rows/columns."""
    (top, bottom), (left, right) = pads
    extra = (tiles[0] * m - out[0], tiles[1] * m - out[1])
    return jnp.pad(x, ((0, 0), (top, bottom + extra[0]), (left, right + extra[1]), (0, 0)))


def tile_transform(xp: Array, matrix: np.ndarray, m: int, tiles: Pair) -> Array:
    """``M d M^T`` of every k x k tile d, m apart over xp (N, Hp, Wp, C), for a constant
    ``matrix`` M (t, k): -> (t*t, N*th*tw, C), row-major over the (t, t) tile points. Rows
    first, then columns: k strided slices and t sums each way, which XLA fuses.

    With ``B^T`` (k = t) these are the input tiles' ``B^T d B``; with ``A`` (k = m) the
    output-gradient tiles' ``A dY A^T`` (the transpose of :func:`output_transform`'s map)."""
    t, k = matrix.shape
    th, tw = tiles
    n, c = xp.shape[0], xp.shape[3]
    rows = [xp[:, a : a + m * (th - 1) + 1 : m] for a in range(k)]  # (N, th, Wp, C) each
    r = jnp.stack([_combine(matrix[i], rows) for i in range(t)])  # (t, N, th, Wp, C)
    cols = [r[:, :, :, b : b + m * (tw - 1) + 1 : m] for b in range(k)]  # (t, N, th, tw, C)
    v = jnp.stack([_combine(matrix[j], cols) for j in range(t)], axis=1)  # (t, t, N, th, tw, C)
    return v.reshape(t * t, n * th * tw, c)


def kernel_transform(w: Array, m: int) -> Array:
    """``G g G^T`` of every channel pair's kernel: w (3, 3, Cin, Cout) -> (t*t, Cin, Cout), as
    one matrix product by the constant (t*t, 9) matrix ``kron(G, G)`` (a few operations to
    compile; as elementwise sums per tile point it was over a hundred)."""
    g, w = winograd_matrices(m)[1], jnp.asarray(w)
    ci, co = w.shape[2:]
    u = jnp.dot(jnp.asarray(np.kron(g, g), w.dtype), w.reshape(9, ci * co))
    return u.reshape(-1, ci, co)


def output_transform(mm: Array, m: int, batch: int, tiles: Pair) -> Array:
    """``A^T M A`` of every tile, the tiles laid side by side: mm (t*t, N*th*tw, Cout) ->
    (N, th*m, tw*m, Cout)."""
    at = winograd_matrices(m)[2]
    t, (th, tw) = m + 2, tiles
    co = mm.shape[2]
    mm = mm.reshape(t, t, batch, th, tw, co)
    z = jnp.stack([_combine(at[r], [mm[i] for i in range(t)]) for r in range(m)])
    y = jnp.stack([_combine(at[s], [z[:, j] for j in range(t)]) for s in range(m)])
    # y[s, r, n, i, j] is output (i*m + r, j*m + s) of image n
    y = y.transpose(2, 3, 1, 4, 0, 5)  # (N, th, m, tw, m, Cout)
    return y.reshape(batch, th * m, tw * m, co)


def kernel_gradient_transform(du: Array, m: int) -> Array:
    """``G^T dU G`` (the transpose of :func:`kernel_transform`): (t*t, Cin, Cout) ->
    (3, 3, Cin, Cout), one product by ``kron(G, G)^T``."""
    g, du = winograd_matrices(m)[1], jnp.asarray(du)
    ci, co = du.shape[1:]
    dw = jnp.dot(jnp.asarray(np.kron(g, g).T, du.dtype), du.reshape(-1, ci * co))
    return dw.reshape(3, 3, ci, co)


def tile_products(x: Array, u: Array, pads: Padding, precision: Any, m: int) -> Array:
    """x (N, H, W, Cin) and the transformed kernel ``u`` (t*t, Cin, Cout) -> (N, oh, ow,
    Cout): the input tiles' transform, the t*t channel products, the output transform."""
    out, tiles = tile_grid(x.shape, pads, m)
    v = tile_transform(pad_to_tiles(x, pads, out, tiles, m), winograd_matrices(m)[0], m, tiles)
    mm = lax.dot_general(v, u.astype(v.dtype), (((2,), (1,)), ((0,), (0,))), precision=precision)
    return output_transform(mm, m, x.shape[0], tiles)[:, : out[0], : out[1]]


def conv_winograd_nhwc(x: Array, w: Array, pads: Padding, precision: Any, m: int) -> Array:
    """Stride 1, dilation 1, groups 1, 3x3: x (N, H, W, Cin), w (3, 3, Cin, Cout), per-side
    ``pads`` ((top, bottom), (left, right)) -> (N, oh, ow, Cout), by F(m x m, 3 x 3), the
    whole batch at once."""
    if w.shape[:2] != (3, 3):
        raise ValueError(f"the Winograd path takes 3x3 kernels, got {w.shape[:2]}")
    return tile_products(x, kernel_transform(w, m), pads, precision, m)


def batch_chunk(x_shape: tuple[int, ...], pads: Padding, m: int) -> int:
    """Images per chunk: the largest divisor of the batch whose transformed tiles take at most
    :data:`CHUNK_BYTES` (float32; at least one image). ``x_shape``: (N, H, W, C)."""
    _, (th, tw) = tile_grid(x_shape, pads, m)
    per_image = (m + 2) ** 2 * th * tw * x_shape[3] * 4
    return largest_divisor(x_shape[0], CHUNK_BYTES // per_image)


def winograd_applies(geom: ConvGeometry) -> bool:
    """Whether ``impl="winograd"`` has its own path: 2-D, NHWC or NCHW, a 3x3 kernel, stride 1,
    dilation 1, groups 1, padding smaller than the kernel on every side."""
    return (
        geom.layout in WINOGRAD_LAYOUTS
        and geom.kernel == (3, 3)
        and geom.stride == (1, 1)
        and geom.dilation == (1, 1)
        and geom.groups == 1
        and all(p < 3 for side in geom.padding for p in side)
    )


#: Channels (in and out) from which the dispatch takes this path, and the smallest output
#: side. One core, batch 64 unless said, against the NHWC rule (docs/BENCHMARKS.md): from 32
#: channels on 6x6 to 24x24 outputs faster forward and forward+backward (32x24x24, 32
#: channels: 0.71x / 0.86x); at 16 channels the forward was slower in NCHW (1.09x); on 3x3
#: outputs (512 channels) NCHW forward+backward was slower (1.12x), NHWC faster.
MIN_CHANNELS = 32
MIN_SIDE = 6


def winograd_wins(geom: ConvGeometry) -> bool:
    """Whether the dispatch takes this path on CPU for a float32 layer: where it applies, with
    at least :data:`MIN_CHANNELS` input and output channels and outputs of at least
    :data:`MIN_SIDE` on each side."""
    return (
        winograd_applies(geom)
        and min(geom.in_channels, geom.out_channels) >= MIN_CHANNELS
        and min(geom.out_size) >= MIN_SIDE
    )


def winograd_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """Conv values by F(:data:`TILE`, 3) over chunks of the batch (:func:`batch_chunk`):
    x (N, H, W, Cin), w (3, 3, Cin, Cout) -> (N, oh, ow, Cout)."""
    n, b = x.shape[0], batch_chunk(x.shape, pads, TILE)
    u = kernel_transform(w, TILE)  # once, outside the chunk loop

    def chunk(xc: Array) -> Array:
        return tile_products(xc, u, pads, precision, TILE)

    y = lax.map(chunk, x.reshape(n // b, b, *x.shape[1:]))
    return y.reshape(n, *y.shape[2:])


def input_gradient_nhwc(dy: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """The input gradient of the stride-1 conv with ``pads``: dy (N, oh, ow, Cout) ->
    (N, H, W, Cin), itself a 3x3 stride-1 conv (the kernel flipped, its channel axes swapped,
    padded by 2 - p), so by Winograd too."""
    flipped = jnp.flip(w, (0, 1)).transpose(0, 1, 3, 2)  # (3, 3, Cout, Cin)
    (top, bottom), (left, right) = pads
    return winograd_nhwc(dy, flipped, ((2 - top, 2 - bottom), (2 - left, 2 - right)), precision)


def weight_gradient_nhwc(x: Array, dy: Array, pads: Padding, precision: Any) -> Array:
    """The weight gradient of the stride-1 conv with ``pads``: x (N, H, W, Cin), dy (N, oh,
    ow, Cout) -> (3, 3, Cin, Cout), by Winograd: per chunk of the batch, the input tiles'
    ``B^T d B`` and the output-gradient tiles' ``A dY A^T``, their (t*t) channel products
    summed over the tiles into a (t*t, Cin, Cout) carry; ``G^T . G`` of the sum at the end."""
    n, b = x.shape[0], batch_chunk(x.shape, pads, TILE)
    out, tiles = tile_grid(x.shape, pads, TILE)
    bt, _, at = winograd_matrices(TILE)

    def chunk(total: Array, pair: tuple[Array, Array]) -> tuple[Array, None]:
        xc, dc = pair
        v = tile_transform(pad_to_tiles(xc, pads, out, tiles, TILE), bt, TILE, tiles)
        no_pads = ((0, 0), (0, 0))  # dy is the output: only the last tiles' overhang
        dm = tile_transform(pad_to_tiles(dc, no_pads, out, tiles, TILE), at.T, TILE, tiles)
        dims = (((1,), (1,)), ((0,), (0,)))  # per tile point: V^T (Cin, P) @ dM (P, Cout)
        return total + lax.dot_general(v, dm, dims, precision=precision), None

    zero = jnp.zeros(((TILE + 2) ** 2, x.shape[3], dy.shape[3]), jnp.result_type(x, dy))
    pairs = (x.reshape(n // b, b, *x.shape[1:]), dy.reshape(n // b, b, *dy.shape[1:]))
    total, _ = lax.scan(chunk, zero, pairs)
    return kernel_gradient_transform(total, TILE)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3))
def winograd_conv_nhwc(x: Array, w: Array, pads: Padding, precision: Any) -> Array:
    """x (N, H, W, Cin), w (3, 3, Cin, Cout), stride 1 -> (N, oh, ow, Cout): values by
    :func:`winograd_nhwc`, derivatives by the rule below."""
    return winograd_nhwc(x, w, pads, precision)


@functools.partial(winograd_conv_nhwc.defjvp, symbolic_zeros=True)
def _winograd_conv_nhwc_jvp(
    pads: Padding, precision: Any, primals: tuple[Array, Array], tangents: tuple[Any, Any]
) -> tuple[Array, Array]:
    """Each tangent is written as the transpose (``jax.linear_transpose``) of the gradient
    reverse mode should run, :func:`input_gradient_nhwc` for the input's and
    :func:`weight_gradient_nhwc` for the kernel's: reverse mode, transposing them back, runs
    those by Winograd; forward mode runs their transposes (slower, the same values). A
    symbolic-zero tangent (e.g. the input data's) costs nothing."""
    (x, w), (tx, tw) = primals, tangents
    y = winograd_nhwc(x, w, pads, precision)
    terms = []
    dy_like = jax.ShapeDtypeStruct(y.shape, y.dtype)
    if not isinstance(tx, jax.custom_derivatives.SymbolicZero):
        transposed = jax.linear_transpose(
            lambda dy: input_gradient_nhwc(dy, w, pads, precision), dy_like
        )
        terms.append(transposed(tx)[0])
    if not isinstance(tw, jax.custom_derivatives.SymbolicZero):
        transposed = jax.linear_transpose(
            lambda dy: weight_gradient_nhwc(x, dy, pads, precision), dy_like
        )
        terms.append(transposed(tw)[0])
    return y, sum(terms[1:], terms[0]) if terms else jnp.zeros_like(y)


def conv_winograd(x: Array, w: Array, geom: ConvGeometry, precision: Any) -> Array:
    """Batched 3x3 stride-1 conv in NHWC (w HWIO) or NCHW (w OIHW; transposed to channels
    last and back) by :func:`winograd_conv_nhwc`; lax for geometries
    :func:`winograd_applies` refuses."""
    if not winograd_applies(geom):
        return conv_lax(x, w, geom, precision)
    x, w = to_nhwc(x, w, geom.layout)
    return from_nhwc(winograd_conv_nhwc(x, w, geom.padding, precision), geom.layout)
