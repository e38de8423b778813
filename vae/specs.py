"""Frozen typed specs: the config as everything below the entry reads it.

The entry (train.py, scripts/, vae/commands, and the library's own entry points
`train_and_evaluate`, `train_members`, `vae.load`) parses a config file into a ConfigDict
and turns it into a `Spec` once (`freeze`; `validation.spec` also validates it, once).
Below the entry no module imports ml_collections: the code takes specs.

A spec is a frozen dataclass: one field per top-level key (`seed`, `schema_version`) and
one frozen section dataclass per section (`spec.model.latent_dim`), each field typed by
the schema's default (config_lib.SCHEMA and the families' `declare`d fields). Lists become
tuples, an int given for a float field becomes a float, and any other type is a
ConfigError naming the field. Specs are hashable and compare by value; a changed copy is
`with_fields(spec, {'model.latent_dim': 8})` (unknown fields are errors).

Sections also read like a mapping (`section['latent_dim']`, `get`, `in`, `to_dict`), so
that generic code (family-declared fields, config.json) needs no second path.
"""

import dataclasses
import functools
import math

from vae import config_lib

ConfigError = config_lib.ConfigError


class _Node:
  """Read access shared by a spec and its sections."""

  def __getitem__(self, key):
    if key not in self:
      raise KeyError(key)
    return getattr(self, key)

  def get(self, key, default=None):
    return getattr(self, key) if key in self else default

  def __contains__(self, key):
    return key in self.keys()

  def keys(self):
    return tuple(f.name for f in dataclasses.fields(self))

  def items(self):
    return tuple((k, getattr(self, k)) for k in self.keys())

  def to_dict(self):
    """Nested plain dicts (tuples kept), like ConfigDict.to_dict."""
    return {k: v.to_dict() if isinstance(v, _Node) else v for k, v in self.items()}

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if f.type is float and isinstance(value, int) and not isinstance(value, bool):
        object.__setattr__(self, f.name, float(value))
      elif not isinstance(value, f.type) or (f.type is int and isinstance(value, bool)):
        raise ConfigError(f'{_prefix(self)}{f.name}={value!r} should be '
                          f'{_KINDS.get(f.type, f.type.__name__)}; give one')


_KINDS = {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string',
          tuple: 'a list'}


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
  """Each field of a config (or spec) has its schema's kind (numbers in lists too), floats
  are finite and seeds are non-negative integers: ConfigError naming the field."""
  check = config_lib.check
  schema = config_lib.flatten(config_lib.config_json(config_lib.base_config()))
  for key, value in config_lib.flatten(config_lib.config_json(c)).items():
    if key in config_lib.NUMBER_OR_AUTO:
      check(value == 'auto' or _kind(value) == 'a number',
            f"{key}={value!r} should be 'auto' or a number")
      value = float('nan') if value == 'auto' else value
    elif key in schema and schema[key] is not None:
      want = _kind(schema[key])
      check(_kind(value) == want, f'{key}={value!r} should be {want} (like {schema[key]!r})')
      if isinstance(value, list) and schema[key]:
        inner = _kind(schema[key][0])
        check(all(_kind(v) == inner for v in value),
              f'{key}={value!r} should hold {inner.split(" ", 1)[1]}s (like {schema[key]!r})')
    if isinstance(value, float) and key not in config_lib.NUMBER_OR_AUTO:
      check(math.isfinite(value), f'{key}={value} is not a finite number; give a finite value')
    if key == 'seed' or key.endswith('_seed') or key == 'data.seed':
      check(isinstance(value, int) and value >= 0, f'{key}={value!r} must be an integer >= 0')


def _prefix(node):
  section = getattr(type(node), 'section', '')
  return f'{section}.' if section else ''


def _type_of(value):
  if isinstance(value, (list, tuple)):
    return tuple
  if value is None:
    return object
  return type(value)


@functools.lru_cache(maxsize=None)
def _section_type(section, fields):
  """The frozen dataclass of a section with these (leaf, type) fields."""
  name = f'{section.capitalize()}Spec' if section else 'Spec'
  cls = dataclasses.make_dataclass(name, list(fields), bases=(_Node,), frozen=True)
  cls.section = section
  cls.__module__ = __name__
  return cls


def _schema_types():
  flat = config_lib.flatten(config_lib.config_json(config_lib.base_config()))
  return {k: object if k in config_lib.NUMBER_OR_AUTO else _type_of(v)
          for k, v in flat.items()}


def _frozen_value(value):
  return tuple(_frozen_value(v) for v in value) if isinstance(value, (list, tuple)) else value


def is_spec(config):
  """Whether `config` is already a frozen spec."""
  return isinstance(config, _Node) and not getattr(type(config), 'section', '')


def freeze(config):
  """The frozen spec of a ConfigDict, a spec (returned as is) or a config.json dict."""
  if is_spec(config):
    return config
  d = config if isinstance(config, dict) else config.to_dict()
  types = _schema_types()

  def build(section, values):
    fields, args = [], {}
    for key, value in sorted(values.items()):  # one class per field set, whatever the order
      dotted = f'{section}.{key}' if section else key
      if isinstance(value, dict) or hasattr(value, 'to_dict'):
        node = build(dotted, value if isinstance(value, dict) else value.to_dict())
        fields.append((key, type(node)))
        args[key] = node
      else:
        fields.append((key, types.get(dotted, _type_of(value))))
        args[key] = _frozen_value(value)
    return _section_type(section, tuple(fields))(**args)

  return build('', d)


def with_fields(spec, changes):
  """A copy of `spec` with dotted fields changed; ConfigError naming an unknown field."""
  spec = freeze(spec)
  nested = {}
  for dotted, value in changes.items():
    *path, leaf = dotted.split('.')
    node = spec
    for name in path:
      node = node.get(name)
      if not isinstance(node, _Node):
        break
    if not isinstance(node, _Node) or leaf not in node or isinstance(node[leaf], _Node):
      raise ConfigError(f'{dotted!r} is not a config field')
    nested.setdefault(tuple(path), {})[leaf] = _frozen_value(value)

  def rebuild(node, path):
    updates = dict(nested.get(path, {}))
    for key, value in node.items():
      if isinstance(value, _Node) and any(p[:len(path) + 1] == path + (key,) for p in nested):
        updates[key] = rebuild(value, path + (key,))
    return dataclasses.replace(node, **updates) if updates else node

  return rebuild(spec, ())
