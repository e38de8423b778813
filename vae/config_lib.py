"""The config schema: `base_config`, `parse_arg`, `smoke`, and the roles of fields.

A leaf module: it imports nothing of ours. Every experiment file in configs/
starts from `base_config()` and changes what it needs, so all configs share one
schema: an unknown key is an error (configs are locked). Each module checks the
fields it owns (`check_config` in data, models, likelihoods, objectives, optim;
`check_train` here) and `vae.validation.validate` composes those checks, so an
impossible value stops a run with one line naming the field before any data is
read or anything compiles.

Field roles, declared once (dotted names):
  RESUMABLE   may differ between a run and its resumption.
  STRUCTURAL  must equal a checkpoint's for its parameters to fit.
  VMAPPABLE   may differ between members trained together in one vmapped group.
"""

import json

import ml_collections

RESUMABLE = ('train.num_epochs',)
STRUCTURAL = tuple('model.' + k for k in (
    'type', 'arch', 'latent_dim', 'hidden', 'activation', 'gated', 'conv_channels',
    'conv_dense', 'conv_upsample', 'likelihood', 'gaussian_scale'))
VMAPPABLE = ('objective.beta', 'objective.free_bits', 'objective.warmup_epochs', 'optim.lr',
             'seed', 'model.latent_dim')


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


def check(cond, msg):
  """Raises ConfigError(msg) unless `cond`: the one way modules reject a config value."""
  if not cond:
    raise ConfigError(msg)


def flatten(d, prefix=''):
  """{'a': {'b': 1}} -> {'a.b': 1}; tuples become lists (as in config.json)."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = list(v) if isinstance(v, tuple) else v
  return out


def config_json(config):
  """The config as the JSON-ready dict that config.json holds."""
  return json.loads(config.to_json_best_effort())


def check_train(c):
  """Checks the fields this module owns outright: `seed` and `train.*`."""
  t = c.train
  check(t.batch_size >= 1, f'train.batch_size={t.batch_size} must be >= 1')
  check(t.eval_batch_size >= 1, 'train.eval_batch_size must be >= 1')
  check(t.num_epochs > 0, f'train.num_epochs={t.num_epochs} must be > 0')
  check(t.log_every_steps >= 1, 'train.log_every_steps must be >= 1')
  check(t.loop in ('auto', 'device', 'host'), f'train.loop={t.loop!r}; choose auto, device or host')
  check(t.eval_every_epochs > 0, 'train.eval_every_epochs must be > 0')
  check(t.checkpoint_every_epochs > 0, 'train.checkpoint_every_epochs must be > 0')
  check(t.keep_checkpoints >= 1, 'train.keep_checkpoints must be >= 1')
  check(t.early_stopping_epochs >= 0, 'train.early_stopping_epochs must be >= 0')
  check(t.num_image_samples >= 1, 'train.num_image_samples must be >= 1')


def check_vmappable(configs):
  """Raises ConfigError unless the configs differ only in VMAPPABLE fields."""
  flat = [flatten(config_json(c)) for c in configs]
  for other in flat[1:]:
    diff = [k for k in flat[0] if flat[0][k] != other.get(k) and k not in VMAPPABLE]
    check(not diff, f'members differ in {diff[:3]}, which one vmapped group cannot stack '
          f'(only {VMAPPABLE}); use --mode sequential or processes')


def resume_differences(saved, current):
  """Fields (dotted) whose saved value differs from the current one, RESUMABLE ones aside.

  A field added to the schema after the run was saved is absent from `saved`;
  its default reproduces the older behaviour, so it is not a difference.
  """
  a, b = flatten(saved), flatten(current)
  return [(k, a.get(k), b.get(k)) for k in sorted(a)
          if a.get(k) != b.get(k) and k not in RESUMABLE]
