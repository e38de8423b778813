"""Config helpers: the shared base config, `parse_arg`, `smoke`, and validation.

Every experiment file in configs/ starts from `base_config()` and changes what
it needs, so all configs share one schema: an unknown key is an error
(configs are locked), and `validate` rejects impossible values with one line
naming the field, before any data is read or anything compiles.
"""

import ml_collections


class ConfigError(ValueError):
  """An invalid config value; the message names the field and the fix."""


def parse_arg(arg, **defaults):
  """Parses 'a=1,b=x,flag' into a ConfigDict typed like `defaults`.

  A bare word sets a bool default to True. Unknown names are errors.
  """
  out = ml_collections.ConfigDict(defaults)
  if not arg:
    return out
  for item in arg.split(','):
    item = item.strip()
    if not item:
      continue
    key, _, value = item.partition('=')
    if key not in defaults:
      raise ConfigError(f'unknown config argument {key!r}; known: {sorted(defaults)}')
    default = defaults[key]
    if not _:
      if not isinstance(default, bool):
        raise ConfigError(f'config argument {key!r} needs a value ({key}=...)')
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ('1', 'true', 'yes')
    elif isinstance(default, int):
      out[key] = int(value)
    elif isinstance(default, float):
      out[key] = float(value)
    else:
      out[key] = value
  return out


