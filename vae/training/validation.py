"""Config validation: composes the checks that each module owns for its fields.

`validate` runs before any data is read; `validate_for_data` once the data's
shape and size are known, still before anything compiles. Each failure is a
`config_lib.ConfigError` whose one-line message names the field and the fix.
"""

from vae import config_lib
from vae.data import datasets
from vae.families import likelihoods, models, objective_families, objectives
from vae.training import optim


def validate(c):
  """Raises ConfigError naming the field for any impossible value."""
  config_lib.check_numbers(c)
  datasets.check_config(c.data)
  models.check_config(c.model)
  likelihoods.check_config(c.model, c.data)
  objectives.check_config(c.objective)
  objective_families.check_config(c.objective)
  models.check_family(c.model, c.objective)
  optim.check_config(c.optim)
  optim.check_run_length(c.optim, c.train.num_epochs)
  config_lib.check_train(c)
  if c.data.source == 'synthetic' or c.data.name == 'synthetic':
    models.check_image_shape(c.model, tuple(c.data.synthetic_shape))


def validate_for_data(c, image_shape, num_train):
  """Checks that need the data's shape and size."""
  config_lib.check(c.train.batch_size <= num_train,
                   f'train.batch_size={c.train.batch_size} exceeds the {num_train} training '
                   'examples; lower train.batch_size')
  models.check_image_shape(c.model, image_shape)
