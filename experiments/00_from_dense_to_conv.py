"""Chapter 6.1: from fully connected layers to convolutions.

    python experiments/00_from_dense_to_conv.py [--quick] [--out-dir DIR] [--delta 2]

Reproduces, in order:
  * 6.1.2  the hidden layer of an MLP over an image kept as an image, with a fourth-order weight
           tensor: [H]_{i,j} = [U]_{i,j} + sum_k sum_l [W]_{i,j,k,l} [X]_{k,l} (a jnp.einsum);
  * translation invariance: W depends only on the offset (a, b) = (k - i, l - j), U is one
           number u. The layer is then a cross-correlation over every offset: it equals
           ``jaxconv.corr2d`` of the zero-padded image, and a shift of X only shifts H;
  * locality: offsets with |a| > Delta or |b| > Delta get weight 0, and the layer is
           ``jaxconv.corr2d`` with a (2 Delta + 1) x (2 Delta + 1) kernel (and padding Delta):
           equal to float32 rounding (the max difference is printed);
  * the parameter count of each stage for the chapter's 1-megapixel image (1000 x 1000):
           10^9 for a 1,000-unit MLP layer, 10^12 for the fourth-order W, about 4 x 10^6 with
           translation invariance, (2 Delta + 1)^2 with locality (``parameter_counts.csv``);
  * 6.1.1/6.1.4 "Where's Waldo": one small Fashion-MNIST item hidden, dimmed, among bright
           other items on a cluttered canvas, found by normalized cross-correlation with its
           image (a plain correlation is drawn to the brightest clutter), over several canvases
           (``wheres_waldo.png`` marks the peak).
Needs the Fashion-MNIST IDX files for the last part (Debian's ``dataset-fashion-mnist``, or
``--data-dir``); without them the script says how to get them.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

import jaxconv
from jaxconv import data as data_lib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import cli, out_dir, save, table  # noqa: E402


@dataclasses.dataclass
class Config:
    out_dir: Path = Path("outputs/00_from_dense_to_conv")  # figures and tables go here
    quick: bool = False  # a 10x12 layer image and 5 small Waldo canvases
    seed: int = 0  # random seed (Waldo canvas t uses seed + t)
    height: int = 24  # the small image the layers are compared on (the dense W is h*w*h*w)
    width: int = 28  # its width; unequal to the height so that no transpose goes unnoticed
    delta: int = 2  # locality: offsets |a|, |b| <= delta, a (2 delta + 1)^2 kernel
    megapixel_side: int = 1000  # the chapter's example: a 1000 x 1000 image
    mlp_hidden: int = 1000  # the chapter's MLP layer over the flattened image
    grid: int = 8  # Waldo canvas: grid x grid items
    trials: int = 20  # canvases, each with Waldo in a new place
    data_dir: str = ""  # empty: $JAXCONV_DATA_DIR or /usr/share/datasets/fashion-mnist


HIGHEST = jax.lax.Precision.HIGHEST  # float32 products, also where XLA would use TF32


# --- 6.1.2: the layers, from dense to convolution -------------------------------------------


def dense_layer(X: jax.Array, W: jax.Array, U: jax.Array) -> jax.Array:
    """[H]_{i,j} = [U]_{i,j} + sum_{k,l} [W]_{i,j,k,l} [X]_{k,l}: (h, w) -> (h, w)."""
    return U + jnp.einsum("ijkl,kl->ij", W, X, precision=HIGHEST)


def weights_from_offsets(V: jax.Array, h: int, w: int) -> jax.Array:
    """The fourth-order W of a translation-invariant layer: W[i, j, k, l] = V[k - i, l - j].

    ``V`` is (2h - 1, 2w - 1), offset a stored at row a + h - 1 (a in -(h-1)..h-1), so that
    every pair of positions of an (h, w) image has its weight. Returns (h, w, h, w).
    """
    i, k = np.arange(h)[:, None], np.arange(h)[None, :]  # output row, input row
    j, m = np.arange(w)[:, None], np.arange(w)[None, :]  # output column, input column (l)
    rows = (k - i + h - 1)[:, None, :, None]  # (h, 1, h, 1)
    cols = (m - j + w - 1)[None, :, None, :]  # (1, w, 1, w)
    return V[rows, cols]  # (h, w, h, w)


def local_mask(h: int, w: int, delta: int) -> np.ndarray:
    """(2h - 1, 2w - 1) mask of the offsets |a| <= delta and |b| <= delta."""
    a = np.abs(np.arange(-(h - 1), h))[:, None]
    b = np.abs(np.arange(-(w - 1), w))[None, :]
    return (a <= delta) & (b <= delta)


def corr2d_same(X: jax.Array, K: jax.Array) -> jax.Array:
    """``jaxconv.corr2d`` of X zero-padded by the kernel's half-size: (h, w) -> (h, w)."""
    ph, pw = (K.shape[0] - 1) // 2, (K.shape[1] - 1) // 2
    return jaxconv.corr2d(jnp.pad(X, ((ph, ph), (pw, pw))), K)


