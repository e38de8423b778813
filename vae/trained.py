"""A Python API for trained models: `vae.load(workdir, checkpoint='best')`.

    import vae
    m = vae.load('runs/default')            # best checkpoint by validation ELBO
    mean, logvar = m.encode(x)              # x: [N, H, W, C] floats in [0, 1]
    images = m.sample(jax.random.key(0), 16, temperature=0.8)
    ll = m.log_likelihood(x, num_samples=1000)   # nats per example, [N]

Works on CPU (or any backend) with a checkpoint trained anywhere: the
parameters are restored onto this process's first device.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp

from vae import checkpointing, config_lib, data as data_lib, evaluation, input_pipeline, models
from vae import objectives


def _resolve_step(ckpt, checkpoint):
  steps = ckpt.steps()
  if not steps:
    raise checkpointing.CheckpointError(f'no checkpoint in {ckpt.directory}; train first')
  if checkpoint == 'latest':
    return steps[-1]
  if checkpoint == 'best':
    return ckpt.best_step() or steps[-1]
  try:
    step = int(checkpoint)
  except ValueError:
    raise checkpointing.CheckpointError(
        f'checkpoint {checkpoint!r} is not best, latest or a step number') from None
  if step not in steps:
    raise checkpointing.CheckpointError(f'no checkpoint at step {step} in {ckpt.directory}; '
                                        f'available: {steps}')
  return step


class TrainedModel:
  """A VAE and its parameters, with jitted helpers. All log-likelihoods in nats per example."""

  def __init__(self, model, params, config, step, data_info):
    self.model, self.params, self.config = model, params, config
    self.step, self.data_info = step, data_info
    self._variables = {'params': params}
    self._encode = jax.jit(lambda p, x: model.apply({'params': p}, x, method=model.encode))
    self._decode = jax.jit(lambda p, z: model.apply({'params': p}, z, method=model.decode_mean))

  @property
  def latent_dim(self):
    return self.model.latent_dim

  @property
  def image_shape(self):
    return tuple(self.model.image_shape)

  def encode(self, x):
    """x [N, H, W, C] in [0, 1] -> (mean [N, D], logvar [N, D])."""
    return self._encode(self.params, jnp.asarray(x, jnp.float32))

  def decode(self, z):
    """z [..., D] -> mean images [..., H, W, C] in [0, 1]."""
    return self._decode(self.params, jnp.asarray(z, jnp.float32))

  def sample(self, key, n, temperature=1.0):
    """n images decoded from z ~ N(0, temperature^2 I)."""
    z = temperature * jax.random.normal(key, (n, self.latent_dim))
    return self.decode(z)

  def reconstruct(self, x):
    """Mean images decoded from the posterior means of x."""
    return self.decode(self.encode(x)[0])

  @functools.partial(jax.jit, static_argnums=0)
  def _elbo(self, params, x, key):
    return objectives.per_example_objective(self.model, {'params': params}, x, key)[1]['elbo']

  def elbo(self, x, key=None):
    """Single-sample ELBO with the analytic KL, per example: [N]."""
    key = jax.random.key(0) if key is None else key
    return self._elbo(self.params, jnp.asarray(x, jnp.float32), key)

  def log_likelihood(self, x, num_samples=1000, key=None, chunk_size=100):
    """Importance-weighted log p(x) with `num_samples` samples from q(z | x): [N]."""
    key = jax.random.key(0) if key is None else key
    return self._iw(self.params, jnp.asarray(x, jnp.float32), key, num_samples,
                    min(chunk_size, num_samples))[-1]

  @functools.partial(jax.jit, static_argnums=(0, 4, 5))
  def _iw(self, params, x, key, num_samples, chunk_size):
    return evaluation.iw_log_likelihood(self.model, {'params': params}, x, key, num_samples,
                                        chunk_size)

  def load_split(self, split='test'):
    """The run's evaluation images for `split` as uint8 (fixed binarization applied)
    and labels, exactly as training evaluated them."""
    ds = data_lib.load(self.config.data)
    train, val, test = input_pipeline.prepare_host_splits(ds, self.config.data)
    images = {'train': train, 'val': val, 'validation': val, 'test': test}[split]
    labels = {'train': ds.train.labels, 'val': ds.validation.labels,
              'validation': ds.validation.labels, 'test': ds.test.labels}[split]
    return images, labels

  def to_float(self, images_uint8, key=None):
    """Stored uint8 evaluation images -> floats as evaluation sees them."""
    _, mode = input_pipeline.conversion_modes(self.config.data)
    key = jax.random.key(0) if key is None else key
    return input_pipeline.to_float(jnp.asarray(images_uint8), mode, key)


def load(workdir, checkpoint='best') -> TrainedModel:
  """Loads a trained model from a workdir.

  Args:
    workdir: a training workdir (with config.json, data.json, checkpoints/).
    checkpoint: 'best' (by validation ELBO), 'latest' or a step number.

  Returns:
    A TrainedModel (EMA parameters when the run kept an EMA). Only the
    parameters are read from the checkpoint, never the optimizer state.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / 'config.json').exists():
    raise checkpointing.CheckpointError(f'{workdir} has no config.json: not a training workdir')
  config = config_lib.with_saved_values(json.loads((workdir / 'config.json').read_text()))
  data_info = json.loads((workdir / 'data.json').read_text())
  image_shape = tuple(data_info['shape'])
  model = models.build_model(config.model, image_shape)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  ckpt = checkpointing.Checkpointer(workdir / 'checkpoints')
  try:
    step = _resolve_step(ckpt, checkpoint)
    params = ckpt.restore_params(step, device)
  finally:
    ckpt.close()
  return TrainedModel(model, params, config, step, data_info)

