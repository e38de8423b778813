"""A Python API for trained models: `vae.load(workdir, checkpoint='best')`.

    import vae
    m = vae.load('runs/default')            # best checkpoint by validation ELBO
    mean, logvar = m.encode(x)              # x: [N, H, W, C] floats in [0, 1]
    images = m.sample(jax.random.key(0), 16, temperature=0.8)   # from the run's prior
    ll = m.log_likelihood(x, num_samples=1000)   # nats per example, [N]

Works on CPU (or any backend) with a checkpoint trained anywhere: the
parameters are restored onto this process's first device.
"""

import functools
import logging
import pathlib

import jax
import jax.numpy as jnp
import numpy as np

from vae import config_lib, specs
from vae.data import datasets as data_lib, input_pipeline
from vae.training import estimates
from vae.families import models
from vae.training import checkpointing, memory
from vae.families import likelihoods, objective_families, objectives
from vae.training import migration, run_dir, run_record

log = logging.getLogger('vae')
SPLITS = ('train', 'val', 'validation', 'test')


def _candidate_steps(ckpt, checkpoint):
  """The steps to try, in order, and whether the step was named explicitly."""
  steps = ckpt.steps()
  if not steps:
    raise checkpointing.CheckpointError(f'no checkpoint in {ckpt.directory}; train first')
  if checkpoint == 'latest':
    return steps[::-1], False
  if checkpoint == 'best':
    best = ckpt.best_step()
    return ([best] if best is not None else []) + [s for s in steps[::-1] if s != best], False
  step = _step_number(checkpoint)
  if step is None:
    raise checkpointing.CheckpointError(
        f'checkpoint {checkpoint!r} is not best, latest or a step number (an integer)')
  if step not in steps:
    raise checkpointing.CheckpointError(f'no checkpoint at step {step} in {ckpt.directory}; '
                                        f'available: {steps}')
  return [step], True


def _step_number(checkpoint):
  """The step a checkpoint argument names, or None: an int (not a bool), an integral numpy
  integer, or a string of digits; 24.7 or '24.7' name no step (int() would truncate)."""
  if isinstance(checkpoint, bool):
    return None
  if isinstance(checkpoint, (int, np.integer)):
    return int(checkpoint)
  if isinstance(checkpoint, str) and checkpoint.strip().isdigit():
    return int(checkpoint)
  return None


ROTATION_RETRIES = 5


def _restore_params(ckpt, checkpoint, sharding):
  """(params, step): a damaged step named explicitly is refused with one line; otherwise
  the next candidate is taken with a warning. A step that disappears while it is read was
  rotated away by a training run that is still saving (not damage): the candidates are
  listed afresh and tried again. Nothing in the workdir is changed."""
  for _ in range(ROTATION_RETRIES):
    candidates, explicit = _candidate_steps(ckpt, checkpoint)
    rotated = False
    for step in candidates:
      try:
        return ckpt.restore_params(step, sharding), step
      except Exception as e:  # pylint: disable=broad-except
        if not (ckpt.directory / str(step)).exists():
          rotated = True  # deleted meanwhile by the trainer's rotation: look again
          break
        detail = f'{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}'
        if explicit:
          raise checkpointing.CheckpointError(
              f'checkpoint {ckpt.directory / str(step)} is damaged ({detail}); choose another '
              f'--checkpoint from {ckpt.steps()}') from None
        log.warning('checkpoint %s is damaged (%s); taking the previous one',
                    ckpt.directory / str(step), detail)
    if not rotated:
      break
  raise checkpointing.CheckpointError(f'every checkpoint in {ckpt.directory} is damaged; '
                                      'retrain or restore the files')


