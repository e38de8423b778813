"""The config schema: `base_config`, `parse_arg`, `smoke`, and the roles of fields.

A leaf module: it imports nothing of ours. Every experiment file in configs/
starts from `base_config()` and changes what it needs, so all configs share one
schema: an unknown key is an error (configs are locked). Each module checks the
fields it owns (`check_config` in data, models, likelihoods, objectives, optim;
`check_train` here) and `vae.training.validation.validate` composes those checks, so an
impossible value stops a run with one line naming the field before any data is
read or anything compiles.

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

import copy
import dataclasses
import importlib
import importlib.util
import itertools
import json
import math
import pathlib

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
# Fields whose default changed what a run computes or logs: a config saved before the
# field existed ran with the value given here, and a resumed run keeps it (`adopt_legacy`).
LEGACY_VALUES = {'train.norm_metrics': 'mean', 'data.binarize_bits': 32,
                 'train.member_loop': 'vmap', 'model.bernoulli_impl': 'autodiff'}
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
    doc: one line for --show_config and README's field list.
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
  """The full schema with the default model's values (see configs/default.py); every
  field's meaning is in FIELD_DOCS."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = d = ml_collections.ConfigDict()
  d.name = 'fashion_mnist'
  d.source = 'auto'
  d.path = ''
  d.tfds_data_dir = ''
  d.download = True
  d.val_size = 10000
  d.split_seed = 0
  d.binarize = 'dynamic'
  d.binarize_seed = 0
  d.binarize_bits = 16
  d.dequantize = False
  d.residency = 'auto'
  d.max_device_bytes = 2 ** 31
  d.accept_changed_data = False
  d.seed = 0
  d.synthetic_train_size = 4096
  d.synthetic_test_size = 1024
  d.synthetic_shape = (28, 28, 1)

  c.model = m = ml_collections.ConfigDict()
  m.type = 'vae'
  m.arch = 'mlp'
  m.latent_dim = 20
  m.hidden = (512, 256)
  m.activation = 'relu'
  m.gated = False
  m.conv_channels = (32, 64)
  m.conv_dense = 256
  m.conv_upsample = 'subpixel'
  m.likelihood = 'bernoulli'
  m.gaussian_scale = 'fixed'
  m.gaussian_fixed_scale = 1.0
  m.bernoulli_impl = 'fused'
  m.clamp_logvar = False
  m.logvar_min = -6.0
  m.logvar_max = 2.0
  m.compute_dtype = 'float32'
  m.init_std = 0.0
  m.prior = 'standard'
  m.prior_components = 500
  m.posterior = 'diagonal'
  m.flow_steps = 2
  m.flow_hidden = (320, 320)
  m.stochastic_layers = 1

  c.objective = o = ml_collections.ConfigDict()
  o.name = 'elbo'
  o.beta = 1.0
  o.warmup_epochs = 0.0
  o.free_bits = 0.0
  o.num_samples = 1
  o.estimator = 'iwae'

  c.optim = p = ml_collections.ConfigDict()
  p.name = 'adam'
  p.lr = 1e-3
  p.schedule = 'constant'
  p.warmup_epochs = 0.0
  p.b1 = 0.9
  p.b2 = 0.999
  p.eps = 1e-8
  p.momentum = 0.9
  p.weight_decay = 0.0
  p.grad_clip = 0.0
  p.ema_decay = 0.0
  p.iwae_stages = 8

  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 128
  t.num_epochs = 30.0
  t.log_every_steps = 100
  t.loop = 'auto'
  t.member_loop = 'auto'
  t.norm_metrics = 'last'
  t.eval_every_epochs = 5.0
  t.checkpoint_every_epochs = 5.0
  t.checkpoint_every_minutes = 0.0
  t.images_every_epochs = 0.0
  t.keep_checkpoints = 3
  t.early_stopping_epochs = 0.0
  t.eval_batch_size = 1000
  t.num_image_samples = 64
  t.eval_iw_samples = 0
  t.collapse_warn_fraction = 0.1
  t.active_unit_threshold = 0.01
  _load_families()
  for f in DECLARED.values():
    section, leaf = f.name.split('.')
    c[section][leaf] = f.default
  return c


