"""Config validation: composes the checks that each module owns for its fields.

`validate` runs before any data is read; `validate_for_data` once the data's
shape and size are known, still before anything compiles. Each failure is a
`config_lib.ConfigError` whose one-line message names the field and the fix.
"""

import math

from vae import config_lib, specs
from vae.data import datasets
from vae.families import likelihoods, models, objective_families, objectives
from vae.training import optim


_VALIDATED = set()  # specs (hashable, compared by value) that passed `validate`


def spec(config):
  """The frozen spec of `config` (a ConfigDict or a spec), validated once: a spec that
  passed already is returned as is."""
  if specs.is_spec(config) and config in _VALIDATED:
    return config
  validate(config)
  frozen = specs.freeze(config)
  _VALIDATED.add(frozen)
  return frozen


def validate(c):
  """Raises ConfigError naming the field for any impossible value."""
  specs.check_numbers(c)
  datasets.check_config(c.data)
  models.check_config(c.model)
  likelihoods.check_config(c.model, c.data)
  objectives.check_config(c.objective)
  objective_families.check_config(c.objective)
  models.check_family(c.model, c.objective)
  optim.check_config(c.optim)
  optim.check_run_length(c.optim, c.train.num_epochs)
  check_train(c)
  if c.data.source == 'synthetic' or c.data.name == 'synthetic':
    models.check_image_shape(c.model, tuple(c.data.synthetic_shape))


# Importance samples x images that one periodic evaluation may cost (about 1e9 draws: from
# minutes to hours on 2 CPU cores). Training waits for an evaluation before it can answer a
# signal, so a larger one would make the run unstoppable; scripts/evaluate.py (which a
# signal stops at once) is the tool for a larger estimate.
MAX_EVAL_IW_DRAWS = 10 ** 9


def validate_for_data(c, image_shape, num_train, num_eval=0):
  """Checks that need the data's shape and size (`num_eval`: the images each periodic
  evaluation scores, validation and test together)."""
  config_lib.check(c.train.batch_size <= num_train,
                   f'train.batch_size={c.train.batch_size} exceeds the {num_train} training '
                   'examples; lower train.batch_size')
  models.check_image_shape(c.model, image_shape)
  draws = c.train.eval_iw_samples * num_eval
  config_lib.check(draws <= MAX_EVAL_IW_DRAWS,
                   f'train.eval_iw_samples={c.train.eval_iw_samples} on the {num_eval} images '
                   f'of each evaluation is {draws:.3g} draws (at most {MAX_EVAL_IW_DRAWS:.0e}; a '
                   'run cannot stop during an evaluation); lower it (5000 is the published '
                   'protocol) or estimate once with scripts/evaluate.py --num_samples')


def check_train(c):
  """Checks the fields no family owns: `schema_version` and `train.*`."""
  config_lib.check(c.schema_version == config_lib.SCHEMA_VERSION,
                   f'schema_version={c.schema_version}: this version writes and reads '
                   f'{config_lib.SCHEMA_VERSION}; leave the field at its default')
  t = c.train
  config_lib.check(t.batch_size >= 1, f'train.batch_size={t.batch_size} must be >= 1')
  config_lib.check(t.eval_batch_size >= 1, 'train.eval_batch_size must be >= 1')
  config_lib.check(t.num_epochs > 0, f'train.num_epochs={t.num_epochs} must be > 0')
  config_lib.check(t.log_every_steps >= 1, 'train.log_every_steps must be >= 1')
  config_lib.check(t.loop in ('auto', 'device', 'host'), f'train.loop={t.loop!r}; choose auto, device or host')
  config_lib.check(t.member_loop in ('auto', 'vmap', 'map'),
        f'train.member_loop={t.member_loop!r}; choose auto, vmap or map')
  config_lib.check(t.norm_metrics in ('last', 'mean'),
        f'train.norm_metrics={t.norm_metrics!r}; choose last or mean')
  every = t.eval_every_epochs
  config_lib.check(every == 'auto' or (isinstance(every, (int, float)) and not isinstance(
      every, bool) and math.isfinite(every) and every > 0),
                   f"train.eval_every_epochs={every!r} must be 'auto' or a number > 0")
  config_lib.check(0 <= t.eval_iw_samples <= config_lib.INT32_MAX,
        f'train.eval_iw_samples={t.eval_iw_samples} must be in [0, {config_lib.INT32_MAX}] (samples are '
        'counted in int32); at most a few thousand are useful')
  config_lib.check(t.checkpoint_every_epochs > 0, 'train.checkpoint_every_epochs must be > 0')
  config_lib.check(t.checkpoint_every_minutes >= 0, 'train.checkpoint_every_minutes must be >= 0')
  config_lib.check(t.images_every_epochs >= 0,
        f'train.images_every_epochs={t.images_every_epochs} must be >= 0 (0: every evaluation)')
  config_lib.check(t.keep_checkpoints >= 1, 'train.keep_checkpoints must be >= 1')
  config_lib.check(t.early_stopping_epochs >= 0, 'train.early_stopping_epochs must be >= 0')
  config_lib.check(not t.early_stopping_epochs or c.data.val_size > 0,
        f'train.early_stopping_epochs={t.early_stopping_epochs:g} needs a validation split '
        '(without one it would select on the test set); set data.val_size > 0 or '
        'train.early_stopping_epochs=0')
  config_lib.check(t.num_image_samples >= 1, 'train.num_image_samples must be >= 1')
