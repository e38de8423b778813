"""Workdirs saved by older versions, brought to the current layout (scripts/migrate.py).

config.json carries `schema_version` (config_lib.SCHEMA_VERSION). Version 1, a config.json
without it, is current when it names every field of config_lib.LEGACY_VALUES and every
checkpoint has the params + state layout; otherwise it needs two changes, which `migrate`
makes and nothing else in the library does any more:
  - the fields a run saved before they existed ran with their LEGACY_VALUES (float32
    binarization draws, norms averaged over the window, vmapped members, the autodiff
    Bernoulli): they are written into config.json (and each checkpoint's meta), so the run
    resumes as it started;
  - a checkpoint of the single-item layout (the whole TrainState in one 'state' item, no
    checksums) is restored with the run's own structure and saved again as 'params' +
    'state' items with checksums; the old step directory is kept aside until the new one
    restores, so an interrupted migration loses nothing and can be run again.
Loading or resuming a workdir that needs either is refused with one line naming the command
(`check_current`).
"""

import json
import pathlib
import shutil

import jax

from vae import config_lib, errors, specs
from vae.families import models, objective_families
from vae.training import checkpointing, metrics_io, optim, run_dir, step as step_lib

MIGRATION_DIR = '.migration'  # the workdir's scratch: new steps and the old ones kept aside


def _legacy_steps(workdir):
  ckpt = pathlib.Path(workdir) / 'checkpoints'
  if not ckpt.is_dir():
    return []
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit() and
                (p / 'state').is_dir() and not (p / 'params').exists())


def pending(workdir):
  """What a migration of `workdir` would change: a list of one-line reasons (empty: it is
  current)."""
  workdir = pathlib.Path(workdir)
  saved = run_dir.read_json(workdir / 'config.json')
  reasons = []
  missing = [k for k in config_lib.LEGACY_VALUES if k not in config_lib.flatten(saved)]
  if missing:
    reasons.append(f'config.json predates {", ".join(missing)}')
  steps = _legacy_steps(workdir)
  if steps:
    reasons.append(f'checkpoints {steps} have the single-item layout')
  if (workdir / MIGRATION_DIR).exists():
    reasons.append('a migration was interrupted')
  return reasons


def check_current(workdir):
  """Raises CheckpointError (one line naming the command) when `workdir` needs migrating."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'config.json').exists():
    return
  reasons = pending(workdir)
  if reasons:
    raise errors.CheckpointError(
        f'{workdir} was saved by an older version ({"; ".join(reasons)}); run python '
        f'scripts/migrate.py --workdir {workdir} (it keeps the run\'s numerics), then retry')


def migrated_config(saved):
  """The config.json dict of a migrated run: the LEGACY_VALUES of the fields it lacks, and
  the schema version."""
  out = json.loads(json.dumps(saved))
  flat = config_lib.flatten(saved)
  for key, value in config_lib.LEGACY_VALUES.items():
    if key not in flat:
      section, leaf = key.split('.')
      out.setdefault(section, {})[leaf] = value
  out['schema_version'] = config_lib.SCHEMA_VERSION
  return out


def _abstract_state(config, data_info):
  """The run's TrainState shapes (on this process's first device), built from its config."""
  image_shape, num_train = tuple(data_info['shape']), int(data_info['num_train'])
  spe = max(1, num_train // config.train.batch_size)
  model = models.build_model(config.model, image_shape, step_lib.compute_dtype(config))
  tx, _ = optim.make_optimizer(config.optim, spe, spe * 10)
  objective = objective_families.build(config.objective)
  keys = step_lib.root_keys(config.seed)
  shapes = jax.eval_shape(lambda: step_lib.init_state(
      model, tx, image_shape, keys, config.optim.ema_decay > 0, num_train, objective))
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)


def _convert_step(workdir, step, abstract, config_dict):
  """Rewrites checkpoint `step` in the params + state layout; returns the step kept aside."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  ckpt_dir = workdir / 'checkpoints'
  old = ckpt_dir / str(step)
  fields = ('step', 'params', 'opt_state', 'ema_params', 'rng')
  target = {k: getattr(abstract, k) for k in fields}
  state = step_lib.TrainState(**ocp.StandardCheckpointer().restore(old / 'state', target))
  meta = checkpointing.read_json_item(old, 'meta')
  meta['config'] = config_dict
  metrics_file = old / 'metrics' / 'metrics'
  metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
  scratch = workdir / MIGRATION_DIR / f'new_{step}'
  shutil.rmtree(scratch, ignore_errors=True)
  writer = checkpointing.Checkpointer(scratch, keep=1)
  writer.save(step, state, meta, metrics.get(checkpointing.BEST_METRIC))
  writer.close()
  aside = workdir / MIGRATION_DIR / 'old' / str(step)
  aside.parent.mkdir(parents=True, exist_ok=True)
  old.rename(aside)
  (scratch / str(step)).rename(old)
  shutil.rmtree(scratch)
  return aside


def migrate(workdir, dry_run=False):
  """Brings `workdir` to the current layout (see the module's docstring); returns the list of
  changes made (or, with `dry_run`, that would be)."""
  workdir = pathlib.Path(workdir)
  if not (workdir / 'config.json').exists():
    raise errors.CheckpointError(f'{workdir} has no config.json: not a training workdir')
  saved = run_dir.read_json(workdir / 'config.json')
  new = migrated_config(saved)
  changes = [f'config.json: {k}={v!r} (the value this run was saved with)'
             for k, v in config_lib.LEGACY_VALUES.items()
             if k not in config_lib.flatten(saved)]
  if saved.get('schema_version') != config_lib.SCHEMA_VERSION:
    changes.append(f'config.json: schema_version={config_lib.SCHEMA_VERSION}')
  steps = _legacy_steps(workdir)
  changes += [f'checkpoints/{s}: single-item layout -> params + state with checksums'
              for s in steps]
  if dry_run or not changes and not (workdir / MIGRATION_DIR).exists():
    return changes
  config = config_lib.with_saved_values(new)
  data_info = run_dir.read_json(workdir / 'data.json')
  abstract = _abstract_state(specs.freeze(config), data_info)
  kept = [_convert_step(workdir, s, abstract, new) for s in steps]
  reader = checkpointing.Checkpointer(workdir / 'checkpoints', keep=10 ** 6)
  for s in steps:  # each new step restores before the old one is deleted
    reader.restore(s, abstract)
  reader.close()
  metrics_io.write_json(workdir / 'config.json', new)
  for path in kept:
    shutil.rmtree(path)
  shutil.rmtree(workdir / MIGRATION_DIR, ignore_errors=True)
  return changes
