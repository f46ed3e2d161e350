"""Device mesh and shardings: one ``data`` axis over every device of every process."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxgen.errors import UserError

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


FSDP_MIN_SIZE = 2**14  # smaller arrays stay replicated: gathering them costs more than it saves
PARAM_SHARDINGS = ("replicated", "fsdp")


def state_shardings(abstract_state, mesh: Mesh, mode: str):
    """Shardings for every leaf of a train state.

    ``replicated``: every device holds everything. ``fsdp``: each array of at
    least ``FSDP_MIN_SIZE`` elements is split over the data axis along its
    largest dimension divisible by the number of devices (parameters, EMA and
    optimizer moments alike); ``jax.jit`` inserts the gathers.
    """
    if mode not in PARAM_SHARDINGS:
        raise UserError(
            f"config key train.param_sharding={mode!r}: expected one of {PARAM_SHARDINGS}"
        )
    if mode == "replicated":
        return jax.tree.map(lambda _: replicated(mesh), abstract_state)

    def leaf_sharding(x):
        if x.ndim == 0 or x.size < FSDP_MIN_SIZE:
            return replicated(mesh)
        dims = [d for d in np.argsort(x.shape)[::-1] if x.shape[d] % mesh.size == 0]
        if not dims:
            return replicated(mesh)
        spec = [None] * x.ndim
        spec[dims[0]] = DATA_AXIS
        return NamedSharding(mesh, PartitionSpec(*spec))

    return jax.tree.map(leaf_sharding, abstract_state)


def global_batch(local_batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows -> global arrays sharded over the data axis."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), local_batch)


def round_up(count: int, multiple: int) -> int:
    """The smallest multiple of ``multiple`` that is at least ``count``."""
    return -(-count // multiple) * multiple


def _put(host_tree, sharding: NamedSharding, rows: int | None = None):
    """Host arrays (the same on every process) -> global arrays of ``sharding``; with ``rows``
    greater than a leaf's leading axis its last row is repeated up to ``rows``."""

    def put(x):
        x = np.asarray(x)
        if rows is not None and rows > len(x):
            x = np.concatenate([x, np.repeat(x[-1:], rows - len(x), axis=0)])
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, host_tree)


def shard_rows(host_tree, mesh: Mesh, rows: int | None = None):
    """Host arrays (the same on every process) -> global arrays split by rows over the mesh.

    Every leaf has the same leading axis ``N``; with ``rows`` > N the rows are padded by
    repeating the last one, so that ``rows`` (a multiple of the device count) splits evenly.
    Each device receives only its own rows.
    """
    return _put(host_tree, batch_sharded(mesh), rows)


def put_replicated(host_tree, mesh: Mesh):
    """Host arrays (the same on every process) -> global arrays replicated over the mesh."""
    return _put(host_tree, replicated(mesh))


def gather_rows(tree):
    """Global arrays (possibly split over processes) -> full numpy arrays on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def is_main_process() -> bool:
    return jax.process_index() == 0