FIELD_DOCS = {
    'seed': 'root seed: initialization, data order, per-step noise, picture samples',
    'data.name': 'dataset: fashion_mnist, mnist, kmnist, binarized_mnist, cifar10, any TFDS '
                 'image set, or synthetic',
    'data.source': 'where to read it: auto | idx | tfds | npz | synthetic',
    'data.path': 'an IDX directory or an .npz file (empty: search the usual places)',
    'data.tfds_data_dir': 'TFDS data directory (empty: TFDS default)',
    'data.download': 'let TFDS download a dataset it does not have',
    'data.val_size': 'validation examples carved from train with data.split_seed (0: none)',
    'data.split_seed': 'seed of the fixed permutation that carves validation from train',
    'data.binarize': 'pixel protocol: dynamic (fresh Bernoulli draw per step) | static (one '
                     'fixed draw) | none (intensities k/255)',
    'data.binarize_seed': 'seed of the static training draw and of the evaluation draws',
    'data.binarize_bits': 'random bits per pixel of the dynamic draw: 16 (P(1) within 2^-17 of '
                          'k / 255) | 32 (a float32 uniform: the stream of runs saved before '
                          'this field)',
    'data.dequantize': 'continuous pixels: (k + u) / 256 with u ~ U[0, 1)',
    'data.residency': 'training set on the device (device), streamed from the host (host), or '
                      'auto by data.max_device_bytes',
    'data.max_device_bytes': 'largest training set (bytes, uint8) kept on the device in auto',
    'data.accept_changed_data': 'resume although the data differs from what the run recorded '
                                '(content hashes in data.json; the change goes into run.json)',
    'data.seed': 'seed of the synthetic dataset',
    'data.synthetic_train_size': 'synthetic training examples',
    'data.synthetic_test_size': 'synthetic test examples',
    'data.synthetic_shape': 'synthetic image shape (H, W, C)',
    'model.type': 'vae, or ae (the deterministic autoencoder built from the same modules)',
    'model.arch': 'mlp | conv (with model.stochastic_layers=2: the gated ConvHVAE of the '
                  'VampPrior papers, vae/families/gated_conv.py)',
    'model.latent_dim': 'latent dimensions D',
    'model.hidden': 'MLP hidden widths in encoder order (the decoder mirrors them); the '
                    'ConvHVAE: p(z1 | z2), and hidden[-1] for its dense layers around z',
    'model.activation': 'relu | tanh | gelu | softplus | elu | swish | leaky_relu',
    'model.gated': 'gated dense layers (h * sigmoid(g)), as in the VampPrior papers',
    'model.conv_channels': 'conv widths; each is one stride-2 layer (H, W must divide); the '
                           'ConvHVAE: a stride-1 and a stride-2 gated conv per width, and '
                           "the last width in its decoder's full-resolution convs",
    'model.conv_dense': 'width of the dense layer between conv stack and latents (one '
                        'stochastic layer)',
    'model.conv_upsample': "decoder's stride-2 layers: subpixel (conv + pixel shuffle) | "
                           'transpose (one stochastic layer)',
    'model.likelihood': 'p(x | z): bernoulli | gaussian | continuous_bernoulli | '
                        'discretized_logistic',
    'model.gaussian_scale': 'gaussian decoder scale: fixed | global (one learned) | pixel '
                            '(learned per pixel)',
    'model.gaussian_fixed_scale': 'the fixed gaussian scale',
    'model.bernoulli_impl': '(continuous) Bernoulli log-likelihood: fused (one pass: one exp '
                            'per pixel, one log per 16 pixels, the derivative from the same '
                            'exp) | autodiff (the per-pixel sum differentiated by JAX; runs '
                            'saved before the field); equal to float32 rounding',
    'model.clamp_logvar': 'clamp the encoder log-variance to [logvar_min, logvar_max]',
    'model.logvar_min': 'lower clamp of the encoder log-variance',
    'model.logvar_max': 'upper clamp of the encoder log-variance',
    'model.compute_dtype': 'float32 | bfloat16 (layers compute in it; parameters, losses and '
                           'reductions stay float32)',
    'model.init_std': '> 0: MLP weights from N(0, init_std^2); 0: LeCun normal',
    'model.prior': 'p(z) on the top layer: standard (N(0, I)) | mog (learned mixture of '
                   'prior_components Gaussians) | vamp (VampPrior, prior_components '
                   'pseudo-inputs) | a prior registered in a module of vae/families '
                   '(docs/families.md)',
    'model.prior_components': 'mixture components of the mog prior / pseudo-inputs of vamp',
    'model.posterior': 'q(z | x): diagonal (Gaussian) | iaf (diagonal Gaussian + flow_steps '
                       'inverse autoregressive flow steps)',
    'model.flow_steps': 'IAF steps (posterior=iaf), alternating the autoregressive order',
    'model.flow_hidden': 'hidden widths of each IAF step\'s MADE network',
    'model.stochastic_layers': '1, or 2: q(z2|x) q(z1|x,z2), p(z2) p(z1|z2) p(x|z1,z2) '
                               '(latent_dim each; mlp only)',
    'objective.name': 'the objective family the step minimizes: elbo (the ELBO, or with '
                      'num_samples > 1 the IWAE bound) | a registered one (docs/families.md)',
    'objective.beta': 'KL weight (1: the ELBO)',
    'objective.warmup_epochs': 'the KL weight ramps linearly 0 -> beta over this many epochs',
    'objective.free_bits': 'free bits: nats per latent dimension below which the KL is not '
                           'penalized (batch mean)',
    'objective.num_samples': 'k importance samples per example (k > 1: the IWAE bound)',
    'objective.estimator': 'with k > 1: iwae (log-mean-exp of k weights) | elbo (k-sample '
                           'average ELBO)',
    'optim.name': 'adam | adamw | adagrad | sgd',
    'optim.lr': 'learning rate',
    'optim.schedule': 'constant | cosine | warmup_cosine | iwae_staircase',
    'optim.warmup_epochs': 'learning-rate warm-up (constant and warmup_cosine)',
    'optim.b1': 'Adam beta1',
    'optim.b2': 'Adam beta2',
    'optim.eps': 'Adam epsilon',
    'optim.momentum': 'SGD momentum',
    'optim.weight_decay': 'weight decay (adam: coupled L2; adamw: decoupled)',
    'optim.grad_clip': 'global-norm gradient clip (0: off)',
    'optim.ema_decay': 'EMA of the parameters, used for evaluation and vae.load (0: off)',
    'optim.iwae_stages': 'iwae_staircase: stage i lasts 3^i epochs at lr * 10^(-i/7)',
    'train.batch_size': 'global batch size (divides over the devices of the data axis)',
    'train.num_epochs': 'epochs to train (the one field that may change on resume)',
    'train.log_every_steps': 'steps between train-metric events',
    'train.loop': 'device (one compiled while loop per chunk) | host (dispatched steps) | '
                  'auto (host for conv on CPU, else device)',
    'train.member_loop': 'a group of members in one program (sweep --mode vmap): vmap (every '
                         'op on all members at once) | map (each member\'s whole chunk in turn, '
                         'its state staying in the CPU cache; a stopped member skipped) | auto '
                         '(map on the CPU when the members share a device, else vmap; runs '
                         'saved before this field keep vmap)',
    'train.norm_metrics': 'train/grad_norm and train/param_norm: last (of the last step of each '
                          'log window, computed only there; a NaN gradient is then caught by '
                          'the next step\'s loss) | mean (every step, averaged over the window, '
                          'the behaviour of runs saved before this field)',
    'train.eval_every_epochs': 'epochs between evaluations (metrics; images: '
                             'train.images_every_epochs)',
    'train.checkpoint_every_epochs': 'epochs between checkpoints',
    'train.checkpoint_every_minutes': 'also checkpoint at the first boundary (log, eval or '
                                      'checkpoint step) this many minutes after the last '
                                      'save (0: off; single-process runs)',
    'train.images_every_epochs': 'epochs between the evaluations that also write images '
                                 '(samples, reconstructions: PNG and TensorBoard); 0: every '
                                 'evaluation. The last step and an early stop always write them',
    'train.keep_checkpoints': 'latest checkpoints kept (besides the best by val ELBO)',
    'train.early_stopping_epochs': 'stop when val ELBO has not improved for this long (0: off; needs data.val_size > 0)',
    'train.eval_batch_size': 'evaluation batch size',
    'train.num_image_samples': 'prior samples decoded into images at each evaluation',
    'train.eval_iw_samples': '> 0: also estimate validation log p(x) with k samples at eval',
    'train.collapse_warn_fraction': 'warn when fewer than this share of latent units is active',
    'train.active_unit_threshold': 'a unit is active when Var_x E_q[z] exceeds this',
}