class TrainedModel:
  """A VAE and its parameters, with jitted helpers. All log-likelihoods in nats per example."""

  def __init__(self, model, params, config, step, data_info, prior_state=None):
    self.model, self.params, self.config = model, params, config
    self.step, self.data_info = step, data_info
    self.prior_state = prior_state  # the prior's saved state, where it evaluates with it
    self.workdir = None  # set by `load`
    # Whether `load_split` takes data whose content differs from what the run recorded.
    self.accept_changed_data = bool(config.data.get('accept_changed_data', False))
    self._variables = None
    self._encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
    self._decode = jax.jit(lambda v, z: model.apply(v, z, method=model.decode_mean))
    self._point = jax.jit(lambda v, x: model.apply(v, x, method=model.latent_point))
    self._generate = jax.jit(
        lambda v, k, n, t: model.apply(v, k, n, t, method=model.generate), static_argnums=2)
    self._generate_near = jax.jit(
        lambda v, k, x, n, t: model.apply(v, k, x, n, t, method=model.generate_near),
        static_argnums=3)
    self._prior = jax.jit(lambda v: model.apply(v, method=model.prior_components))
    self._log_prior = jax.jit(lambda v, z: model.apply(v, z, method=model.log_prior))
    self._sample_prior = jax.jit(
        lambda v, k, n: model.apply(v, k, n, method=model.sample_prior), static_argnums=2)

  @property
  def variables(self):
    """What the model is applied with: {'params': ...} and what the prior needs at
    evaluation (`priors.Prior.eval_variables`; for a prior that needs the training set,
    computed once from `load_split('train')`, the images training used)."""
    if self._variables is None:
      variables = {'params': self.params}
      prior = self.model.prior
      train = jnp.asarray(self.load_split('train')[0]) if prior.needs_training_set else None
      variables.update(jax.jit(lambda p, s, d: prior.eval_variables(
          self.model, p, s, d, 0 if d is None else d.shape[0]))(self.params, self.prior_state,
                                                               train))
      self._variables = variables
    return self._variables

  @property
  def latent_dim(self):
    """Dimensions of z as `decode` takes it: latent_dim per stochastic layer ([z1, z2])."""
    return self.model.total_latent_dim

  @property
  def image_shape(self):
    return tuple(self.model.image_shape)

  def images(self, x):
    """The model's input from `x` [N, H, W, C]: floats in [0, 1] as they are, or uint8
    pixels, which get the run's fixed evaluation binarization (the draw of the test
    split, as `load_split` then `to_float` give) or k / 255 for continuous data.

    Raises:
      ValueError: a shape other than [N, H, W, C] of this model, a dtype other than uint8
        or floating point, non-finite values, or floats outside [0, 1] (pixels in 0..255
        given as floats: pass them as uint8, or divide by 255).
    """
    x = np.asarray(x) if not isinstance(x, jax.Array) else x
    if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
      raise ValueError(f'images have shape {tuple(x.shape)}; this model takes [N, '
                       f'{", ".join(map(str, self.image_shape))}] (N images of its data)')
    if x.dtype != np.uint8 and not jnp.issubdtype(x.dtype, jnp.floating):
      raise ValueError(f'images have dtype {x.dtype}; pass uint8 pixels (0..255) or floats in '
                       '[0, 1]')
    if x.dtype == np.uint8:
      if self.config.data.binarize in ('dynamic', 'static'):
        x = input_pipeline.binarize_fixed(np.asarray(x), [self.config.data.binarize_seed, 2])
      return self.to_float(x)
    x = jnp.asarray(x, jnp.float32)
    if not bool(jnp.all(jnp.isfinite(x))):
      raise ValueError('images contain NaN or infinite values')
    low, high = float(jnp.min(x)) + 0.0, float(jnp.max(x)) + 0.0  # + 0.0: no '-0' shown
    if low < 0.0 or high > 1.0:
      raise ValueError(f'float images span [{low:g}, {high:g}]; this model takes floats in '
                       '[0, 1] (pixels 0..255: pass them as uint8, or divide by 255)')
    return x

  def _latents(self, z):
    z = jnp.asarray(z, jnp.float32)
    if z.ndim < 1 or z.shape[-1] != self.latent_dim:
      raise ValueError(f'latents have shape {tuple(z.shape)}; this model takes [..., '
                       f'{self.latent_dim}]')
    return z

  def encode(self, x):
    """x [N, H, W, C] (see `images`) -> (mean [N, D], logvar [N, D]) of the diagonal
    Gaussian the posterior starts from: q(z | x) itself for the diagonal posterior; the
    Gaussian before the flow for model.posterior=iaf; for two stochastic layers [z1, z2]
    (D = 2 latent_dim) along the mean path, q(z2 | x) then q(z1 | x, z2 = its mean)."""
    return self._encode(self.variables, self.images(x))

  def latent_point(self, x):
    """The noise-free posterior latent [N, D] (means pushed through any flow): what
    `reconstruct` decodes."""
    return self._point(self.variables, self.images(x))

  def prior_components(self):
    """(log_weights [K], means [K, d], logvars [K, d]) of the prior on the top layer, for a
    prior that is a mixture of diagonal Gaussians (K = 1 at N(0, I) for the standard
    prior; others have `log_prior` and `sample_prior` only)."""
    return self._prior(self.variables)

  def log_prior(self, z):
    """log p(z) of the top layer's prior in nats: z [..., d] -> [...] (d = latent_dim per
    layer; with two layers the prior is on z2)."""
    z = jnp.asarray(z, jnp.float32)
    if z.ndim < 1 or z.shape[-1] != self.model.latent_dim:
      raise ValueError(f'latents have shape {tuple(z.shape)}; the prior takes [..., '
                       f'{self.model.latent_dim}]')
    return self._log_prior(self.variables, z)

  def sample_prior(self, key, n):
    """n draws [n, d] from the top layer's prior."""
    self._check_draws(int(n), 'sample_prior', per_draw=self.model.latent_dim)
    return self._sample_prior(self.variables, key, int(n))

  def _check_draws(self, n, what, per_draw=None):
    """Refuses (ValueError), before any work, draws past int32 or the device's memory."""
    if n > config_lib.INT32_MAX:
      raise ValueError(f'{what}: n={n:,} is more than {config_lib.INT32_MAX:,} draws at once; '
                       'draw in batches')
    memory.check_draws(n, per_draw or memory.floats_per_example(self.config.model,
                                                                self.image_shape),
                       f'{what}: n={n:,} draws', 'draw in batches')

  def decode(self, z):
    """z [..., D] -> mean images [..., H, W, C] in [0, 1]."""
    return self._decode(self.variables, self._latents(z))

  def sample(self, key, n, temperature=1.0):
    """n >= 1 images decoded from the run's prior (`VAE.generate`): z ~ N(0, temperature^2
    I) for the standard prior; for mog / vamp a component, then its Gaussian with the noise
    scaled by temperature >= 0; with two layers z2 so, then z1 ~ p(z1 | z2) likewise."""
    if int(n) < 1 or not temperature >= 0:
      raise ValueError(f'sample needs n >= 1 and temperature >= 0, got n={n}, '
                       f'temperature={temperature}')
    self._check_draws(int(n), 'sample')
    return self._generate(self.variables, key, int(n), jnp.float32(temperature))

  def reconstruct(self, x):
    """Mean images decoded from the noise-free posterior latents of x (`latent_point`)."""
    return self._decode(self.variables, self.latent_point(x))

  def sample_near(self, key, x, n, temperature=1.0):
    """Generation near given images, for a prior with a component centred at each image
    (one with `sample_near`): for each image of x [M, H, W, C], n images
    decoded from its component, z_top ~ N(mu(x), temperature^2 sigma^2 I) (with two layers
    z1 ~ p(z1 | z2) then, its noise scaled too): [n, M, H, W, C] mean images, variations on
    each given image."""
    if not hasattr(self.model.prior, 'sample_near'):
      raise ValueError(f'sample_near draws from a prior with a component at each image; this '
                       f'model has model.prior={self.config.model.prior}')
    if int(n) < 1 or not temperature >= 0:
      raise ValueError(f'sample_near needs n >= 1 and temperature >= 0, got n={n}, '
                       f'temperature={temperature}')
    self._check_draws(int(n) * len(x), 'sample_near')
    return self._generate_near(self.variables, key, self.images(x), int(n),
                               jnp.float32(temperature))

  @functools.partial(jax.jit, static_argnums=0)
  def _elbo(self, variables, x, key):
    return objectives.per_example_objective(self.model, variables, x, key)[1]['elbo']

  def elbo(self, x, key=None):
    """Single-sample ELBO with the analytic KL, per example: [N]."""
    key = jax.random.key(0) if key is None else key
    return self._elbo(self.variables, self.images(x), key)

  def log_likelihood(self, x, num_samples=1000, key=None, chunk_size=100):
    """Importance-weighted log p(x) with `num_samples` >= 1 samples from q(z | x): [N]."""
    if int(num_samples) < 1 or int(chunk_size) < 1:
      raise ValueError(f'log_likelihood needs num_samples >= 1 and chunk_size >= 1, got '
                       f'{num_samples} and {chunk_size}')
    key = jax.random.key(0) if key is None else key
    return self._iw(self.variables, self.images(x), key, int(num_samples),
                    min(int(chunk_size), int(num_samples)))[-1]

  @functools.partial(jax.jit, static_argnums=(0, 4, 5))
  def _iw(self, variables, x, key, num_samples, chunk_size):
    return estimates.iw_log_likelihood(self.model, variables, x, key, num_samples, chunk_size)

  def load_split(self, split='test'):
    """The run's images of `split` ('train', 'val' or 'test') as uint8, with the fixed
    evaluation binarization applied, and their labels: exactly what training evaluated.
    Every method taking images accepts these directly."""
    if split not in SPLITS:
      raise ValueError(f'no split {split!r}; choose one of {SPLITS}')
    ds = data_lib.load(self.config.data)
    line = data_lib.check_same_data(self.data_info, ds.info, str(self.workdir or 'the run'),
                                    self.accept_changed_data)
    if line:
      log.warning('%s', line)
    train, val, test = input_pipeline.prepare_host_splits(ds, self.config.data)
    images = {'train': train, 'val': val, 'validation': val, 'test': test}[split]
    labels = {'train': ds.train.labels, 'val': ds.validation.labels,
              'validation': ds.validation.labels, 'test': ds.test.labels}[split]
    return images, labels

  def to_float(self, images_uint8, key=None):
    """uint8 images that already carry the evaluation binarization (`load_split`'s) ->
    floats as evaluation sees them (k / 255; dequantized with `key` where the run was)."""
    _, mode = input_pipeline.conversion_modes(self.config.data)
    key = jax.random.key(0) if key is None else key
    return input_pipeline.to_float(jnp.asarray(images_uint8), mode, key)


