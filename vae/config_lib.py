"""The config schema: `base_config`, `parse_arg`, `smoke`, and the roles of fields.

A leaf module: it imports nothing of ours. Every experiment file in configs/
starts from `base_config()` and changes what it needs, so all configs share one
schema: an unknown key is an error (configs are locked). Each module checks the
fields it owns (`check_config` in data, models, likelihoods, objectives, optim;
`validation.check_train` for train.*) and `vae.training.validation.validate` composes
them, so an impossible value stops a run with one line naming the field before any data
is read or anything compiles.

Field roles, declared once (dotted names):
  RESUMABLE   may differ between a run and its resumption.
  STRUCTURAL  must equal a checkpoint's for its parameters to fit.
  VMAPPABLE   may differ between members trained together in one vmapped group (a number,
              traced: the train step reads it from its hyperparameters, `hp[name]`).

A family declares its own fields with its registration (`declare(Field(...))`: default,
doc, role); `base_config` adds them to their section, so `--config.<section>.<field>`,
`--show_config`, validation, resume checks and sweep axes see them like the built-in ones.
The family registries are loaded by name on the first `base_config()` (FAMILY_MODULES), so
a config file sees every family's fields without importing the library's upper layers.
"""

import dataclasses
import importlib
import itertools
import json
import os
import sys

import ml_collections

from vae import errors

INT32_MAX = 2 ** 31 - 1  # sample and draw counts are int32 on the device

# data.path and data.tfds_data_dir say where the data is, not what it is: a resume compares
# the content (the splits' hashes in data.json), so the files may move.
RESUMABLE = ('train.num_epochs', 'train.images_every_epochs', 'train.checkpoint_every_minutes',
             'data.accept_changed_data', 'data.path', 'data.tfds_data_dir')
STRUCTURAL = tuple('model.' + k for k in (
    'type', 'arch', 'latent_dim', 'hidden', 'activation', 'gated', 'conv_channels',
    'conv_dense', 'conv_upsample', 'likelihood', 'gaussian_scale', 'prior', 'prior_components',
    'posterior', 'flow_steps', 'flow_hidden', 'stochastic_layers')) + ('objective.name',)
# Fields whose default changed what a run computes or logs: a run saved before the field
# existed ran with the value given here. scripts/migrate.py (vae/training/migration.py) writes
# them into such a workdir's config.json; nothing else reads them for old runs.
LEGACY_VALUES = {'train.norm_metrics': 'mean', 'data.binarize_bits': 32,
                 'train.member_loop': 'vmap', 'model.bernoulli_impl': 'autodiff'}
# config.json's layout: 2 names every field and has the params + state checkpoints; a
# config.json without the field is version 1 (migration.check_current says whether it is
# already current).
SCHEMA_VERSION = 2
# Fields that hold 'auto' or a number (the ConfigDict types them as object; check_train
# checks the value; a run saved with a number keeps it on resume: `legacy_to_adopt`).
NUMBER_OR_AUTO = ('train.eval_every_epochs',)
VMAPPABLE = ('objective.beta', 'objective.free_bits', 'objective.warmup_epochs', 'optim.lr',
             'seed', 'model.latent_dim')


ConfigError = errors.ConfigError
ROLES = ('', 'structural', 'resumable', 'vmappable')
SECTIONS = ('data', 'model', 'objective', 'optim', 'train')
# Modules whose import registers the families and so declares their fields.
FAMILY_MODULES = ['vae.families']


@dataclasses.dataclass(frozen=True)
class Field:
  """A config field that a family declares (`declare`).

  Attributes:
    name: dotted, '<section>.<field>' (section one of SECTIONS).
    default: its value when a config does not set it (also for runs saved before it).
    doc: one line for --show_config and docs/training.md's field list.
    role: '' | 'structural' (must equal a checkpoint's) | 'resumable' (may change on
      resume) | 'vmappable' (a number that members of one vmapped group may vary).
  """
  name: str
  default: object
  doc: str
  role: str = ''


DECLARED = {}  # dotted name -> Field


def declare(*fields):
  """Adds family fields to the schema (idempotent for an identical declaration)."""
  for f in fields:
    section, _, leaf = f.name.partition('.')
    check(section in SECTIONS and leaf and '.' not in leaf,
          f'field {f.name!r}: name it <section>.<field> with a section of {SECTIONS}')
    check(f.role in ROLES, f'field {f.name!r}: role {f.role!r}; choose one of {ROLES}')
    check(f.role != 'vmappable' or (isinstance(f.default, (int, float))
                                    and not isinstance(f.default, bool)),
          f'field {f.name!r}: a vmappable field is a number (it is traced)')
    check(f.name not in FIELD_DOCS, f'field {f.name!r} is built in; declare another name')
    known = DECLARED.get(f.name)
    check(known is None or known == f, f'field {f.name!r} is declared twice, differently')
    DECLARED[f.name] = f