def describe(c):
  """Lines 'field = value  # meaning' for every field of config `c` (the --show_config)."""
  flat = flatten(config_json(c))
  width = max(len(f'{k} = {v!r}') for k, v in flat.items())
  docs = field_docs()
  return [f'{f"{k} = {v!r}":<{width}}  # {docs.get(k, "")}' for k, v in flat.items()]


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
  flat = flatten(saved)
  for key, value in LEGACY_VALUES.items():
    if key not in flat:
      set_field(c, key, value)
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


def adopt_legacy(saved, config):
  """(config, {field: value}): `config` with the LEGACY_VALUES of the fields that a saved
  config.json dict lacks, so a run saved before they existed resumes as it started; the
  dict names the fields changed (empty: `config` itself is returned)."""
  flat, current = flatten(saved), flatten(config_json(config))
  changed = {k: v for k, v in LEGACY_VALUES.items() if k not in flat and current.get(k) != v}
  if not changed:
    return config, changed
  config = copy.deepcopy(config)
  for key, value in changed.items():
    set_field(config, key, value)
  return config, changed


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
PIXEL_PROTOCOLS = {'bernoulli': 'binary', 'continuous_bernoulli': 'continuous',
                   'gaussian': 'continuous', 'discretized_logistic': '8bit'}


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


