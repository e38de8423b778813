"""A sweep's plan: its members from `get_sweep(arg)` and the command line (`expand`: the
--config overrides, the --axis cut, each config validated), their names and directories
(`member_name`, `member_dir`), how they group under vmap (`vmap_groups`) and which units an
array task runs (`units_of`, `task_from_environment`). Nothing here writes a file."""

import hashlib
import importlib.util
import pathlib
import re
import string


from vae import config_lib, settings, specs
from vae.families import models
from vae.sweeps import grid
from vae.training import validation


NAME_SAFE = frozenset(string.ascii_letters + string.digits + '=,._+-()[] ')

NAME_MAX_BYTES = 200

def natural_key(name):
  """A sort key under which member names list as a reader expects: numbers by value, so
  latent_dim=2, latent_dim=8, latent_dim=32 (not 2, 32, 8); other text as it is."""
  parts = re.split(r'(-?\d+(?:\.\d+)?(?:e-?\d+)?)', name)
  return [(0, float(p), '') if i % 2 else (1, 0.0, p) for i, p in enumerate(parts)]


def member_name(overrides):
  """A directory name from the overrides: 'latent_dim=2,beta=0.5,seed=0'.

  One path component made of NAME_SAFE characters: any other character (a '/', '..' after
  one, a newline, '%') is written as %XX of its UTF-8 bytes, so a value can never name a
  directory outside the sweep's root, and names differ when overrides differ. A name longer
  than NAME_MAX_BYTES keeps its start and ends in a hash of the whole.
  """
  if not overrides:
    return 'base'
  raw = ','.join(f'{k.split(".")[-1]}={v}' for k, v in overrides.items())
  name = ''.join(ch if ch in NAME_SAFE else ''.join(f'%{b:02X}' for b in ch.encode())
                 for ch in raw)
  if len(name) > NAME_MAX_BYTES:
    name = name[:NAME_MAX_BYTES - 17] + '~' + hashlib.sha256(raw.encode()).hexdigest()[:16]
  return name


def member_dir(root, name):
  """ROOT/<name>, refused with one line unless `name` is one plain component of safe
  characters and the directory (if it exists) is a real directory, not a link, so that
  nothing a sweep writes lies outside its root."""
  root = pathlib.Path(root)
  if (not isinstance(name, str) or name in ('', '.', '..') or len(name) > NAME_MAX_BYTES
      or not set(name) <= NAME_SAFE | {'%', '~'}):
    raise config_lib.ConfigError(
        f'sweep member name {name!r} is not one plain directory name; member names come from '
        f'vae.sweeps.runner.member_name: repair or remove {root / "sweep.json"} and rerun')
  path = root / name
  if path.is_symlink() or (path.exists() and not path.is_dir()):
    raise config_lib.ConfigError(f'{path} is not a directory inside {root} (a link or a file); '
                                 'remove it and rerun')
  return path


def apply_overrides(config, overrides):
  """The frozen spec of `config` (a ConfigDict or a spec) with dotted-key overrides;
  unknown keys are errors."""
  for key in overrides:
    _field(config, key, 'sweep override')
  return specs.with_fields(config, overrides)


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


