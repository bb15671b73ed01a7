"""Data parallelism on JAX's own runtime: a one-axis ``data`` mesh, the batch split along it.

Training replicates the train state on every device and splits each batch's rows over the mesh;
XLA inserts the gradient all-reduce. On several hosts ``initialize`` (``jax.distributed``) joins
them first; every host then builds the same global batch (the data order is a pure function of
seed and step) and each device takes its own rows, so no host needs another's data.

Inference splits rows over the devices of one host (each host serves its own requests); every
device runs its own early-exit loop (see ``engines.Engine.mesh``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "data"
# CUDA graphs around whole while-loops and conditionals, not only straight-line kernels: the
# early-exit loops then cost one launch per call instead of one host round-trip per layer
# (H100, albert-base shape, bf16: masked engine at batch 1 1.37 -> 1.00 ms per text; refill at
# batch 1024 +4%; docs/benchmarks.md). Ignored on CPU.
COMMAND_BUFFERS = ("--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,CUDNN,WHILE,"
                   "CONDITIONAL --xla_gpu_graph_min_graph_size=1")
# Matrix products through cuBLAS rather than Triton: XLA then fuses each dense layer's bias and the
# FFN's tanh-GELU into the cuBLASLt call (epilogues BIAS, BIAS_GELU) instead of a separate pass over
# the [tokens, 3072] activations (H100, albert-base shape, bf16, batch 1024: full depth 32,808 ->
# 37,449 texts/s in one run; docs/benchmarks.md). Ignored on CPU.
CUBLAS_GEMMS = "--xla_gpu_enable_triton_gemm=false"
XLA_GPU_FLAGS = f"{COMMAND_BUFFERS} {CUBLAS_GEMMS}"


def configure_xla(environ: MutableMapping[str, str] = os.environ) -> None:
    """Adds each of ``COMMAND_BUFFERS`` and ``CUBLAS_GEMMS`` to ``XLA_FLAGS`` unless ``XLA_FLAGS``
    already sets that option. Takes effect only before JAX starts its backends (the first
    computation): the CLIs call it first thing."""
    flags = environ.get("XLA_FLAGS", "")
    for option, value in (("xla_gpu_enable_command_buffer", COMMAND_BUFFERS),
                          ("xla_gpu_enable_triton_gemm", CUBLAS_GEMMS)):
        if option not in flags:
            flags = f"{flags} {value}".strip()
    environ["XLA_FLAGS"] = flags


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """Joins a multi-host job (``jax.distributed.initialize``); with no arguments the cluster
    (SLURM, Open MPI, Kubernetes, TPU pods) is detected from the environment."""
    jax.distributed.initialize(coordinator_address, num_processes, process_id)


def data_mesh(devices: int = 0, local: bool = False) -> Mesh:
    """The first ``devices`` devices (0: all) of the job, or of this host with ``local``."""
    available = jax.local_devices() if local else jax.devices()
    if devices < 0 or devices > len(available):
        raise ValueError(f"devices={devices}, but {len(available)} are available")
    return Mesh(np.array(available[:devices or len(available)]), (AXIS,))


def rows(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh."""
    return NamedSharding(mesh, PartitionSpec(AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: Mapping[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """The same global numpy batch on every host -> global arrays; each device gets its rows.

    One host: a single ``device_put`` of the whole dict (no per-device Python in the train loop).
    Several: each host materialises only its own devices' rows."""
    if jax.process_count() == 1:
        return jax.device_put(dict(batch), sharding)
    return {name: jax.make_array_from_callback(value.shape, sharding,
                                               lambda index, value=value: value[index])
            for name, value in batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """The whole array as numpy on every host (gathered across hosts if it is split over them)."""
    if x.is_fully_addressable:
        return np.asarray(x)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def is_leader() -> bool:
    """The host that writes logs and metrics (Orbax coordinates checkpoint writes itself)."""
    return jax.process_index() == 0


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))
