"""Shared plumbing of the experiment scripts: command line, figures, tables, kernel fitting.

Each script defines a ``Config`` dataclass of defaults and a ``main(cfg) -> dict``; ``cli``
turns the dataclass into an argparse command line (``--out-dir``, ``--quick``, ...), so that a
script runs as ``python experiments/<name>.py`` and a test calls ``main(Config(...))``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# --- command line ------------------------------------------------------------------------


def cli(
    config_cls: type,
    main: Callable[[Any], dict],
    doc: str | None,
    argv: Sequence[str] | None = None,
) -> dict:
    """Parse ``argv`` into ``config_cls`` (one flag per field) and run ``main``.

    bool fields become ``--flag`` switches; other fields take a value of the default's type;
    underscores become dashes (``out_dir`` -> ``--out-dir``). A field's help is the comment at
    the end of its line in the dataclass.
    """
    comments = dict(re.findall(r"^\s+(\w+):[^#\n]*#\s*(.+)$", inspect.getsource(config_cls), re.M))
    parser = argparse.ArgumentParser(
        description=doc,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Outputs (figures, tables) go to --out-dir, by default outputs/<script name>.",
    )
    for field in dataclasses.fields(config_cls):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        help_text = comments.get(field.name, "").replace("%", "%%")  # argparse formats help
        if isinstance(default, bool):
            parser.add_argument(flag, action="store_true", default=default, help=help_text)
        else:
            kind = Path if isinstance(default, Path) else type(default)
            parser.add_argument(
                flag, type=kind, default=default, help=f"{help_text} (default: {default})"
            )
    args = parser.parse_args(argv)
    return main(config_cls(**vars(args)))


def out_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and return it as a Path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- printing ----------------------------------------------------------------------------


def show(name: str, value: Any) -> None:
    """Print ``name`` and an array the way the chapter's notebook shows a tensor."""
    arr = np.asarray(value)
    with np.printoptions(precision=4, suppress=True):
        print(f"{name} (shape {arr.shape}):\n{arr}")


def table(rows: Sequence[dict], columns: Sequence[str] | None = None) -> str:
    """A plain-text table of ``rows`` (dicts), columns padded to their widest cell."""
    columns = list(columns or rows[0].keys())
    cells = [[str(c) for c in columns]] + [[str(r[c]) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- figures -----------------------------------------------------------------------------


def draw_matrix(
    ax: Any,
    value: Any,
    title: str,
    *,
    annotate: bool | None = None,
    cmap: str = "viridis",
    fmt: str = "{:.4g}",
    labels: Sequence[str] = (),
) -> None:
    """Draw a 2-D array as a heat map with its values written in the cells (small arrays).

    ``labels`` optionally names the rows (y tick labels). The diverging "coolwarm" map is
    centred on zero (white), so signs read at a glance.
    """
    arr = np.asarray(value, dtype=np.float64)
    limits = {}
    if cmap == "coolwarm":
        top = float(np.max(np.abs(arr))) or 1.0
        limits = {"vmin": -top, "vmax": top}
    image = ax.imshow(arr, cmap=cmap, interpolation="nearest", **limits)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks(range(len(labels)), labels) if labels else ax.set_yticks([])
    if annotate is None:
        annotate = arr.size <= 64
    if annotate:
        for (i, j), v in np.ndenumerate(arr):
            r, g, b, _ = image.cmap(image.norm(v))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # perceived luminance of the cell
            ax.text(
                j,
                i,
                fmt.format(float(v)),
                ha="center",
                va="center",
                fontsize=8,
                color="white" if dark else "black",
            )


def save(fig: Any, path: Path) -> Path:
    """Save ``fig`` as PNG at ``path`` and close it."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {path}")
    return path


# --- optimisation ------------------------------------------------------------------------


def minimise(
    loss_fn: Callable[[Any], jax.Array],
    params: Any,
    optimizer: optax.GradientTransformation,
    steps: int,
) -> tuple[Any, jax.Array]:
    """Run ``steps`` optimizer updates on ``loss_fn(params)`` inside one ``lax.scan``.

    Pure (jit- and vmap-able): returns the final params and the (steps,) losses, each loss
    computed before its update (as the chapter prints ``l.sum()`` of the forward pass).
    """

    def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], jax.Array]:
        p, state = carry
        loss, grad = jax.value_and_grad(loss_fn)(p)
        updates, state = optimizer.update(grad, state, p)
        return (optax.apply_updates(p, updates), state), loss

    (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
    return params, losses