def parse_config_overrides(args):
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
      raise config_lib.ConfigError(f'--config.{key} is given twice ({out[key]!s} and {value!s}); give it '
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


def load_config_module(spec):
  """(module, arg) of a config spec 'configs/x.py[:arg]' (`resolve_config_spec`)."""
  path, _, arg = resolve_config_spec(spec).partition(':')
  path = pathlib.Path(path)
  if not path.is_file():
    raise config_lib.ConfigError(f'config file {path} not found')
  mod_spec = importlib.util.spec_from_file_location(f'sweep_config_{path.stem}', path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module, arg or None


def vmap_groups(configs):
  """Member indices grouped by everything a vmapped program cannot stack, in sweep order."""
  groups = {}
  for i, c in enumerate(configs):
    flat = config_lib.flatten(config_lib.config_json(c))
    fields = models.vmappable_fields(c)
    key = tuple(sorted((k, str(v)) for k, v in flat.items() if k not in fields))
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def task_from_environment(task_index=None, num_tasks=None):
  """(task index, number of tasks): the flags, else a scheduler's array variables
  (SLURM: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN of SLURM_ARRAY_TASK_COUNT; Kubernetes
  indexed jobs: JOB_COMPLETION_INDEX with --num_tasks), else (0, 1)."""
  if task_index is None:
    task_index, env_tasks = settings.array_task()
    num_tasks = num_tasks or env_tasks
  task_index, num_tasks = task_index or 0, num_tasks or 1
  if not 0 <= task_index < num_tasks:
    raise config_lib.ConfigError(f'--task_index {task_index} is not in [0, {num_tasks}) '
                                 '(--num_tasks); give 0 <= index < tasks')
  return task_index, num_tasks


def units_of(configs, unit):
  """The sweep's units in order: one member each, or one vmap group each."""
  if unit == 'member':
    return [[i] for i in range(len(configs))]
  if unit == 'group':
    return vmap_groups(configs)
  raise config_lib.ConfigError(f'unknown --unit {unit!r}; choose member or group')


def parse_value(key, text, current):
  """A command-line string typed like the config field's current value."""
  try:
    if isinstance(current, bool):
      if text.lower() not in ('1', '0', 'true', 'false', 'yes', 'no'):
        raise ValueError
      return text.lower() in ('1', 'true', 'yes')
    if isinstance(current, int):
      return int(text)
    if isinstance(current, float):
      return float(text)
    if isinstance(current, (tuple, list)):
      items = [t for t in text.strip('()[]').split(',') if t.strip()]
      kind = type(current[0]) if current else str
      return tuple(kind(t.strip()) for t in items)
  except ValueError:
    raise config_lib.ConfigError(f'{key}={text!r} is not a {type(current).__name__} like '
                                 f'{current!r}') from None
  return text


def _field(config, key, what):
  flat = config_lib.flatten(config_lib.config_json(config))
  if key not in flat:
    raise config_lib.ConfigError(f'{what} {key!r} is not a config field')
  return config_lib.get_field(config, key)


def expand(config_spec, axes=None, config_overrides=None, zipped=False, random=0, seed=0):
  """The sweep's members: (override dicts, configs, names, the --config overrides, the base
  spec with them), after the --config overrides and the grid of the command line
  (vae/sweeps/grid.py: --axis, --zip, --random N --seed S), each config validated.

  Raises:
    ConfigError: a bad spec, override or axis.
  """
  module, arg = load_config_module(config_spec)
  if not hasattr(module, 'get_sweep') and not axes:
    raise config_lib.ConfigError(f'{config_spec} defines no get_sweep(arg); add one returning a '
                                 'list of override dicts (vae/sweeps/runner.py), or give the '
                                 'grid with --axis KEY=V1,V2')
  base = module.get_config(arg)
  overrides = module.get_sweep(arg) if hasattr(module, 'get_sweep') else [{}]
  fixed = {k: parse_value(k, v, _field(base, k, '--config.'))
           for k, v in (config_overrides or {}).items()}
  clash = sorted({k for o in overrides for k in o} & set(fixed))
  if clash:
    raise config_lib.ConfigError(f'--config.{clash[0]} is an axis of this sweep; cut it with '
                                 f'--axis {clash[0]}=... instead')
  base = apply_overrides(base, fixed)
  parse = lambda key, text: parse_value(key, text, _field(base, key, '--axis'))
  overrides = grid.members(base, overrides, axes or {}, parse, zipped, random, seed)
  config_lib.check(overrides, 'the grid has no member; check the --axis values')
  configs = [apply_overrides(base, o) for o in overrides]
  names = [member_name(o) for o in overrides]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError('sweep members have duplicate names; vary at least one field')
  configs = [validation.spec(c) for c in configs]
  return overrides, configs, names, fixed, base
