"""Every config file loads, validates and (in smoke form) trains; every sweep expands."""

import pathlib

import pytest

from tests.helpers import run_script
from vae import config_lib, loop, sweeps, validation

CONFIGS = sorted(p.name for p in (pathlib.Path(__file__).parents[1] / 'configs').glob('*.py')
                 if p.name != '__init__.py')


@pytest.mark.parametrize('name', CONFIGS)
def test_config_loads_and_validates(name):
  module, _ = sweeps.load_config_module(f'configs/{name}')
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
  module, arg = sweeps.load_config_module(spec)
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
  assert set(flat) == set(config_lib.FIELD_DOCS)
  assert all(config_lib.FIELD_DOCS.values())
  rc, out, err = run_script('train', '--config', 'configs/fashion_mnist_gated.py',
                            '--show_config', '--config.model.latent_dim=8')
  assert rc == 0, err
  lines = out.strip().splitlines()
  assert len(lines) == len(flat)
  latent = next(line for line in lines if line.startswith('model.latent_dim = '))
  assert latent.startswith('model.latent_dim = 8') and '# latent dimensions D' in latent
