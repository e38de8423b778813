"""Device mesh and array placement: one code path for one CPU, many GPUs or a TPU pod.

The mesh has a `data` axis over all devices (of all processes). Parameters
and optimizer state are replicated; batches are split over `data`. Arrays are
built with `jax.make_array_from_callback` from host data that every process
holds in full, so the same call works in one process and in many.
"""

import math

import numpy as np
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all global devices)."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), ('data',))


def make_model_mesh(num_models, devices=None) -> Mesh:
  """A 2-D ('model', 'data') mesh for a multi-model program.

  The 'model' axis takes the largest share of the devices that divides both
  the device count and `num_models`, so each device group trains its own
  members; the rest of the devices split each member's batch over 'data'.
  """
  devices = jax.devices() if devices is None else devices
  n_model = math.gcd(num_models, len(devices))
  return Mesh(np.asarray(devices).reshape(n_model, len(devices) // n_model), ('model', 'data'))


def model_sharded(mesh):
  """Leading (model) axis over 'model', the rest replicated."""
  return NamedSharding(mesh, P('model'))


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


def put_examples(host_array, mesh):
  """Places a dataset [N, ...] with its examples split over the 'data' axis.

  N is padded with zeros to a multiple of the axis size; callers index only
  the first N examples (the padding is never drawn).
  """
  n_data = data_axis_size(mesh)
  pad = (-len(host_array)) % n_data
  if pad:
    host_array = np.concatenate(
        [host_array, np.zeros((pad,) + host_array.shape[1:], host_array.dtype)])
  return put(host_array, batch_sharded(mesh))


def streamed_sharding(mesh, batched):
  """A streamed chunk's batches: [T, B, ...] split over 'data' on B, or, for a group,
  [T, M, B, ...] with M over 'model' and B over 'data'."""
  return NamedSharding(mesh, P(None, 'model', 'data') if batched else P(None, 'data'))
