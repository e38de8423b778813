"""Device-side data: binarization protocols, epoch permutations, batch gathering, eval padding.

The training set is put on the devices once as uint8 [N, H, W, C], split
over the mesh's data axis (`sharding.put_examples`); each step gathers its
batch on the device from a permutation of `fold_in(data_key, epoch)` and
converts it to floats there (`to_float`), so no per-step host-to-device copy
happens. Evaluation sets are binarized once, with a fixed
seed, and padded to whole batches with a validity mask so every example counts
exactly once.

Protocols (`config.data.binarize`):
  dynamic  a fresh Bernoulli draw of the pixel intensities at every step, from
           the step's key (training); evaluation uses one fixed draw. The draw
           compares 16 random bits per pixel with the intensity
           (`data.binarize_bits=16`: P(1) = round(65536 k / 255) / 65536, within
           2^-17 of k / 255, exact at 0 and 255; half the threefry work) or a
           float32 uniform (32, the stream of runs saved before the field).
  static   one fixed draw (seed `data.binarize_seed`) for training, another
           fixed draw for each evaluation split.
  none     intensities k / 255; with `data.dequantize`, (k + u) / 256 with
           u ~ U[0, 1) drawn per step (evaluation: from a fixed key).
"""

from concurrent import futures

import numpy as np
import jax
import jax.numpy as jnp

# How the device converts stored uint8 pixels to floats.
BERNOULLI, SCALE, DEQUANTIZE = 'bernoulli', 'scale', 'dequantize'
BERNOULLI16 = 'bernoulli16'  # the dynamic draw from 16 random bits per pixel


def binarize_fixed(images, seed):
  """One fixed Bernoulli draw of uint8 intensities, returned as uint8 in {0, 255}."""
  rng = np.random.default_rng(seed)
  u = rng.random(images.shape, dtype=np.float32)
  return np.where(u < images.astype(np.float32) / 255.0, 255, 0).astype(np.uint8)


def conversion_modes(data_config):
  """(train mode, eval mode) for `to_float`, given the protocol."""
  if data_config.binarize == 'dynamic':
    return (BERNOULLI16 if data_config.binarize_bits == 16 else BERNOULLI), SCALE
  if data_config.binarize == 'static':
    return SCALE, SCALE
  return (DEQUANTIZE, DEQUANTIZE) if data_config.dequantize else (SCALE, SCALE)


def prepare_host_splits(dataset, data_config):
  """Applies the fixed draws on the host: returns (train, validation, test) uint8 images.

  Evaluation splits are binarized once with seeds derived from
  `binarize_seed`, so test numbers are deterministic; a static protocol also
  fixes the training draw.
  """
  seed = data_config.binarize_seed
  train = dataset.train.images
  val, test = dataset.validation.images, dataset.test.images
  if data_config.binarize in ('dynamic', 'static'):
    val = binarize_fixed(val, [seed, 1])
    test = binarize_fixed(test, [seed, 2])
  if data_config.binarize == 'static':
    train = binarize_fixed(train, [seed, 0])
  return train, val, test