def shift(X: jax.Array, di: int, dj: int) -> jax.Array:
    """X moved down by di and right by dj, zeros coming in (not wrapped)."""
    h, w = X.shape
    return jnp.pad(X, ((di, 0), (dj, 0)))[:h, :w]


def parameter_counts(side: int, mlp_hidden: int, delta: int) -> list[dict]:
    """Weights and biases of each stage for a side x side single-channel image."""
    n = side * side
    return [
        {"stage": f"MLP, image flattened, {mlp_hidden:,} hidden units", "weights": n * mlp_hidden,
         "biases": mlp_hidden},
        {"stage": "fourth-order W, H as large as X", "weights": n * n, "biases": n},
        {"stage": "translation invariance: V[a, b], u", "weights": (2 * side - 1) ** 2,
         "biases": 1},
        {"stage": f"locality: |a|, |b| <= {delta}", "weights": (2 * delta + 1) ** 2, "biases": 1},
    ]  # fmt: skip


# --- 6.1.4: Where's Waldo -------------------------------------------------------------------


def small_items(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, 14, 14) float32 in [0, 1], 2x2 average pooling."""
    x = jnp.asarray(images, jnp.float32)[:, None] / 255.0  # (n, 1, 28, 28)
    return np.asarray(jaxconv.avg_pool2d(x, 2)[:, 0])  # (n, 14, 14)


def make_canvas(
    items: np.ndarray, grid: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A cluttered canvas of ``grid * grid`` items and the one hidden among them.

    Items sit in cells of ``s + 2`` pixels (``s`` = item size) with up to 6 pixels of jitter,
    so neighbours overlap (drawn with max, as ink on ink). Waldo, a random item, stands in
    front of the crowd (his square hides what is behind it) at 35% brightness; the clutter
    keeps 60-100%, and a little noise covers everything.
    Returns (canvas (S, S), Waldo's undimmed image (s, s), Waldo's top-left corner).
    """
    s = items.shape[-1]
    cell = s + 2
    size = grid * cell + 6
    picks = rng.choice(len(items), grid * grid, replace=False)
    waldo = int(rng.integers(grid * grid))
    corners = [
        ((c // grid) * cell + int(rng.integers(0, 7)), (c % grid) * cell + int(rng.integers(0, 7)))
        for c in range(grid * grid)
    ]
    canvas = np.zeros((size, size), np.float32)
    for c, (idx, (r0, c0)) in enumerate(zip(picks, corners, strict=True)):
        if c != waldo:
            patch = canvas[r0 : r0 + s, c0 : c0 + s]
            np.maximum(patch, rng.uniform(0.6, 1.0) * items[idx], out=patch)
    r0, c0 = corners[waldo]
    canvas[r0 : r0 + s, c0 : c0 + s] = 0.35 * items[picks[waldo]]
    canvas += rng.normal(0.0, 0.02, canvas.shape).astype(np.float32)
    return canvas, items[picks[waldo]], corners[waldo]


def normalized_xcorr(canvas: jax.Array, template: jax.Array) -> jax.Array:
    """Pearson correlation of the template with every window of the canvas, by ``corr2d``.

    ncc = sum (x - mean x)(t - mean t) / (|x - mean x| |t - mean t|) per window x: the sums
    are three cross-correlations (with the centred template, and with ones over x and x^2).
    A window's brightness and contrast drop out, so a dim item can still win.
    (S, S) * (s, s) -> (S - s + 1, S - s + 1), values in [-1, 1].
    """
    t = template - jnp.mean(template)
    n = template.size
    ones = jnp.ones_like(template)
    num = jaxconv.corr2d(canvas, t)
    window_sum = jaxconv.corr2d(canvas, ones)
    window_sq = jaxconv.corr2d(canvas * canvas, ones)
    window_var = jnp.maximum(window_sq - window_sum**2 / n, 0.0)  # n * variance
    return num / (jnp.sqrt(window_var) * jnp.linalg.norm(t) + 1e-8)


def peak(score: np.ndarray) -> tuple[int, int]:
    """(row, column) of the largest value."""
    r, c = np.unravel_index(int(np.argmax(score)), score.shape)
    return int(r), int(c)


def draw_waldo(
    canvas: np.ndarray,
    template: np.ndarray,
    ncc: np.ndarray,
    raw: np.ndarray,
    corner: tuple[int, int],
    found: tuple[int, int],
    found_raw: tuple[int, int],
    path: Path,
) -> Path:
    """The template, the canvas with both peaks boxed, and the two score maps, as one PNG."""
    s = template.shape[0]
    fig, axes = plt.subplots(
        1, 4, figsize=(16, 4.4), layout="constrained", gridspec_kw={"width_ratios": [1, 4, 4, 4]}
    )
    axes[0].imshow(template, cmap="gray")
    axes[0].set_title("Waldo (template)", fontsize=9)
    axes[1].imshow(canvas, cmap="gray", vmin=0, vmax=1)
    axes[1].set_title("canvas: Waldo hidden at 35% brightness", fontsize=9)
    for (r, c), color, label in ((found, "lime", "normalized peak"), (found_raw, "red", "plain")):
        axes[1].add_patch(Rectangle((c - 0.5, r - 0.5), s, s, fill=False, ec=color, lw=2))
        axes[1].text(c, r - 1.5, label, color=color, fontsize=8)
    axes[2].imshow(ncc, cmap="viridis")
    axes[2].plot(found[1], found[0], "+", color="lime", ms=16, mew=2)
    axes[2].set_title(f"normalized cross-correlation: peak {ncc[found]:.3f} at {found}", fontsize=9)
    axes[3].imshow(raw, cmap="viridis")
    axes[3].plot(found_raw[1], found_raw[0], "+", color="red", ms=16, mew=2)
    axes[3].set_title(f"plain corr2d(canvas, template): peak at {found_raw}", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"6.1 Where's Waldo: hidden at {corner}, found at {found}")
    return save(fig, path)


def random_layers(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    """A random image and the weights of the general and the invariant layer (float32).

    X (h, w); W (h, w, h, w) and U (h, w) of the general layer; V (2h - 1, 2w - 1), one weight
    per offset, and the scalar u of the invariant one. Weights scaled by 1 / sqrt(h w) so that
    H is of order 1 whatever the size. (NumPy draws them: XLA compiles threefry for a
    fourth-order array far more slowly than the layers themselves.)
    """
    scale = 1.0 / (h * w) ** 0.5
    draw = {
        "X": rng.standard_normal((h, w)),
        "W": scale * rng.standard_normal((h, w, h, w)),
        "U": rng.standard_normal((h, w)),
        "V": scale * rng.standard_normal((2 * h - 1, 2 * w - 1)),
        "u": rng.standard_normal(()),
    }
    return {name: np.asarray(value, np.float32) for name, value in draw.items()}


@functools.partial(jax.jit, static_argnames=("delta", "di", "dj"))
def compare_layers(
    X: jax.Array,
    W: jax.Array,
    U: jax.Array,
    V: jax.Array,
    u: jax.Array,
    delta: int,
    di: int = 2,
    dj: int = 3,
) -> dict[str, jax.Array]:
    """Build the three layers on the image X and measure how far apart they are.

    One jitted function, so that the whole comparison compiles once. Returns max |diff|s:
    invariant layer vs corr2d over every offset, local layer vs corr2d with the
    (2 delta + 1)^2 kernel (also relative to max |H|), and how far each of the dense and the
    invariant layer is from shifting H by (di, dj) when X is shifted so.
    """
    h, w = X.shape

    # --- translation invariance: W[i, j, k, l] = V[k - i, l - j], U = u ------------------------
    W_inv = weights_from_offsets(V, h, w)  # (h, w, h, w), from (2h-1)(2w-1) numbers
    H_inv = dense_layer(X, W_inv, jnp.full((h, w), u))
    H_inv_corr = corr2d_same(X, V) + u  # every offset: X padded by (h-1, w-1)

    # A shift of X only shifts H. X_centre is zero within 3 pixels of the border, so the shifted
    # content stays inside the image; rows and columns the shift brings in are not compared.
    X_centre = jnp.zeros((h, w)).at[3 : h - 3, 3 : w - 3].set(X[3 : h - 3, 3 : w - 3])

    def shift_error(W4: jax.Array, U2: jax.Array) -> jax.Array:
        moved = dense_layer(shift(X_centre, di, dj), W4, U2)  # H of the shifted X
        still = shift(dense_layer(X_centre, W4, U2), di, dj)  # H of X, shifted
        return jnp.max(jnp.abs(moved - still)[di:, dj:])

    # --- locality: V[a, b] = 0 unless |a|, |b| <= delta ------------------------------------------
    V_local = jnp.where(local_mask(h, w, delta), V, 0.0)
    K = V[h - 1 - delta : h + delta, w - 1 - delta : w + delta]  # (2 delta + 1, 2 delta + 1)
    H_local = dense_layer(X, weights_from_offsets(V_local, h, w), jnp.full((h, w), u))
    H_conv = corr2d_same(X, K) + u
    diff_local = jnp.max(jnp.abs(H_local - H_conv))
    return {
        "diff_invariant": jnp.max(jnp.abs(H_inv - H_inv_corr)),
        "diff_local": diff_local,
        "rel_diff_local": diff_local / jnp.max(jnp.abs(H_conv)),
        "shift_error_invariant": shift_error(W_inv, jnp.full((h, w), u)),
        "shift_error_dense": shift_error(W, U),
    }


@jax.jit
def score_maps(canvas: jax.Array, template: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(normalized, plain) cross-correlation of the template over the canvas."""
    return normalized_xcorr(canvas, template), jaxconv.corr2d(canvas, template)


def main(cfg: Config) -> dict:
    out = out_dir(cfg.out_dir)
    if cfg.quick:
        cfg = dataclasses.replace(cfg, height=10, width=12, grid=5, trials=5)
    h, w, delta = cfg.height, cfg.width, cfg.delta
    if not 0 <= delta < min(h, w) or min(h, w) < 8:
        raise ValueError(
            f"--height and --width must be >= 8 and --delta in 0..min(h, w) - 1, got "
            f"{h}, {w} and {delta}"
        )
    if cfg.grid < 2 or cfg.trials < 1:
        raise ValueError(f"--grid must be >= 2 and --trials >= 1, got {cfg.grid} and {cfg.trials}")

    # --- the three layers, compared (float32 products throughout, also on GPUs) ---------------
    layers = random_layers(np.random.default_rng(cfg.seed), h, w)
    with jax.default_matmul_precision("highest"):
        diffs = {k: float(v) for k, v in compare_layers(**layers, delta=delta).items()}
    k = 2 * delta + 1
    print(
        f"dense layer: X ({h}, {w}) -> H ({h}, {w}), W ({h}, {w}, {h}, {w}): "
        f"{(h * w) ** 2:,} weights"
    )
    print(
        f"invariant layer (W from V[a, b], (2h-1)(2w-1) = {(2 * h - 1) * (2 * w - 1)} weights) == "
        f"corr2d(X padded by ({h - 1}, {w - 1}), V) + u: max |diff| = "
        f"{diffs['diff_invariant']:.2e}"
    )
    print(
        f"shift X by (2, 3): does H shift the same way? invariant layer: max |diff| = "
        f"{diffs['shift_error_invariant']:.2e}; dense layer: {diffs['shift_error_dense']:.2f}"
    )
    print(
        f"local layer (|a|, |b| <= {delta}) == corr2d(X padded by {delta}, {k}x{k} kernel) + u: "
        f"max |diff| = {diffs['diff_local']:.2e} ({diffs['rel_diff_local']:.1e} of max |H|; "
        f"float32 eps {np.finfo(np.float32).eps:.1e})"
    )

    # --- parameter counts for the chapter's 1-megapixel image ----------------------------------
    counts = parameter_counts(cfg.megapixel_side, cfg.mlp_hidden, delta)
    side = cfg.megapixel_side
    print(f"\nparameters for a {side} x {side} image, one channel:")
    print(
        table([{**r, "weights": f"{r['weights']:,}", "biases": f"{r['biases']:,}"} for r in counts])
    )
    with open(out / "parameter_counts.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["stage", "weights", "biases"])
        writer.writeheader()
        writer.writerows(counts)

    # --- 6.1.1 / 6.1.4: Where's Waldo -----------------------------------------------------------
    try:
        ds = data_lib.load_fashion_mnist(cfg.data_dir or None)
    except data_lib.DataNotFoundError as err:
        raise data_lib.DataNotFoundError(
            f"The Where's Waldo part needs Fashion-MNIST (the layers above ran without it).\n{err}"
        ) from err
    items = small_items(ds.test.images)  # (10000, 14, 14)
    hidden, found, found_raw, scores = [], [], [], []
    for t in range(cfg.trials):
        rng = np.random.default_rng(cfg.seed + t)
        canvas, template, corner = make_canvas(items, cfg.grid, rng)
        ncc, raw = (np.asarray(a) for a in score_maps(canvas, template))
        hidden.append(corner)
        found.append(peak(ncc))
        found_raw.append(peak(raw))
        scores.append(float(ncc[found[-1]]))
        if t == 0:
            figure = draw_waldo(
                canvas, template, ncc, raw, corner, found[0], found_raw[0], out / "wheres_waldo.png"
            )
    hits = sum(f == c for f, c in zip(found, hidden, strict=True))
    hits_raw = sum(f == c for f, c in zip(found_raw, hidden, strict=True))
    print(
        f"\nWhere's Waldo on {cfg.trials} canvases of {canvas.shape[0]}x{canvas.shape[1]} "
        f"({cfg.grid * cfg.grid} items): normalized cross-correlation finds him {hits} times, "
        f"plain corr2d {hits_raw} times; normalized peak values {min(scores):.3f}-{max(scores):.3f}"
    )

    return {
        **diffs,
        "kernel_shape": (k, k),
        "dense_weights": (h * w) ** 2,
        "parameter_counts": counts,
        "waldo_hidden": hidden,
        "waldo_found": found,
        "waldo_found_plain": found_raw,
        "waldo_scores": scores,
        "figures": [figure],
    }


if __name__ == "__main__":
    try:
        cli(Config, main, __doc__)
    except data_lib.DataNotFoundError as err:
        sys.exit(str(err))
