"""Data parallelism over many devices and many hosts, with JAX's own SPMD machinery.

The same jitted epoch (:func:`jaxconv.train.train_epoch`) runs on one device, on every GPU of a
machine or on many machines; only where the arrays live changes:

- a 1-D :class:`~jax.sharding.Mesh` named ``"batch"`` over the devices (:func:`make_mesh`);
- the parameters, optimizer state and RNG key replicated on every device (:func:`replicate`);
- each epoch's batches ``(nb, B, ...)`` split along ``B`` (:func:`batch_sharding`), so each of
  the ``n`` devices computes the loss and gradients of ``B / n`` examples of every global
  batch, and XLA's SPMD partitioner adds the one all-reduce that averages the gradients (and
  sums the metrics) per step. Nothing here writes a collective by hand.

The data set (47 MB as uint8) is replicated on every device, once, not sharded: the epoch's
shuffle is then one global ``jax.random.permutation``, the same on every device and the same as
on one device, and each device gathers only its own ``B / n`` rows of each global batch from
its local copy, with no communication (the compiled epoch holds no collective but the
all-reduce). Sharding the set instead would need an all-to-all per epoch to shuffle across
devices and would change the order of examples with the device count. So a run gives the same
losses and parameters on 1, 2 or 8 devices up to float32 summation order, and a checkpoint
(every array replicated) restores on any device count.

Many hosts: call :func:`initialize` (``jax.distributed.initialize``) first, in every process.
Each process loads the whole data set from its own disk and places it on its own devices
(``jax.make_array_from_process_local_data``); the mesh spans every process's devices, process
by process, so process ``p`` computes the ``p``-th contiguous slice of every global batch.
Orbax coordinates checkpoint writes across processes: ``out_dir`` must be on a file system
that every host sees. Process 0 alone writes the metrics file, plots and progress bar.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import Any

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from jaxconv._args import as_int
from jaxconv.errors import ConfigError

logger = logging.getLogger("jaxconv.distributed")

BATCH_AXIS = "batch"

#: What a multi-host run needs, for error messages: flags of ``jaxconv train`` and JAX's own
#: detection of a cluster.
_HOW_TO_LAUNCH = (
    "give every process --coordinator-address HOST:PORT (process 0's address and a free "
    "port; or set $JAX_COORDINATOR_ADDRESS), --num-processes N and its own --process-id I; "
    "or, under Slurm, Open MPI, Kubernetes or on Cloud TPU, pass --distributed and JAX finds "
    "them itself"
)


# --------------------------------------------------------------------------- many hosts


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    initialization_timeout: int = 300,
) -> None:
    """Join a multi-process run: ``jax.distributed.initialize``, before any other JAX call.

    Arguments left None are found by JAX itself: ``$JAX_COORDINATOR_ADDRESS``, or the cluster
    it runs under (Slurm, Open MPI, Kubernetes, Cloud TPU). On CPU, collectives between
    processes go through gloo (JAX's default ``jax_cpu_collectives_implementation``). Does
    nothing in a process that already joined one.

    Args:
      coordinator_address: ``"host:port"`` of process 0, where it serves the coordinator.
      num_processes: how many processes take part (>= 1).
      process_id: this process's index, in ``0..num_processes-1``.
      initialization_timeout: seconds to wait for every process to connect.

    Raises:
      ValueError / TypeError: a bad argument (named), or not enough to go on (what to give).
      RuntimeError: JAX already ran something in this process (too late to initialize).
    """
    if num_processes is not None and as_int(num_processes, "num_processes") < 1:
        raise ConfigError("num_processes", f"must be >= 1, got {num_processes}")
    if process_id is not None:
        process_id = as_int(process_id, "process_id")
        if process_id < 0 or (num_processes is not None and process_id >= num_processes):
            bound = ">= 0" if num_processes is None else f"in 0..{num_processes - 1}"
            raise ConfigError("process_id", f"must be {bound}, got {process_id}")
    if coordinator_address is not None and (
        not isinstance(coordinator_address, str)
        or not coordinator_address.rpartition(":")[2].isdigit()
    ):
        raise ConfigError(
            "coordinator_address", f"must be 'host:port', got {coordinator_address!r}"
        )
    if jax.distributed.is_initialized():
        return
    try:
        jax.distributed.initialize(
            coordinator_address,
            num_processes,
            process_id,
            initialization_timeout=initialization_timeout,
        )
    except ValueError as err:  # JAX found no cluster to fill in what was not given
        raise ValueError(
            f"cannot start a multi-process run: {err} To launch one, {_HOW_TO_LAUNCH}."
        ) from None
    logger.info(
        "process %d of %d; %d local and %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def is_primary() -> bool:
    """Whether this is process 0, the one that writes logs, metrics and plots."""
    return jax.process_index() == 0


# --------------------------------------------------------------------------- many devices


def mesh_devices(devices: int | None = None) -> list[Any]:
    """The devices of a data-parallel run: all of them, or ``devices`` of them.

    With several processes, ``devices`` must divide evenly by the process count, and each
    process gives the same number of its own devices (its first ones). The result is ordered
    process by process, so each process owns a contiguous slice of every batch.

    Raises:
      ValueError / TypeError: ``devices`` is not a positive int, exceeds the devices there
        are, or does not divide evenly among the processes.
    """
    everything = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    if devices is None:
        return everything
    n = as_int(devices, "devices")
    if n < 1:
        raise ConfigError("devices", f"must be a positive int (>= 1), got {n}")
    if n > len(everything):
        raise ConfigError(
            "devices",
            f"is {n}, but there are only {len(everything)} "
            f"{everything[0].platform.upper()} device(s)",
        )
    processes = jax.process_count()
    if n % processes:
        raise ConfigError(
            "devices",
            f"{n} does not divide evenly among the {processes} processes: each process must give "
            "as many devices",
        )
    by_process = itertools.groupby(everything, key=lambda d: d.process_index)
    return [d for _, own in by_process for d in list(own)[: n // processes]]


def make_mesh(devices: int | Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh with axis ``"batch"`` over all devices, ``devices`` of them, or those given.

    The axis is ``AxisType.Auto``: jit's SPMD partitioner places the collectives, driven by the
    shardings of the inputs and :func:`jax.lax.with_sharding_constraint`.
    """
    chosen = list(mesh_devices(devices) if devices is None or isinstance(devices, int) else devices)
    return jax.make_mesh((len(chosen),), (BATCH_AXIS,), axis_types=(AxisType.Auto,), devices=chosen)


def check_batch_size(batch_size: int, mesh: Mesh | int) -> int:
    """Return ``batch_size`` if it splits evenly over the mesh's devices, else raise.

    The batch size is global (examples per optimizer step, over all devices); each device
    takes ``batch_size / n`` of every batch.

    Raises:
      ConfigError: it does not divide evenly, naming ``batch_size`` and the device count.
    """
    n = mesh if isinstance(mesh, int) else mesh.size
    batch_size = as_int(batch_size, "batch_size")
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        nearest = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(
            "batch_size",
            f"{batch_size} does not divide evenly by the {n} devices: the global batch is split "
            f"equally over them; use a multiple of {n}, e.g. {nearest}",
        )
    return batch_size


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device of ``mesh`` holds the whole array."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """For an epoch's batches ``(nb, B, ...)``: axis 1 (``B``) split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(None, BATCH_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every array leaf of ``tree`` on every device of ``mesh``, whole.

    Each process passes its own copy, which must be the same on all processes (the data set
    read from disk; a state initialised from the same seed): it goes to the process's own
    devices only, with no transfer between hosts.
    """
    host = jax.device_get(tree)  # process-local NumPy copies
    return jax.make_array_from_process_local_data(replicated(mesh), host)


__all__ = [
    "BATCH_AXIS",
    "batch_sharding",
    "check_batch_size",
    "initialize",
    "is_primary",
    "make_mesh",
    "mesh_devices",
    "replicate",
    "replicated",
]