def to_float(images_uint8, mode, key):
  """uint8 [..., H, W, C] -> float32 in [0, 1] under the conversion `mode`."""
  x = images_uint8.astype(jnp.float32)
  if mode == BERNOULLI:
    return jax.random.bernoulli(key, x / 255.0).astype(jnp.float32)
  if mode == BERNOULLI16:
    return (random_uint16_like(key, images_uint8).astype(jnp.int32)
            < (images_uint8.astype(jnp.int32) * 65536 + 127) // 255).astype(jnp.float32)
  if mode == DEQUANTIZE:
    return (x + jax.random.uniform(key, x.shape)) / 256.0
  return x / 255.0


def random_uint16_like(key, images):
  """Uniform uint16 values of the shape of `images` [..., H, W, C], two from each 32-bit
  threefry word (jax.random.bits draws a whole word per element at any width)."""
  lead, n = images.shape[:-3], int(np.prod(images.shape[-3:]))
  words = jax.random.bits(key, lead + ((n + 1) // 2,), jnp.uint32)
  halves = jax.lax.bitcast_convert_type(words, jnp.uint16)  # [..., (n + 1) // 2, 2]
  return halves.reshape(lead + (-1,))[..., :n].reshape(images.shape)


def epoch_permutation(data_key, epoch, num_examples):
  """The order of epoch `epoch`: a permutation from fold_in(data_key, epoch)."""
  return jax.random.permutation(jax.random.fold_in(data_key, epoch), num_examples)


def gather_batch(images, perm, index_in_epoch, batch_size):
  """Batch `index_in_epoch` of the epoch ordered by `perm`: [B, H, W, C] uint8."""
  idx = jax.lax.dynamic_slice_in_dim(perm, index_in_epoch * batch_size, batch_size)
  # Rows of the flattened images: XLA's CPU backend gathers whole rows ~4x faster than
  # [1, H, W, C] slices; the same bytes.
  rows = jnp.take(images.reshape(images.shape[0], -1), idx, axis=0)
  return rows.reshape((batch_size,) + images.shape[1:])


def gather_rows(images, ids):
  """images[ids] [len(ids), H, W, C], gathered as rows of the flattened images."""
  rows = jnp.take(images.reshape(images.shape[0], -1), ids, axis=0)
  return rows.reshape(ids.shape + images.shape[1:])


def pad_to_batches(images, batch_size):
  """Pads [N, ...] to whole batches: returns ([nb, B, ...], mask [nb, B]) on the host."""
  n = len(images)
  nb = max(1, -(-n // batch_size))
  pad = nb * batch_size - n
  padded = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
  mask = np.concatenate([np.ones(n, bool), np.zeros(pad, bool)])
  return (padded.reshape((nb, batch_size) + images.shape[1:]),
          mask.reshape(nb, batch_size))


def host_epoch_permutation(seed, epoch, num_examples):
  """Host-side order for datasets streamed from host memory (too large for the device)."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


class HostFeeder:
  """Streams batches of a dataset too large for the device, one chunk ahead.

  Batch order is a per-epoch permutation seeded by (seed, epoch)
  (`host_epoch_permutation`), so a resumed run sees the same batches. The next
  chunk's array is assembled in a background thread while the device trains
  on the current one.

  Args:
    images: uint8 [N, H, W, C] on the host.
    batch_size: examples per step.
    seed: the run's seed (its order).
    schedule: the loop's `Schedule` (steps_per_epoch, next_boundary,
      total_steps, max_chunk).
  """

  def __init__(self, images, batch_size, seed, schedule):
    self.images, self.schedule = images, schedule
    self.batch, self.seed = batch_size, seed
    self.pool = futures.ThreadPoolExecutor(1)
    self.pending = None

  def _assemble(self, start, end):
    spe, out, perms = self.schedule.steps_per_epoch, [], {}
    for step in range(start, end):
      epoch = step // spe
      if epoch not in perms:
        perms[epoch] = host_epoch_permutation(self.seed, epoch, len(self.images))
      j = step % spe
      out.append(self.images[np.sort(perms[epoch][j * self.batch:(j + 1) * self.batch])])
    # Pad to the longest chunk so every chunk has one shape (one compilation).
    out += [np.zeros_like(out[0])] * (self.schedule.max_chunk - len(out))
    return np.stack(out)

  def batches(self, start, end):
    """The batches of steps [start, end): uint8 [max_chunk, B, H, W, C] (zero-padded)."""
    if self.pending is not None and self.pending[0] == (start, end):
      result = self.pending[1].result()
    else:
      result = self._assemble(start, end)
    nxt = self.schedule.next_boundary(end)
    if end < self.schedule.total_steps:
      self.pending = ((end, nxt), self.pool.submit(self._assemble, end, nxt))
    return result
