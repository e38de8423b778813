"""A sweep's members from the command line: `--axis`, `--zip` and `--random N --seed S`.

  --axis KEY=V1,V2   values the preset (the config's get_sweep) has for KEY cut it to
                     those members; values it does not have set KEY to the listed values
                     for every other setting of the sweep (latent sizes 8 and 32 added to a
                     preset of 2 and 8); a KEY the preset does not vary is a new axis
                     (the product with its members). A config without get_sweep is the
                     one member of its base config, so --axis alone defines the grid.
  --zip              the --axis lists pair element by element (equal lengths; a single
                     value goes with every pair) instead of forming a product.
  --random N --seed S  N members drawn from the --axis ranges: log:LOW:HIGH (log-uniform),
                     uniform:LOW:HIGH, choice:V1,V2,...; numpy's generator seeded by S, so
                     the same command draws the same members (their overrides are recorded
                     in sweep.json, and SLURM tasks get the same flags).
"""

import itertools
import math

import numpy as np

from vae import config_lib

DISTRIBUTIONS = ('log', 'uniform', 'choice')


def members(base, preset, axes, parse, zipped=False, random=0, seed=0):
  """The override dicts of the sweep (see the module).

  Args:
    base: the sweep's base spec; preset: the get_sweep override dicts ([{}] without one).
    axes: {dotted key: [value strings]}; parse(key, text) -> a value typed like the field.
  Raises:
    ConfigError: a bad axis, unequal --zip lengths, a bad distribution.
  """
  if random:
    draws = _draws(base, axes, parse, random, seed)
    return _with(preset, list(axes), draws)
  if zipped and axes:
    lists = {k: [parse(k, t) for t in texts] for k, texts in axes.items()}
    lengths = {len(v) for v in lists.values()} - {1}  # one value goes with every pair
    config_lib.check(len(lengths) <= 1, f'--zip pairs axes of one length (or one value); got '
                     f'{ {k: len(v) for k, v in lists.items()} }')
    n = lengths.pop() if lengths else 1
    rows = [{k: v[i] if len(v) > 1 else v[0] for k, v in lists.items()} for i in range(n)]
    return _with(preset, list(lists), rows)
  out = list(preset)
  for key, texts in axes.items():
    wanted = [parse(key, t) for t in texts]
    current = config_lib.get_field(base, key)
    have = [_norm(o.get(key, current)) for o in out]
    if all(w in have for w in wanted) and any(key in o for o in out):
      out = [o for o, h in zip(out, have) if h in wanted]  # a cut of the preset
    else:
      out = _with(out, [key], [{key: w} for w in wanted])  # values set for every setting
  return out


def _norm(v):
  return tuple(v) if isinstance(v, list) else v


def _with(preset, keys, rows):
  """Every distinct setting of `preset` without `keys`, with each row of values; the keys in
  the preset's order (so member names read as the preset's do), new ones after."""
  order = list(dict.fromkeys([k for o in preset for k in o] + list(keys)))
  others = []
  for o in preset:
    rest = {k: v for k, v in o.items() if k not in keys}
    if rest not in others:
      others.append(rest)
  out = []
  for o, row in itertools.product(others or [{}], rows):
    merged = dict(o, **row)
    out.append({k: merged[k] for k in order if k in merged})
  return out


def _draws(base, axes, parse, n, seed):
  config_lib.check(axes, '--random N draws from --axis KEY=log:LOW:HIGH (or uniform:, '
                   'choice:); give at least one')
  rng = np.random.default_rng(seed)
  specs = {k: _distribution(k, ','.join(texts), parse, config_lib.get_field(base, k))
           for k, texts in axes.items()}
  return [{k: draw(rng) for k, draw in specs.items()} for _ in range(n)]


def _distribution(key, text, parse, current):
  kind, _, rest = text.partition(':')
  config_lib.check(kind in DISTRIBUTIONS and rest,
                   f'--axis {key}={text}: with --random give log:LOW:HIGH, uniform:LOW:HIGH or '
                   'choice:V1,V2,...')
  if kind == 'choice':
    values = [parse(key, t) for t in rest.split(',')]
    return lambda rng: values[int(rng.integers(len(values)))]
  try:
    low, high = (float(t) for t in rest.split(':'))
  except ValueError:
    raise config_lib.ConfigError(f'--axis {key}={text}: LOW:HIGH must be two numbers') from None
  config_lib.check(low < high and (kind == 'uniform' or low > 0),
                   f'--axis {key}={text}: need LOW < HIGH (and LOW > 0 for log)')
  config_lib.check(isinstance(current, (int, float)) and not isinstance(current, bool),
                   f'--axis {key}={text}: {kind} draws numbers; {key} is not a number field')
  cast = (lambda x: int(round(x))) if isinstance(current, int) else float
  if kind == 'log':
    return lambda rng: cast(float(math.exp(rng.uniform(math.log(low), math.log(high)))))
  return lambda rng: cast(float(rng.uniform(low, high)))


def flags(zipped=False, random=0, seed=0):
  """The command-line flags that give the same grid (SLURM tasks re-run the same command)."""
  out = ['--zip'] if zipped else []
  return out + (['--random', str(random), '--seed', str(seed)] if random else [])