def is_analytic_family(model):
  """N(0, I) prior, diagonal posterior, one stochastic layer (`model`: config.model, or its
  JSON dict): the KL is analytic per dimension, so free bits apply, and members of
  different latent sizes can share one vmapped program (padded under a mask)."""
  return (model['prior'], model['posterior'], model['stochastic_layers']) == (
      'standard', 'diagonal', 1)


def resolve_config_spec(spec):
  """'configs/x.py[:arg]' as given when the file exists from the working directory; else, for
  a relative path under configs/, the file of the installed `configs` package (so that the
  console scripts, and the sweep members and SLURM tasks they start, run from any
  directory); else unchanged (the loader then names the missing file)."""
  path, colon, arg = spec.partition(':')
  if not path or pathlib.Path(path).exists() or pathlib.Path(path).is_absolute():
    return spec
  found = importlib.util.find_spec('configs')
  for location in (found.submodule_search_locations or []) if found else []:
    candidate = pathlib.Path(location).parent / path
    if candidate.is_file():
      return str(candidate) + colon + arg
  return spec


def config_overrides(args):
  """{field: value text} of the `--config.a.b=value` (or `--config.a.b value`) arguments in
  `args`, in order. A field given twice is a ConfigError naming it and both values: flags
  would otherwise merge or drop one silently (absl appends a repeated tuple field)."""
  out = {}
  args = list(args)
  for i, arg in enumerate(args):
    if not arg.startswith('--config.'):
      continue
    key, eq, value = arg[len('--config.'):].partition('=')
    if not eq:
      value = args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith('--') else ''
    if key in out:
      raise ConfigError(f'--config.{key} is given twice ({out[key]!s} and {value!s}); give it '
                        'once')
    out[key] = value
  return out


