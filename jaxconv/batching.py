"""On-device batching of a data set held whole on the accelerator (47 MB as uint8).

:func:`to_device` puts a split there once; inside the jitted epoch :func:`shuffle_batches`
permutes and batches it with ``jax.random``, and :func:`pad_to_batches` covers every example
(with a mask) for evaluation. Shapes: ``(n, ...)`` in, ``(nb, batch_size, ...)`` out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv._args import as_int

if TYPE_CHECKING:
    from jaxconv.data import Split


def to_device(split: Split, device: Any = None) -> tuple[jax.Array, jax.Array]:
    """Put a split's images (uint8, as stored: 47 MB for the training set) and labels on device.

    ``device`` is anything ``jax.device_put`` takes (a device or a sharding); None: the default.
    """
    return jax.device_put((split.images, split.labels), device)


def _batch_count(images: Any, labels: Any, batch_size: Any) -> tuple[int, int]:
    """Validate the shared arguments; return ``(batch_size, num_examples)``."""
    batch_size = as_int(batch_size, "batch_size")  # a tracer here means it was not static
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if np.ndim(images) < 1 or np.ndim(labels) < 1:
        raise ValueError(
            f"images and labels need a leading example axis, got shapes {np.shape(images)} "
            f"and {np.shape(labels)}"
        )
    n = np.shape(images)[0]
    if np.shape(labels)[0] != n:
        raise ValueError(
            f"images and labels must hold as many examples, got {n} and {np.shape(labels)[0]}"
        )
    return batch_size, n


def _drop_remainder(n: int, batch_size: int) -> int:
    if n < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {n} examples: no full batch (use pad_to_batches)"
        )
    return n // batch_size


def shuffle_batches(
    key: jax.Array, images: Any, labels: Any, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """One epoch's batches in a random order drawn from ``key``, the remainder dropped.

    Pure and jit-able with ``batch_size`` static: ``jax.jit(shuffle_batches,
    static_argnames="batch_size")``. Every example appears at most once, with its label.

    Args:
      key: a ``jax.random`` key.
      images: ``(n, ...)``; labels: ``(n, ...)``; batch_size: examples per batch, ``<= n``.

    Returns:
      ``images (n // batch_size, batch_size, ...)``, ``labels (n // batch_size, batch_size, ...)``.
    """
    batch_size, n = _batch_count(images, labels, batch_size)
    num_batches = _drop_remainder(n, batch_size)
    order = jax.random.permutation(key, n)[: num_batches * batch_size]  # (nb * bs,)
    images = jnp.take(jnp.asarray(images), order, axis=0)
    labels = jnp.take(jnp.asarray(labels), order, axis=0)
    return (
        images.reshape(num_batches, batch_size, *images.shape[1:]),  # (nb, bs, ...)
        labels.reshape(num_batches, batch_size, *labels.shape[1:]),  # (nb, bs, ...)
    )


def pad_to_batches(
    images: Any, labels: Any, batch_size: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Every example in order, the last batch padded with zeros, and a mask of the real ones.

    For evaluation over a whole split in one jitted scan: sum a per-example metric times
    ``mask`` and divide by ``mask.sum()`` (which is ``n``). Padded rows are zeros with label 0.

    Returns:
      ``images (nb, batch_size, ...)``, ``labels (nb, batch_size, ...)``, ``mask (nb,
      batch_size)`` bool, with ``nb = ceil(n / batch_size)``.
    """
    batch_size, n = _batch_count(images, labels, batch_size)
    num_batches = -(-n // batch_size)
    pad = num_batches * batch_size - n

    def padded(x: jax.Array) -> jax.Array:
        x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
        return x.reshape(num_batches, batch_size, *x.shape[1:])  # (nb, bs, ...)

    mask = (jnp.arange(num_batches * batch_size) < n).reshape(num_batches, batch_size)
    return padded(jnp.asarray(images)), padded(jnp.asarray(labels)), mask
