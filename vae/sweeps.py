"""Sweeps: expanding `get_sweep(arg)` override lists, naming members, tracking status.

A config file may define `get_sweep(arg)` next to `get_config(arg)`, returning a
list of override dicts built with `product` and `zip_axes`, e.g.

    def get_sweep(arg=None):
      return sweeps.product(**{'model.latent_dim': [2, 5, 10, 20],
                               'objective.beta': [0.5, 1.0, 2.0, 4.0],
                               'seed': [0, 1, 2]})

scripts/sweep.py turns it into runs under ROOT/<member name>/ and keeps
ROOT/sweep.json with each member's overrides, directory and status.
"""

import itertools
import json
import pathlib

import ml_collections

from vae import config_lib, metrics_io


def product(**axes):
  """Cartesian product of the axes: product(a=[1, 2], b=[3]) -> [{a:1,b:3}, {a:2,b:3}]."""
  keys = list(axes)
  return [dict(zip(keys, values)) for values in itertools.product(*(axes[k] for k in keys))]


def zip_axes(**axes):
  """Element-wise pairing of equally long axes."""
  lengths = {len(v) for v in axes.values()}
  if len(lengths) > 1:
    raise config_lib.ConfigError(f'zip_axes needs axes of one length, got {lengths}')
  keys = list(axes)
  return [dict(zip(keys, values)) for values in zip(*(axes[k] for k in keys))]


def member_name(overrides):
  """A directory name from the overrides: 'latent_dim=2,beta=0.5,seed=0'."""
  if not overrides:
    return 'base'
  return ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items())


def apply_overrides(config, overrides):
  """A locked copy of `config` with dotted-key overrides; unknown keys are errors."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    node = c
    *path, last = key.split('.')
    try:
      for p in path:
        node = node[p]
      current = node[last]
    except KeyError:
      raise config_lib.ConfigError(f'sweep override {key!r} is not a config field') from None
    if isinstance(current, float) and isinstance(value, int):
      value = float(value)
    node[last] = value
  c.lock()
  return c


def is_finished(workdir, config):
  """Whether a member's run has finished at its configured length."""
  done = pathlib.Path(workdir) / 'done.json'
  if not done.exists():
    return False
  return json.loads(done.read_text()).get('num_epochs') == config.train.num_epochs


class SweepRecord:
  """ROOT/sweep.json: the members, their overrides, directories and statuses."""

  def __init__(self, root, config_arg, members):
    self.path = pathlib.Path(root) / 'sweep.json'
    self.data = {'config': config_arg,
                 'members': [{'name': member_name(o), 'overrides': o, 'status': 'pending',
                              'workdir': str(pathlib.Path(root) / member_name(o))}
                             for o in members]}
    if self.path.exists():
      old = {m['name']: m for m in json.loads(self.path.read_text()).get('members', [])}
      for m in self.data['members']:
        if m['name'] in old:
          m['status'] = old[m['name']]['status']

  def set(self, name, status, **extra):
    for m in self.data['members']:
      if m['name'] == name:
        m['status'] = status
        m.update(extra)
    self.save()

  def save(self):
    self.path.parent.mkdir(parents=True, exist_ok=True)
    metrics_io.write_json(self.path, self.data)