def base_config():
  """The full schema with the default model's values (see configs/default.py)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = d = ml_collections.ConfigDict()
  d.name = 'fashion_mnist'
  d.source = 'auto'          # auto | idx | tfds | npz | synthetic
  d.path = ''                # IDX directory or .npz file
  d.tfds_data_dir = ''
  d.download = True
  d.val_size = 10000
  d.split_seed = 0           # fixed permutation that carves validation from train
  d.binarize = 'dynamic'     # none | dynamic | static
  d.binarize_seed = 0        # static training draw and evaluation draws
  d.dequantize = False       # uniform dequantization for continuous pixels
  d.residency = 'auto'       # auto | device | host
  d.max_device_bytes = 2 ** 31
  d.seed = 0                 # synthetic data
  d.synthetic_train_size = 4096
  d.synthetic_test_size = 1024
  d.synthetic_shape = (28, 28, 1)

  c.model = m = ml_collections.ConfigDict()
  m.type = 'vae'             # vae | ae (deterministic autoencoder, same modules)
  m.arch = 'mlp'             # mlp | conv
  m.latent_dim = 20
  m.hidden = (512, 256)      # MLP hidden widths, encoder order; decoder reversed
  m.activation = 'relu'
  m.gated = False
  m.conv_channels = (32, 64)
  m.conv_dense = 256
  m.conv_upsample = 'subpixel'  # subpixel | transpose (decoder's stride-2 layers)
  m.likelihood = 'bernoulli'  # bernoulli | gaussian | continuous_bernoulli | discretized_logistic
  m.gaussian_scale = 'fixed'  # fixed | global | pixel
  m.gaussian_fixed_scale = 1.0
  m.clamp_logvar = False
  m.logvar_min = -6.0
  m.logvar_max = 2.0
  m.compute_dtype = 'float32'  # float32 | bfloat16 (parameters stay float32)
  m.init_std = 0.0           # > 0: MLP weights drawn from N(0, init_std^2); 0: LeCun normal

  c.objective = o = ml_collections.ConfigDict()
  o.beta = 1.0
  o.warmup_epochs = 0.0      # KL weight ramps 0 -> beta over this many epochs
  o.free_bits = 0.0          # nats per latent dimension
  o.num_samples = 1          # k > 1: k importance samples per example
  o.estimator = 'iwae'       # iwae (log-mean-exp of k weights) | elbo (k-sample average ELBO)

  c.optim = p = ml_collections.ConfigDict()
  p.name = 'adam'            # adam | adamw | adagrad | sgd
  p.lr = 1e-3
  p.schedule = 'constant'    # constant | cosine | warmup_cosine | iwae_staircase
  p.warmup_epochs = 0.0
  p.b1 = 0.9
  p.b2 = 0.999
  p.eps = 1e-8
  p.momentum = 0.9           # sgd
  p.weight_decay = 0.0
  p.grad_clip = 0.0          # global-norm clip; 0 = off
  p.ema_decay = 0.0          # 0 = no EMA of parameters
  p.iwae_stages = 8          # iwae_staircase: stage i lasts 3^i epochs at lr * 10^(-i/7)

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 128
  t.num_epochs = 30.0
  t.log_every_steps = 100
  t.loop = 'auto'            # device (one compiled while loop per chunk) | host | auto (host for conv)
  t.eval_every_epochs = 5.0
  t.checkpoint_every_epochs = 5.0
  t.keep_checkpoints = 3
  t.early_stopping_epochs = 0.0  # stop when val ELBO has not improved for this long; 0 = off
  t.eval_batch_size = 1000
  t.num_image_samples = 64
  t.eval_iw_samples = 0      # >0: also estimate validation NLL with k samples at eval
  t.collapse_warn_fraction = 0.1  # warn when fewer than this share of units is active
  t.active_unit_threshold = 0.01
  return c


def with_saved_values(saved):
  """The current schema with a saved config.json's values: fields added since the run was
  saved keep their defaults (which reproduce the older behaviour); unknown saved fields
  are dropped."""
  c = base_config()

  def merge(node, values):
    for key, value in values.items():
      if key not in node:
        continue
      if isinstance(node[key], ml_collections.ConfigDict) and isinstance(value, dict):
        merge(node[key], value)
      else:
        node[key] = tuple(value) if isinstance(value, list) else value

  merge(c, saved)
  return c


def smoke(c):
  """Shrinks any config to a seconds-long run on synthetic data."""
  c.data.name = 'synthetic'
  c.data.source = 'synthetic'
  c.data.path = ''
  c.data.val_size = 256
  c.data.synthetic_train_size = 1024
  c.data.synthetic_test_size = 256
  if tuple(c.data.synthetic_shape) == (28, 28, 1) and c.model.likelihood == 'discretized_logistic':
    c.data.synthetic_shape = (32, 32, 3)
  c.train.batch_size = 64
  c.train.num_epochs = 2.0
  c.train.log_every_steps = 4
  c.train.eval_every_epochs = 1.0
  c.train.checkpoint_every_epochs = 1.0
  c.train.eval_batch_size = 128
  c.train.num_image_samples = 16
  c.model.hidden = tuple(min(h, 64) for h in c.model.hidden)
  c.model.conv_channels = tuple(min(ch, 16) for ch in c.model.conv_channels)
  c.model.conv_dense = min(c.model.conv_dense, 64)
  if c.optim.schedule == 'iwae_staircase':
    c.optim.iwae_stages = 2
  return c


def _check(cond, msg):
  if not cond:
    raise ConfigError(msg)


def validate(c):
  """Raises ConfigError naming the field for any impossible value."""
  from vae import data as data_lib  # pylint: disable=g-import-not-at-top
  from vae import likelihoods, models  # pylint: disable=g-import-not-at-top
  _check(c.data.source in data_lib.SOURCES,
         f'data.source={c.data.source!r} is unknown; choose one of {data_lib.SOURCES}')
  _check(c.data.binarize in data_lib.BINARIZE,
         f'data.binarize={c.data.binarize!r} is unknown; choose one of {data_lib.BINARIZE}')
  _check(c.data.residency in ('auto', 'device', 'host'),
         f'data.residency={c.data.residency!r} is unknown; choose auto, device or host')
  _check(c.data.val_size >= 0, f'data.val_size={c.data.val_size} must be >= 0')
  _check(c.model.type in ('vae', 'ae'), f'model.type={c.model.type!r}; choose vae or ae')
  _check(c.model.arch in models.ARCHS, f'model.arch={c.model.arch!r} is unknown; choose one '
         f'of {models.ARCHS}')
  _check(c.model.latent_dim >= 1, f'model.latent_dim={c.model.latent_dim} must be >= 1')
  _check(c.model.activation in models.ACTIVATIONS,
         f'model.activation={c.model.activation!r} is unknown; choose one of '
         f'{tuple(models.ACTIVATIONS)}')
  _check(all(h >= 1 for h in c.model.hidden), f'model.hidden={c.model.hidden} needs widths >= 1')
  _check(len(c.model.conv_channels) >= 1 and all(ch >= 1 for ch in c.model.conv_channels),
         f'model.conv_channels={c.model.conv_channels} needs at least one width >= 1')
  _check(c.model.conv_upsample in models.UPSAMPLE,
         f'model.conv_upsample={c.model.conv_upsample!r}; choose one of {models.UPSAMPLE}')
  _check(c.model.likelihood in likelihoods.LIKELIHOODS,
         f'model.likelihood={c.model.likelihood!r} is unknown; choose one of '
         f'{likelihoods.LIKELIHOODS}')
  _check(c.model.gaussian_scale in likelihoods.GAUSSIAN_SCALES,
         f'model.gaussian_scale={c.model.gaussian_scale!r}; choose one of '
         f'{likelihoods.GAUSSIAN_SCALES}')
  _check(c.model.gaussian_fixed_scale > 0, 'model.gaussian_fixed_scale must be > 0')
  _check(c.model.logvar_min < c.model.logvar_max, 'model.logvar_min must be < model.logvar_max')
  _check(c.model.compute_dtype in ('float32', 'bfloat16'),
         f'model.compute_dtype={c.model.compute_dtype!r}; choose float32 or bfloat16')
  _check(c.objective.beta >= 0, f'objective.beta={c.objective.beta} must be >= 0')
  _check(c.objective.warmup_epochs >= 0, 'objective.warmup_epochs must be >= 0')
  _check(c.objective.free_bits >= 0, 'objective.free_bits must be >= 0')
  _check(c.objective.num_samples >= 1, 'objective.num_samples must be >= 1')
  _check(c.objective.estimator in ('iwae', 'elbo'),
         f'objective.estimator={c.objective.estimator!r}; choose iwae or elbo')
  _check(c.model.init_std >= 0, 'model.init_std must be >= 0')
  _check(not (c.objective.num_samples > 1 and c.objective.free_bits > 0),
         'objective.free_bits applies to the single-sample ELBO only; set '
         'objective.num_samples=1 or objective.free_bits=0')
  _check(c.optim.name in ('adam', 'adamw', 'adagrad', 'sgd'),
         f'optim.name={c.optim.name!r} is unknown; choose adam, adamw, adagrad or sgd')
  _check(c.optim.schedule in ('constant', 'cosine', 'warmup_cosine', 'iwae_staircase'),
         f'optim.schedule={c.optim.schedule!r} is unknown; choose constant, cosine, '
         'warmup_cosine or iwae_staircase')
  _check(c.optim.lr > 0, f'optim.lr={c.optim.lr} must be > 0')
  _check(0 <= c.optim.ema_decay < 1, 'optim.ema_decay must be in [0, 1)')
  _check(c.optim.grad_clip >= 0, 'optim.grad_clip must be >= 0')
  _check(c.train.batch_size >= 1, f'train.batch_size={c.train.batch_size} must be >= 1')
  _check(c.train.eval_batch_size >= 1, 'train.eval_batch_size must be >= 1')
  _check(c.train.num_epochs > 0, f'train.num_epochs={c.train.num_epochs} must be > 0')
  _check(c.train.log_every_steps >= 1, 'train.log_every_steps must be >= 1')
  _check(c.train.loop in ('auto', 'device', 'host'),
         f'train.loop={c.train.loop!r}; choose auto, device or host')
  _check(c.train.eval_every_epochs > 0, 'train.eval_every_epochs must be > 0')
  _check(c.train.checkpoint_every_epochs > 0, 'train.checkpoint_every_epochs must be > 0')
  _check(c.train.keep_checkpoints >= 1, 'train.keep_checkpoints must be >= 1')
  _check(c.train.early_stopping_epochs >= 0, 'train.early_stopping_epochs must be >= 0')
  _check(c.train.num_image_samples >= 1, 'train.num_image_samples must be >= 1')
  if c.model.arch == 'conv':
    shape = (tuple(c.data.synthetic_shape) if c.data.source == 'synthetic'
             or c.data.name == 'synthetic' else None)
    if shape is not None:
      factor = 2 ** len(c.model.conv_channels)
      _check(shape[0] % factor == 0 and shape[1] % factor == 0,
             f'model.arch=conv with {len(c.model.conv_channels)} stride-2 layers needs H and W '
             f'divisible by {factor}, got {shape[0]}x{shape[1]}; change model.conv_channels')


def validate_for_data(c, image_shape, num_train):
  """Checks that need the data's shape and size (still before any compilation)."""
  _check(c.train.batch_size <= num_train,
         f'train.batch_size={c.train.batch_size} exceeds the {num_train} training examples; '
         'lower train.batch_size')
  if c.model.arch == 'conv':
    factor = 2 ** len(c.model.conv_channels)
    _check(image_shape[0] % factor == 0 and image_shape[1] % factor == 0,
           f'model.arch=conv with {len(c.model.conv_channels)} stride-2 layers needs H and W '
           f'divisible by {factor}, got {image_shape[0]}x{image_shape[1]}; change '
           'model.conv_channels')
  if c.model.likelihood == 'discretized_logistic':
    _check(c.data.binarize == 'none' and not c.data.dequantize,
           'model.likelihood=discretized_logistic scores 8-bit pixel values; set '
           'data.binarize=none and data.dequantize=False')
