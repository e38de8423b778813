"""Every config file loads, validates and (in smoke form) trains; every sweep expands."""

import pathlib
import re

import pytest

from tests.helpers import run_script
from vae import config_lib
from vae.families import models
from vae.sweeps import plan
from vae.training import loop, validation

CONFIGS = sorted(p.name for p in (pathlib.Path(__file__).parents[1] / 'configs').glob('*.py')
                 if p.name != '__init__.py')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_validates(name):
  module, _ = plan.load_config_module(f'configs/{name}')
  for arg in (None, 'smoke'):
    c = module.get_config(arg)
    validation.validate(c)
    with pytest.raises(AttributeError):
      c.not_a_field = 1  # locked: unknown keys are errors
  if hasattr(module, 'get_sweep'):
    members = module.get_sweep(None)
    assert members and all(isinstance(m, dict) for m in members)
  assert 'Command' in module.__doc__ or 'python' in module.__doc__


@pytest.mark.parametrize('spec', ['configs/iwae.py:smoke,k=5,stages=1',
                                  'configs/cifar10_conv.py:smoke'])
def test_preset_smoke_runs(spec, tmp_path):
  module, arg = plan.load_config_module(spec)
  result = loop.train_and_evaluate(module.get_config(arg), str(tmp_path))
  assert result['status'] == 'finished'
  assert result['test/elbo'] < 0 and result['test/bpd'] > 0


def test_parse_arg_types_and_errors():
  a = config_lib.parse_arg('x=3,y=0.5,flag,name=conv', x=1, y=1.0, flag=False, name='mlp')
  assert (a.x, a.y, a.flag, a.name) == (3, 0.5, True, 'conv')
  with pytest.raises(config_lib.ConfigError, match='unknown config argument'):
    config_lib.parse_arg('nope=1', x=1)


def test_every_field_has_a_meaning_and_show_config_lists_them():
  flat = config_lib.flatten(config_lib.config_json(config_lib.base_config()))
  assert set(flat) == set(config_lib.field_docs())
  assert all(config_lib.field_docs().values())
  rc, out, err = run_script('train', '--config', 'configs/fashion_mnist_gated.py',
                            '--show_config', '--config.model.latent_dim=8')
  assert rc == 0, err
  fields, _, families = out.strip().partition('\n\nregistered families')
  lines = fields.splitlines()
  assert len(lines) == len(flat)
  latent = next(line for line in lines if line.startswith('model.latent_dim = '))
  assert latent.startswith('model.latent_dim = 8') and '# latent dimensions D' in latent
  priors_line = next(line for line in families.splitlines() if 'model.prior ' in line)
  assert {'standard', 'mog', 'vamp', 'exemplar'} <= set(priors_line.split(None, 1)[1].split(', '))
  # It validates: a value a run would refuse is refused here too, in one line.
  rc, out, err = run_script('train', '--config', 'configs/fashion_mnist_gated.py',
                            '--show_config', '--config.model.latent_dim=0')
  assert rc == 2 and err.strip() == 'error: model.latent_dim=0 must be >= 1' and not out


@pytest.mark.parametrize('fields, text', [
    ({'model.prior': 'vamp', 'objective.free_bits': 0.5}, 'objective.free_bits=0'),
    ({'model.posterior': 'iaf', 'objective.free_bits': 0.5}, 'objective.free_bits=0'),
    ({'model.stochastic_layers': 2, 'model.arch': 'conv', 'model.hidden': ()},
     'model.arch=conv with model.stochastic_layers=2 needs model.hidden'),
    ({'model.stochastic_layers': 3}, 'choose 1 or 2'),
    ({'model.prior': 'gaussian'}, "choose one of ('standard', 'mog', 'vamp', 'exemplar'"),
    ({'model.prior': 'exemplar', 'model.posterior': 'iaf'}, 'model.posterior=diagonal'),
    ({'model.prior': 'exemplar', 'model.exemplar_k': 0}, 'model.exemplar_k=0 must be >= 1'),
    ({'model.prior': 'exemplar', 'model.exemplar_candidates': 1},
     'model.exemplar_candidates=1 is below the 11 exemplars retrieved per example '
     '(model.exemplar_k=10 + 1 left out); raise it to >= 11 or set 0 (all)'),
    ({'model.prior': 'exemplar', 'model.exemplar_candidates': 10,
      'model.exemplar_leave_one_out': False}, None),
    ({'optim.schedule': 'warmup_cosine', 'optim.warmup_epochs': 30.0, 'train.num_epochs': 20.0},
     'optim.warmup_epochs=30.0 is not shorter than train.num_epochs=20.0'),
    ({'optim.warmup_epochs': 20.0, 'train.num_epochs': 20.0},
     'the learning rate would never reach optim.lr'),
    ({'model.posterior': 'flow'}, "choose one of ('diagonal', 'iaf')"),
    ({'model.prior_components': 0}, 'model.prior_components=0 must be >= 1'),
    ({'model.flow_steps': 0}, 'model.flow_steps=0 must be >= 1'),
    ({'model.flow_hidden': ()}, 'model.flow_hidden'),
    ({'model.type': 'ae', 'model.prior': 'mog'}, 'model.type=ae has no prior'),
    ({'train.images_every_epochs': -1.0}, 'train.images_every_epochs=-1.0 must be >= 0'),
])
def test_family_fields_are_checked_with_one_line_naming_the_fix(fields, text):
  c = config_lib.base_config()
  for key, value in fields.items():
    section, name = key.split('.')
    c[section][name] = value
  if text is None:  # accepted: the boundary of a refusal above
    validation.validate(c)
    return
  with pytest.raises(config_lib.ConfigError, match=re.escape(text)):
    validation.validate(c)


def test_early_stopping_without_a_validation_split_is_refused_in_one_line(tmp_path):
  """It would select on the test set; runs without early stopping stay allowed."""
  rc, out, err = run_script('train', '--config', 'configs/fashion_mnist_gated.py:smoke',
                            '--workdir', tmp_path / 'w', '--config.data.val_size=0')
  assert rc == 2 and err.count('\n') == 1, err
  assert 'needs a validation split' in err and 'data.val_size > 0' in err
  assert not (tmp_path / 'w').exists()
  c = config_lib.base_config()
  c.data.val_size, c.train.early_stopping_epochs = 0, 0.0
  validation.validate(c)


def test_latent_size_is_vmappable_only_for_the_analytic_family():
  a, b = config_lib.base_config(), config_lib.base_config()
  b.model.latent_dim = 5
  models.check_vmappable([a, b])
  for field, value in (('prior', 'vamp'), ('posterior', 'iaf'), ('stochastic_layers', 2)):
    a2, b2 = config_lib.base_config(), config_lib.base_config()
    for c in (a2, b2):
      c.model[field] = value
    b2.model.latent_dim = 5
    with pytest.raises(config_lib.ConfigError, match='pad only with model.prior=standard'):
      models.check_vmappable([a2, b2])
    c3 = config_lib.base_config()
    c3.model[field] = value
    c3.objective.beta = 4.0
    models.check_vmappable([a2, c3])  # other fields still stack
    assert len(plan.vmap_groups([a2, b2, c3])) == 2