def _declared(role):
  return tuple(f.name for f in DECLARED.values() if f.role == role)


def structural_fields():
  """STRUCTURAL and the families' structural fields."""
  return STRUCTURAL + _declared('structural')


def resumable_fields():
  """RESUMABLE and the families' resumable fields."""
  return RESUMABLE + _declared('resumable')


def vmappable_declared():
  """The families' vmappable fields (each a traced hyperparameter `hp[name]`)."""
  return _declared('vmappable')


def field_docs():
  """{dotted field: its one-line meaning}, built-in and declared."""
  return dict(FIELD_DOCS, **{f.name: f.doc for f in DECLARED.values()})


def _load_families():
  for name in FAMILY_MODULES:
    importlib.import_module(name)


PLUGINS = []  # the modules `import_plugins` imported, in order (run.json records them)


def import_plugins(names):
  """Imports a user's modules (the commands' `--import MODULE`), whose import registers
  families and declares their fields; the working directory is searched first, as
  `python -m` would. ConfigError naming the module when one cannot be imported."""
  if names and '' not in sys.path and os.getcwd() not in sys.path:
    sys.path.insert(0, os.getcwd())
  for name in names:
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except  (any failure of the user's module)
      detail = str(e).splitlines()[0][:200] if str(e) else ''
      raise ConfigError(f'--import {name}: {type(e).__name__}: {detail}; give a module on '
                        'the Python path (or in the current directory) that imports '
                        'cleanly') from None
    if name not in PLUGINS:
      PLUGINS.append(name)


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


# The built-in fields: (dotted name, default, meaning), in config.json's order. Every
# experiment in configs/ starts from these (`base_config`); families add theirs (`declare`).
SCHEMA = (
    ('schema_version', SCHEMA_VERSION, "config.json's layout version (scripts/migrate.py "
        'brings an older workdir to it)'),
    ('seed', 0, 'root seed: initialization, data order, per-step noise, picture samples'),
    ('data.name', 'fashion_mnist', 'dataset: fashion_mnist, mnist, kmnist, binarized_mnist, '
        'cifar10, any TFDS image set, or synthetic'),
    ('data.source', 'auto', 'where to read it: auto | idx | tfds | npz | synthetic'),
    ('data.path', '', 'an IDX directory or an .npz file (empty: search the usual places)'),
    ('data.tfds_data_dir', '', 'TFDS data directory (empty: TFDS default)'),
    ('data.download', True, 'let TFDS download a dataset it does not have'),
    ('data.val_size', 10000, 'validation examples carved from train with data.split_seed '
        '(0: none)'),
    ('data.split_seed', 0, 'seed of the fixed permutation that carves validation from train'),
    ('data.binarize', 'dynamic', 'pixel protocol: dynamic (fresh Bernoulli draw per step) | static '
        '(one fixed draw) | none (intensities k/255)'),
    ('data.binarize_seed', 0, 'seed of the static training draw and of the evaluation draws'),
    ('data.binarize_bits', 16, 'random bits per pixel of the dynamic draw: 16 (P(1) within 2^-17 '
        'of k / 255) | 32 (a float32 uniform: the stream of runs saved before this field)'),
    ('data.dequantize', False, 'continuous pixels: (k + u) / 256 with u ~ U[0, 1)'),
    ('data.residency', 'auto', 'training set on the device (device), streamed from the host '
        '(host), or auto by data.max_device_bytes'),
    ('data.max_device_bytes', 2147483648, 'largest training set (bytes, uint8) kept on the device '
        'in auto'),
    ('data.accept_changed_data', False, 'resume although the data differs from what the run '
        'recorded (content hashes in data.json; the change goes into run.json)'),
    ('data.max_train_examples', 0, 'train on the first N training examples only (after the '
        'validation carve; a quick trial); 0: all'),
    ('data.seed', 0, 'seed of the synthetic dataset'),
    ('data.synthetic_train_size', 4096, 'synthetic training examples'),
    ('data.synthetic_test_size', 1024, 'synthetic test examples'),
    ('data.synthetic_shape', (28, 28, 1), 'synthetic image shape (H, W, C)'),
    ('model.type', 'vae', 'vae, or ae (the deterministic autoencoder built from the same modules)'),
    ('model.arch', 'mlp', 'mlp | conv (with model.stochastic_layers=2: the gated ConvHVAE of the '
        'VampPrior papers, vae/families/gated_conv.py)'),
    ('model.latent_dim', 20, 'latent dimensions D'),
    ('model.hidden', (512, 256), 'MLP hidden widths in encoder order (the decoder mirrors them); '
        'the ConvHVAE: p(z1 | z2), and hidden[-1] for its dense layers around z'),
    ('model.activation', 'relu', 'relu | tanh | gelu | softplus | elu | swish | leaky_relu'),
    ('model.gated', False, 'gated dense layers (h * sigmoid(g)), as in the VampPrior papers'),
    ('model.conv_channels', (32, 64), 'conv widths; each is one stride-2 layer (H, W must divide); '
        'the ConvHVAE: a stride-1 and a stride-2 gated conv per width, and the last width in its '
        "decoder's full-resolution convs"),
    ('model.conv_dense', 256, 'width of the dense layer between conv stack and latents (one '
        'stochastic layer)'),
    ('model.conv_upsample', 'subpixel', "decoder's stride-2 layers: subpixel (conv + pixel "
        'shuffle) | transpose (one stochastic layer)'),
    ('model.likelihood', 'bernoulli', 'p(x | z): bernoulli | gaussian | continuous_bernoulli | '
        'discretized_logistic'),
    ('model.gaussian_scale', 'fixed', 'gaussian decoder scale: fixed | global (one learned) | '
        'pixel (learned per pixel)'),
    ('model.gaussian_fixed_scale', 1.0, 'the fixed gaussian scale'),
    ('model.bernoulli_impl', 'fused', '(continuous) Bernoulli log-likelihood: fused (one pass: one '
        'exp per pixel, one log per 16 pixels, the derivative from the same exp) | autodiff (the '
        'per-pixel sum differentiated by JAX; runs saved before the field); equal to float32 '
        'rounding'),
    ('model.clamp_logvar', False, 'clamp the encoder log-variance to [logvar_min, logvar_max]'),
    ('model.logvar_min', -6.0, 'lower clamp of the encoder log-variance'),
    ('model.logvar_max', 2.0, 'upper clamp of the encoder log-variance'),
    ('model.compute_dtype', 'float32', 'float32 | bfloat16 (layers compute in it; parameters, '
        'losses and reductions stay float32)'),
    ('model.init_std', 0.0, '> 0: MLP weights from N(0, init_std^2); 0: LeCun normal'),
    ('model.prior', 'standard', 'p(z) on the top layer: standard (N(0, I)) | mog (learned mixture '
        'of prior_components Gaussians) | vamp (VampPrior, prior_components pseudo-inputs) | a '
        'prior registered in a module of vae/families (docs/families.md)'),
    ('model.prior_components', 500, 'mixture components of the mog prior / pseudo-inputs of vamp'),
    ('model.posterior', 'diagonal', 'q(z | x): diagonal (Gaussian) | iaf (diagonal Gaussian + '
        'flow_steps inverse autoregressive flow steps)'),
    ('model.flow_steps', 2, 'IAF steps (posterior=iaf), alternating the autoregressive order'),
    ('model.flow_hidden', (320, 320), "hidden widths of each IAF step's MADE network"),
    ('model.stochastic_layers', 1, '1, or 2: q(z2|x) q(z1|x,z2), p(z2) p(z1|z2) p(x|z1,z2) '
        '(latent_dim each; mlp only)'),
    ('objective.name', 'elbo', 'the objective family the step minimizes: elbo (the ELBO, or with '
        'num_samples > 1 the IWAE bound) | a registered one (docs/families.md)'),
    ('objective.beta', 1.0, 'KL weight (1: the ELBO)'),
    ('objective.warmup_epochs', 0.0, 'the KL weight ramps linearly 0 -> beta over this many '
        'epochs'),
    ('objective.free_bits', 0.0, 'free bits: nats per latent dimension below which the KL is not '
        'penalized (batch mean)'),
    ('objective.num_samples', 1, 'k importance samples per example (k > 1: the IWAE bound)'),
    ('objective.estimator', 'iwae', 'with k > 1: iwae (log-mean-exp of k weights) | elbo (k-sample '
        'average ELBO)'),
    ('optim.name', 'adam', 'adam | adamw | adagrad | sgd'),
    ('optim.lr', 0.001, 'learning rate'),
    ('optim.schedule', 'constant', 'constant | cosine | warmup_cosine | iwae_staircase'),
    ('optim.warmup_epochs', 0.0, 'learning-rate warm-up (constant and warmup_cosine)'),
    ('optim.b1', 0.9, 'Adam beta1'),
    ('optim.b2', 0.999, 'Adam beta2'),
    ('optim.eps', 1e-08, 'Adam epsilon'),
    ('optim.momentum', 0.9, 'SGD momentum'),
    ('optim.weight_decay', 0.0, 'weight decay (adam: coupled L2; adamw: decoupled)'),
    ('optim.grad_clip', 0.0, 'global-norm gradient clip (0: off)'),
    ('optim.ema_decay', 0.0, 'EMA of the parameters, used for evaluation and vae.load (0: off)'),
    ('optim.iwae_stages', 8, 'iwae_staircase: stage i lasts 3^i epochs at lr * 10^(-i/7)'),
    ('train.batch_size', 128, 'global batch size (divides over the devices of the data axis)'),
    ('train.num_epochs', 30.0, 'epochs to train (the one field that may change on resume)'),
    ('train.log_every_steps', 100, 'steps between train-metric events'),
    ('train.loop', 'auto', 'device (one compiled while loop per chunk) | host (dispatched steps) | '
        'auto (host for conv on CPU, else device)'),
    ('train.member_loop', 'auto', 'a group of members in one program (sweep --mode vmap): vmap '
        "(every op on all members at once) | map (each member's whole chunk in turn, its state "
        'staying in the CPU cache; a stopped member skipped) | auto (map on the CPU when the '
        'members share a device, else vmap; runs saved before this field keep vmap)'),
    ('train.norm_metrics', 'last', 'train/grad_norm and train/param_norm: last (of the last step '
        "of each log window, computed only there; a NaN gradient is then caught by the next step's "
        'loss) | mean (every step, averaged over the window, the behaviour of runs saved before '
        'this field)'),
    ('train.eval_every_epochs', 'auto', 'epochs between evaluations (metrics; images: '
        'train.images_every_epochs); auto: min(5, num_epochs / 3), so a short run gets 3 '
        '(runs saved with a number keep it)'),
    ('train.checkpoint_every_epochs', 5.0, 'epochs between checkpoints'),
    ('train.checkpoint_every_minutes', 0.0, 'also checkpoint at the first boundary (log, eval or '
        'checkpoint step) this many minutes after the last save (0: off; single-process runs)'),
    ('train.images_every_epochs', 0.0, 'epochs between the evaluations that also write images '
        '(samples, reconstructions: PNG and TensorBoard); 0: every evaluation. The last step and '
        'an early stop always write them'),
    ('train.keep_checkpoints', 3, 'latest checkpoints kept (besides the best by val ELBO)'),
    ('train.early_stopping_epochs', 0.0, 'stop when val ELBO has not improved for this long (0: '
        'off; needs data.val_size > 0)'),
    ('train.eval_batch_size', 1000, 'evaluation batch size'),
    ('train.num_image_samples', 64, 'prior samples decoded into images at each evaluation'),
    ('train.eval_iw_samples', 0, '> 0: also estimate validation log p(x) with k samples at eval'),
    ('train.collapse_warn_fraction', 0.1, 'warn when fewer than this share of latent units is '
        'active'),
    ('train.active_unit_threshold', 0.01, 'a unit is active when Var_x E_q[z] exceeds this'),
)


def base_config():
  """The full schema with the default model's values (see configs/default.py): the built-in
  fields (SCHEMA) and the registered families' (`declare`)."""
  _load_families()
  c = ml_collections.ConfigDict()
  for name, default, _ in SCHEMA:
    *sections, leaf = name.split('.')
    node = c
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    node[leaf] = (ml_collections.FieldReference(default, field_type=object)
                  if name in NUMBER_OR_AUTO else default)
  for f in DECLARED.values():
    section, leaf = f.name.split('.')
    c[section][leaf] = f.default
  return c


FIELD_DOCS = {name: doc for name, _, doc in SCHEMA}


def describe(c):
  """Lines 'field = value  # meaning' for every field of config `c` (the --show_config)."""
  flat = flatten(config_json(c))
  width = max(len(f'{k} = {v!r}') for k, v in flat.items())
  docs = field_docs()
  return [f'{f"{k} = {v!r}":<{width}}  # {docs.get(k, "")}' for k, v in flat.items()]


def with_saved_values(saved):
  """The current schema with a saved config.json's values: fields added since the run was
  saved keep their defaults; unknown saved fields are dropped. (A run that predates the
  fields of LEGACY_VALUES is migrated first: vae/training/migration.py.)"""
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


def get_field(config, dotted):
  """config['a']['b'] for 'a.b'; ConfigError naming the key when there is no such field."""
  node = config
  try:
    for name in dotted.split('.'):
      node = node[name]
  except (KeyError, TypeError):
    raise ConfigError(f'{dotted!r} is not a config field') from None
  return node


def set_field(config, dotted, value):
  """Sets the field 'a.b' of an unlocked config (an int given for a float field becomes a
  float); ConfigError naming the key when there is no such field."""
  *path, last = dotted.split('.')
  node = get_field(config, '.'.join(path)) if path else config
  current = get_field(config, dotted)
  node[last] = float(value) if isinstance(current, float) and isinstance(value, int) else value


def legacy_to_adopt(saved, config):
  """{field: value}: the LEGACY_VALUES a resumed run keeps because its (migrated)
  config.json names them where the current config has the field's default, and the number
  a NUMBER_OR_AUTO field was saved with where the current config says auto, so that the
  command it started with resumes it as it started."""
  flat, current = flatten(saved), flatten(config_json(config))
  defaults = flatten(config_json(base_config()))
  out = {k: v for k, v in LEGACY_VALUES.items()
         if flat.get(k) == v and current.get(k) == defaults.get(k) != v}
  out.update({k: flat[k] for k in NUMBER_OR_AUTO  # saved as a number, now the default auto
              if current.get(k) == 'auto' and isinstance(flat.get(k), (int, float))})
  return out


def smoke(c):
  """Shrinks any config to a seconds-long run on synthetic data."""
  c.data.name = 'synthetic'
  c.data.source = 'synthetic'
  c.data.path = ''
  c.data.val_size = 256
  c.data.synthetic_train_size = 1024
  c.data.synthetic_test_size = 256
  if tuple(c.data.synthetic_shape) == (28, 28, 1) and pixel_protocol(c.model.likelihood) == '8bit':
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


# The data protocol each likelihood scores, the one rule that binds model.likelihood to the
# data fields: 'binary' pixels (binarized: data.binarize dynamic or static), 'continuous'
# grey levels in [0, 1] (data.binarize=none) or '8bit' values k / 255 (data.binarize=none,
# no dequantization). `likelihoods.register` adds the protocol of a new likelihood.
PIXEL_PROTOCOLS = {}  # filled by `likelihoods.register` (the families load with base_config)


def register_pixel_protocol(likelihood, pixels):
  """Records the data protocol of a likelihood (`likelihoods.register` calls this)."""
  check(pixels in ('binary', 'continuous', '8bit'),
        f'pixel protocol {pixels!r} of likelihood {likelihood!r}: choose binary, continuous or '
        '8bit')
  PIXEL_PROTOCOLS[likelihood] = pixels


def pixel_protocol(likelihood):
  """'binary', 'continuous' or '8bit' for a known likelihood name; None otherwise."""
  return PIXEL_PROTOCOLS.get(likelihood)


def binarize_for(likelihood):
  """The data.binarize a likelihood's pixels want: 'dynamic' for binary pixels, else 'none'."""
  return 'dynamic' if pixel_protocol(likelihood) == 'binary' else 'none'


def product(**axes):
  """A sweep's members as the Cartesian product of the axes (configs' `get_sweep`):
  product(a=[1, 2], b=[3]) -> [{a: 1, b: 3}, {a: 2, b: 3}]."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def zip_axes(**axes):
  """A sweep's members as the element-wise pairing of equally long axes."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise ConfigError(f'zip_axes needs axes of one length, got {lengths}')
  keys = list(axes)
  return [dict(zip(keys, values)) for values in zip(*(axes[k] for k in keys))]


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
  """The config (a ConfigDict or a frozen spec) as the JSON-ready dict config.json holds."""
  if hasattr(config, 'to_json_best_effort'):
    return json.loads(config.to_json_best_effort())
  return json.loads(json.dumps(config.to_dict()))


def resume_differences(saved, current):
  """Fields (dotted) whose saved value differs from the current one, RESUMABLE ones aside.

  A field added to the schema after the run was saved is absent from `saved`; its default
  reproduces the older behaviour (a run that predates LEGACY_VALUES is migrated first), so
  it is not a difference.
  """
  a, b = flatten(saved), flatten(current)
  return [(k, a.get(k), b.get(k)) for k in sorted(a)
          if a.get(k) != b.get(k) and k not in resumable_fields()]
