"""The frozen typed specs (vae/specs.py) and where the library freezes a config."""

import dataclasses

import pytest

from tests.helpers import smoke_config
from vae import config_lib, specs
from vae.sweeps import plan
from vae.training import loop, validation


def test_a_spec_is_typed_frozen_and_compares_by_value():
  c = smoke_config(**{'model.hidden': (32, 16)})
  s = specs.freeze(c)
  assert specs.is_spec(s) and not specs.is_spec(s.model)
  assert s.model.hidden == (32, 16) and s.model.latent_dim == c.model.latent_dim
  assert {f.name: f.type for f in dataclasses.fields(s.model)}['latent_dim'] is int
  assert {f.name: f.type for f in dataclasses.fields(s.optim)}['lr'] is float
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.model.latent_dim = 3
  assert s == specs.freeze(c) and hash(s) == hash(specs.freeze(c))
  assert s['model']['hidden'] == s.model.get('hidden') == (32, 16)
  assert 'latent_dim' in s.model and 'nope' not in s.model and s.model.get('nope', 7) == 7
  assert config_lib.config_json(s) == config_lib.config_json(c)
  assert specs.freeze(config_lib.config_json(c)) == s  # from config.json's dict too
  assert specs.freeze(s) is s


def test_with_fields_changes_a_copy_and_coerces_like_the_schema():
  s = specs.freeze(smoke_config())
  t = specs.with_fields(s, {'model.latent_dim': 8, 'optim.lr': 1, 'seed': 4,
                            'model.hidden': [8, 4]})
  assert (t.model.latent_dim, t.optim.lr, t.seed, t.model.hidden) == (8, 1.0, 4, (8, 4))
  assert isinstance(t.optim.lr, float)
  assert s.model.latent_dim != 8 and s.seed != 4  # the original is untouched
  assert t.data is s.data  # untouched sections are shared
  with pytest.raises(config_lib.ConfigError, match="'model.nope' is not a config field"):
    specs.with_fields(s, {'model.nope': 1})
  with pytest.raises(config_lib.ConfigError, match="'model' is not a config field"):
    specs.with_fields(s, {'model': 1})
  with pytest.raises(config_lib.ConfigError,
                     match=r"model.latent_dim='x' should be an integer"):
    specs.with_fields(s, {'model.latent_dim': 'x'})


def test_a_config_is_validated_once_and_the_loop_reads_only_specs(monkeypatch, tmp_path):
  calls = []
  real = validation.validate
  monkeypatch.setattr(validation, 'validate', lambda c: calls.append(c) or real(c))
  s = validation.spec(smoke_config(**{'seed': 11}))
  assert specs.is_spec(s) and len(calls) == 1
  assert validation.spec(s) is s and len(calls) == 1  # a validated spec is not checked again
  member = plan.apply_overrides(s, {'objective.beta': 2.0})
  assert specs.is_spec(member) and member.objective.beta == 2.0
  seen = []

  def stop(data_spec):
    seen.append(data_spec)
    raise RuntimeError('stop before the data')

  monkeypatch.setattr(loop.data_lib, 'load', stop)
  with pytest.raises(RuntimeError, match='stop before the data'):
    loop.train_and_evaluate(smoke_config(**{'seed': 12}), str(tmp_path / 'run'))
  assert len(calls) == 2 and specs.is_spec(calls[-1]) is False
  assert type(seen[0]).__name__ == 'DataSpec' and seen[0].name == 'synthetic'
  with pytest.raises(config_lib.ConfigError, match='latent_dim'):
    validation.spec(smoke_config(**{'model.latent_dim': 0}))