def resolve_config_argv(argv):
  """argv with the value of --config (`--config X` or `--config=X`) through
  `resolve_config_spec`."""
  out = list(argv)
  for i, a in enumerate(out):
    if a.startswith('--config='):
      out[i] = '--config=' + resolve_config_spec(a[len('--config='):])
    elif a == '--config' and i + 1 < len(out):
      out[i + 1] = resolve_config_spec(out[i + 1])
  return out


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
  check(t.member_loop in ('auto', 'vmap', 'map'),
        f'train.member_loop={t.member_loop!r}; choose auto, vmap or map')
  check(t.norm_metrics in ('last', 'mean'),
        f'train.norm_metrics={t.norm_metrics!r}; choose last or mean')
  check(t.eval_every_epochs > 0, 'train.eval_every_epochs must be > 0')
  check(0 <= t.eval_iw_samples <= INT32_MAX,
        f'train.eval_iw_samples={t.eval_iw_samples} must be in [0, {INT32_MAX}] (samples are '
        'counted in int32); at most a few thousand are useful')
  check(t.checkpoint_every_epochs > 0, 'train.checkpoint_every_epochs must be > 0')
  check(t.checkpoint_every_minutes >= 0, 'train.checkpoint_every_minutes must be >= 0')
  check(t.images_every_epochs >= 0,
        f'train.images_every_epochs={t.images_every_epochs} must be >= 0 (0: every evaluation)')
  check(t.keep_checkpoints >= 1, 'train.keep_checkpoints must be >= 1')
  check(t.early_stopping_epochs >= 0, 'train.early_stopping_epochs must be >= 0')
  check(not t.early_stopping_epochs or c.data.val_size > 0,
        f'train.early_stopping_epochs={t.early_stopping_epochs:g} needs a validation split '
        '(without one it would select on the test set); set data.val_size > 0 or '
        'train.early_stopping_epochs=0')
  check(t.num_image_samples >= 1, 'train.num_image_samples must be >= 1')


def _kind(value):
  if isinstance(value, bool):
    return 'a boolean'
  if isinstance(value, (int, float)):
    return 'a number'
  if isinstance(value, str):
    return 'a string'
  if isinstance(value, (list, tuple)):
    return 'a list'
  return type(value).__name__


def check_numbers(c):
  """Each field has its schema's kind (numbers in lists too), floats are finite and seeds
  are non-negative integers."""
  schema = flatten(config_json(base_config()))
  for key, value in flatten(config_json(c)).items():
    if key in schema and schema[key] is not None:
      want = _kind(schema[key])
      check(_kind(value) == want, f'{key}={value!r} should be {want} (like {schema[key]!r})')
      if isinstance(value, list) and schema[key]:
        inner = _kind(schema[key][0])
        check(all(_kind(v) == inner for v in value),
              f'{key}={value!r} should hold {inner.split(" ", 1)[1]}s (like {schema[key]!r})')
    if isinstance(value, float):
      check(math.isfinite(value), f'{key}={value} is not a finite number; give a finite value')
    if key == 'seed' or key.endswith('_seed') or key == 'data.seed':
      check(isinstance(value, int) and value >= 0, f'{key}={value!r} must be an integer >= 0')


def vmappable_fields(c):
  """The VMAPPABLE fields for config `c`: model.latent_dim only where padded latents are
  equivalent (N(0, I) prior, diagonal posterior, one stochastic layer)."""
  # An objective with auxiliary networks of their own shapes is not padded.
  simple = is_analytic_family(c['model']) and c['objective']['name'] == 'elbo'
  fields = VMAPPABLE + vmappable_declared()
  return fields if simple else tuple(k for k in fields if k != 'model.latent_dim')


def check_vmappable(configs):
  """Raises ConfigError unless the configs differ only in `vmappable_fields`."""
  flat = [flatten(config_json(c)) for c in configs]
  sizes = {f['model.latent_dim'] for f in flat}
  check(len(sizes) == 1 or 'model.latent_dim' in vmappable_fields(configs[0]),
        f'members differ in model.latent_dim ({sorted(sizes)}), which one vmapped group can '
        f'pad only with model.prior=standard, model.posterior=diagonal, '
        f'model.stochastic_layers=1 and objective.name=elbo; use --mode sequential or '
        f'processes, or one latent size')
  allowed = VMAPPABLE + vmappable_declared()
  for other in flat[1:]:
    diff = [k for k in flat[0] if flat[0][k] != other.get(k) and k not in allowed]
    check(not diff, f'members differ in {diff[:3]}, which one vmapped group cannot stack '
          f'(only {allowed}); use --mode sequential or processes')


def resume_differences(saved, current):
  """Fields (dotted) whose saved value differs from the current one, RESUMABLE ones aside.

  A field added to the schema after the run was saved is absent from `saved`;
  its default (or its LEGACY_VALUES entry, which `adopt_legacy` puts in `current`)
  reproduces the older behaviour, so it is not a difference.
  """
  a, b = flatten(saved), flatten(current)
  return [(k, a.get(k), b.get(k)) for k in sorted(a)
          if a.get(k) != b.get(k) and k not in resumable_fields()]
