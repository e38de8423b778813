"""Device mesh and array placement: one code path for one CPU, many GPUs or a TPU pod.

The mesh has a `data` axis over all devices (of all processes). Parameters
and optimizer state are replicated; batches are split over `data`. Arrays are
built with `jax.make_array_from_callback` from host data that every process
holds in full, so the same call works in one process and in many.
"""

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def replicated(mesh):
  return NamedSharding(mesh, P())


def batch_sharded(mesh, batch_axis=0):
  """Shards axis `batch_axis` over 'data', replicates the rest."""
  return NamedSharding(mesh, P(*([None] * batch_axis + ['data'])))


def put(host_array, sharding):
  """Places a host array, held in full by every process, with `sharding`."""
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, sharding, lambda idx: host_array[idx])


def data_axis_size(mesh):
  return mesh.shape['data']