def check_families(config, workdir):
  """ConfigError naming the family a saved run needs that is not registered, and the module
  it was trained with (`--import`) when run.json records one."""
  try:
    models.check_config(config.model)
    likelihoods.check_config(config.model, config.data)
    objective_families.check_config(config.objective)
  except config_lib.ConfigError as e:
    missing = [m for m in run_record.recorded_imports(workdir) if m not in config_lib.PLUGINS]
    if not missing:
      raise
    names = ' '.join(f'--import {m}' for m in missing)
    raise config_lib.ConfigError(
        f'{str(e).split(";")[0]}: {workdir} was trained with {names}; name it again '
        f'({names}, or vae.load(workdir, imports={missing!r}))') from None


def load(workdir, checkpoint='best', accept_changed_data=False, imports=()) -> TrainedModel:
  """Loads a trained model from a workdir.

  Args:
    workdir: a training workdir (with config.json, data.json, checkpoints/).
    checkpoint: 'best' (by validation ELBO), 'latest' or a step number.
    imports: modules to import first (`config_lib.import_plugins`): those that register the
      run's families when they are not the library's (run.json names the modules it was
      trained with; nothing is imported because a workdir names it).
    accept_changed_data: let `load_split` read data whose content differs from what the
      run recorded in data.json (else a DataError naming both).

  Returns:
    A TrainedModel (EMA parameters when the run kept an EMA). Only the
    parameters are read from the checkpoint, never the optimizer state.
  """
  workdir = pathlib.Path(workdir)
  if not (workdir / 'config.json').exists():
    raise checkpointing.CheckpointError(f'{workdir} has no config.json: not a training workdir')
  migration.check_current(workdir)
  config_lib.import_plugins(list(imports))
  config = specs.freeze(config_lib.with_saved_values(run_dir.read_json(workdir / 'config.json')))
  check_families(config, workdir)
  if not (workdir / 'data.json').exists():
    raise checkpointing.CheckpointError(f'{workdir} has no data.json: not a training workdir')
  data_info = run_dir.read_json(workdir / 'data.json')
  image_shape = tuple(data_info['shape'])
  model = models.build_model(config.model, image_shape)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  reader = checkpointing.CheckpointReader(workdir / 'checkpoints')
  params, step = _restore_params(reader, checkpoint, device)
  prior_state = reader.restore_prior_state(step) if model.prior.evaluates_with_state else None
  out = TrainedModel(model, params, config, step, data_info, prior_state)
  out.workdir = workdir
  out.accept_changed_data = out.accept_changed_data or accept_changed_data
  return out

