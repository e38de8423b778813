"""Orbax checkpoints of the train state, and the resume order.

Layout: WORKDIR/checkpoints/<step>/{params,state,meta}. `params` holds the
parameters evaluation uses (the EMA parameters when the run keeps an EMA), on
their own so that `vae.load` restores nothing else; `state` holds the rest of
the TrainState (step, optimizer state, loop key, and the raw parameters when
`params` holds the EMA), so no array is stored twice. `meta` is JSON with the
config and the data description, used to refuse a checkpoint from another
architecture or dataset. Checkpoints written before this layout hold the whole
TrainState in `state` and still restore. The manager keeps the latest `keep`
checkpoints and the best one by validation ELBO.

Resume order (the one place it is written down):
  1. the newest step at which every training member (one, for a single run)
     has a checkpoint whose meta matches and whose arrays restore (a member's
     steps newer than it, saved before a kill reached the others, are moved aside
     to <step>.uncommitted-<time>, so the group trains and saves them again); a member's
     checkpoint that fails to restore (truncated, corrupted) is moved aside to
     <step>.corrupt-<time> (kept for inspection, never deleted) with a
     warning, and the previous common step is tried; a member that stopped
     early restores its own newest checkpoint;
  2. else a fresh state from config.seed.
Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a kill during a write leaves the previous checkpoints intact; a
group saves its members one after another and keeps at least two checkpoints
each, so a kill between two members' saves leaves a common step behind.
"""

import hashlib
import json
import math
import logging
import os
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

from vae import errors
from vae import config_lib
from vae.training import orbax_reports
from vae.training.step import TrainState

BEST_METRIC = 'val_elbo'
log = logging.getLogger('vae')
orbax_reports.quiet_orbax_reports()


class _CheckpointWithoutMetric(logging.Filter):
  """Orbax warns at every save without a ranking metric (those between evaluations, which
  are never the best by design): once per save is noise, so that warning is dropped."""

  def filter(self, record):
    return 'did not provide metrics' not in record.getMessage()


logging.getLogger('absl').addFilter(_CheckpointWithoutMetric())
ITEMS = ('params', 'state', 'meta', 'checksums')


ChecksumError = errors.ChecksumError


def tree_checksums(tree):
  """{leaf path: sha256 of dtype, shape and bytes} for every fully addressable array.

  Arrays split across processes (not fully addressable here) are left out: each
  process can only read its own shards, which change with the device count.
  """
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      continue
    a = np.ascontiguousarray(np.asarray(leaf))
    h = hashlib.sha256(f'{a.dtype.str}{a.shape}'.encode())
    h.update(a.tobytes())
    out[jax.tree_util.keystr(path)] = h.hexdigest()
  return out


def verify_checksums(saved, restored, where):
  """Raises ChecksumError naming the first array whose restored bytes differ."""
  for key, digest in tree_checksums(restored).items():
    if key in saved and saved[key] != digest:
      raise ChecksumError(f'{where}: array {key} does not match its checksum')


CheckpointError = errors.CheckpointError


def _best_metric(metrics):
  return metrics[BEST_METRIC]


def committed_traces(directory):
  """Names of the entries in a checkpoint directory that show a checkpoint was committed
  there: step directories (or files in their place) and steps moved aside as corrupt. Not an
  orbax temporary of a save that never finished, nor a step set aside as uncommitted by its
  group."""
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    return []
  return sorted(p.name for p in directory.iterdir()
                if p.name.isdigit() or re.fullmatch(r'\d+\.corrupt-\d+', p.name))


def no_restorable_step_error(directory, traces):
  """The refusal for a directory where steps were committed but none restores."""
  shown = ', '.join(traces[:4]) + (f' (+{len(traces) - 4} more)' if len(traces) > 4 else '')
  return CheckpointError(
      f'no checkpoint in {directory} restores, though steps were saved there ({shown}; '
      'damaged ones are kept as <step>.corrupt-<time>); to start this run over, move its '
      'workdir aside or use a new --workdir')


class Checkpointer:
  """Saves and restores (state, meta) with orbax's CheckpointManager."""

  def __init__(self, directory, keep=3, hooks=None):
    """`hooks`: the tests' `settings.FaultHooks` (None: none)."""
    self.directory = pathlib.Path(directory).absolute()
    self.hooks = hooks
    policy = ocp_policies.AnyPreservationPolicy([
        ocp_policies.LatestN(n=keep),
        ocp_policies.BestN(get_metric_fn=_best_metric, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        best_fn=_best_metric, best_mode='max', preservation_policy=policy,
        enable_async_checkpointing=False, create=True)
    self._set_aside_impostors()
    # Orbax reads every step's metadata while it is constructed; a step whose metadata
    # is damaged is moved aside (as one that fails to restore) and construction retried.
    for _ in range(100):
      try:
        self.manager = ocp.CheckpointManager(self.directory, options=options,
                                             item_names=ITEMS)
        break
      except Exception as e:  # pylint: disable=broad-except
        bad = self._unreadable_step()
        if bad is None:
          raise CheckpointError(f'cannot open the checkpoints in {self.directory} '
                                f'({type(e).__name__}: {_first_line(e)}); move that directory '
                                'aside or use a new --workdir') from None
        self._move_aside(bad, e)

  def save(self, step, state, meta, val_elbo=None):
    """Saves synchronously; `val_elbo` (nats per example) ranks the best checkpoint."""
    if self.hooks is not None:
      self.hooks.before_save(step)
    metrics = None if val_elbo is None else {BEST_METRIC: float(val_elbo)}
    params, rest = split_state(state)
    sums = {'params': tree_checksums(params), 'state': tree_checksums(rest)}
    self.manager.save(int(step), args=ocp.args.Composite(
        params=ocp.args.StandardSave(params), state=ocp.args.StandardSave(rest),
        meta=ocp.args.JsonSave(meta), checksums=ocp.args.JsonSave(sums)),
                      metrics=metrics, force=True)
    self.manager.wait_until_finished()

  def steps(self):
    self.manager.reload()
    return sorted(self.manager.all_steps())

  def latest_step(self):
    steps = self.steps()
    return steps[-1] if steps else None

  def best_step(self):
    self.manager.reload()
    return CheckpointReader(self.directory).best_step()

  def restore_meta(self, step):
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step, abstract_state):
    """Restores the TrainState at `step` onto the shardings of `abstract_state`."""
    if not (self.directory / str(step) / 'params').exists():
      raise CheckpointError(
          f'{self.directory / str(step)} has the single-item layout of an older version; run '
          f'python scripts/migrate.py --workdir {self.directory.parent}')
    params, rest = split_state(abstract_state)
    out = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params), state=ocp.args.StandardRestore(rest),
        meta=ocp.args.JsonRestore()))
    self._verify(step, {'params': out['params'], 'state': out['state']})
    return join_state(out['params'], out['state']), out['meta']

  def _verify(self, step, items):
    """Checks restored items against the checksums saved with the step (ChecksumError)."""
    path = self.directory / str(step) / 'checksums'
    if not path.exists():
      log.warning('checkpoint %s predates checksums: restored without verification',
                      self.directory / str(step))
      return
    saved = read_json_item(self.directory / str(step), 'checksums')
    for name, tree in items.items():
      verify_checksums(saved.get(name, {}), tree, self.directory / str(step) / name)

  def restore_at(self, step, abstract_state, expected_meta):
    """The state at `step` after checking its meta; a damaged step is moved aside.

    Returns:
      (state, meta), or None when the step could not be read (it was set aside).
    Raises:
      CheckpointError: the checkpoint belongs to another model or dataset.
    """
    try:
      meta = self.restore_meta(step)
    except Exception as e:  # pylint: disable=broad-except
      self.set_aside(step, e)
      return None
    check_compatible(meta, expected_meta, self.directory / str(step))
    try:
      return self.restore(step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      self.set_aside(step, e)
      return None

  def restore_latest(self, abstract_state, expected_meta):
    """Step 1 of the resume order for one run. Returns (state, meta, step) or None.

    Raises:
      CheckpointError: a checkpoint exists but belongs to another model or
        dataset (never silently skipped: that would start over and lose work).
    """
    for step in reversed(self.steps()):
      out = self.restore_at(step, abstract_state, expected_meta)
      if out is not None:
        return out[0], out[1], step
    return None

  def committed_traces(self):
    return committed_traces(self.directory)

  def set_aside_newer(self, step):
    """Moves every checkpoint newer than `step` to <step>.uncommitted-<time> (kept, never
    deleted): steps this member saved but not every member of its group did, so that the
    group trains them again from `step` and saves them anew."""
    newer = [s for s in self.steps() if s > step]
    for s in newer:
      dst = self._rename_aside(s, 'uncommitted')
      log.warning('checkpoint %s was not saved by every member of its group; moved to %s, '
                  'the group resumes at step %d', self.directory / str(s), dst.name, step)
    if newer:
      self.manager.reload()

  def set_aside(self, step, error):
    """Moves an unrestorable checkpoint out of the manager's sight, keeping its files."""
    self._move_aside(step, error)
    self.manager.reload()

  def _move_aside(self, step, error):
    dst = self._rename_aside(step, 'corrupt')
    log.warning('checkpoint %s cannot be restored (%s: %s); moved to %s, falling back to '
                    'the previous checkpoint', self.directory / str(step),
                    type(error).__name__, _first_line(error), dst.name)

  def _rename_aside(self, step, why):
    """Renames step's directory to <step>.<why>-<time> (the chief process does; kept, never
    deleted) and returns the new path."""
    src = self.directory / str(step)
    dst = self.directory / f'{step}.{why}-{int(time.time())}'
    if jax.process_index() == 0 and (src.exists() or src.is_symlink()):
      os.rename(src, dst)
    return dst

  def _set_aside_impostors(self):
    """A step entry that is a file, or a link (to another step, say: it would load as that
    step), is no checkpoint: moved to <step>.corrupt-<time> (kept) with one warning, so
    that the resume takes the previous real step and a save never writes through it."""
    if not self.directory.is_dir():
      return
    for p in sorted(self.directory.iterdir()):
      if p.name.isdigit() and (p.is_symlink() or not p.is_dir()):
        kind = 'a link' if p.is_symlink() else 'a file'
        dst = self._rename_aside(int(p.name), 'corrupt')
        log.warning('checkpoint %s is %s, not a checkpoint directory; moved to %s, the resume '
                    'takes the previous step', p, kind, dst.name)

  def _unreadable_step(self):
    """The newest step whose orbax metadata files do not parse, or None."""
    steps = sorted((int(p.name) for p in self.directory.iterdir() if p.name.isdigit()),
                   reverse=True) if self.directory.exists() else []
    for step in steps:
      root = self.directory / str(step)
      for f in [root / '_CHECKPOINT_METADATA'] + list(root.glob('*/metrics')) + list(
          root.glob('metrics/*')):
        if f.is_file():
          try:
            json.loads(f.read_text())
          except (ValueError, UnicodeDecodeError, OSError):
            return step
    return None

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def read_json_item(step_dir, item):
  """A JSON item of a saved step (orbax's JsonSave layout: ITEM/metadata), read directly."""
  return json.loads((pathlib.Path(step_dir) / item / 'metadata').read_text())


class CheckpointReader:
  """Read-only access to a workdir's checkpoints (what `vae.load` uses): never moves,
  writes or deletes anything, and a step with damaged files is only skipped or refused.
  """

  def __init__(self, directory):
    self.directory = pathlib.Path(directory).absolute()

  def steps(self):
    """Steps whose save completed (orbax's commit marker), oldest first."""
    if not self.directory.is_dir():
      return []
    return sorted(int(p.name) for p in self.directory.iterdir()
                  if p.name.isdigit() and (p / '_CHECKPOINT_METADATA').is_file())

  def best_step(self):
    """The step with the highest validation ELBO among readable ones (None if none has it).
    A step whose metric file is there but damaged is named in one warning (it would
    otherwise drop out of the choice unseen)."""
    scored, damaged = [], []
    for step in self.steps():
      path = self.directory / str(step) / 'metrics' / 'metrics'
      if not path.is_file():
        continue  # saved without an evaluation at its step
      try:
        value = float(json.loads(path.read_text())[BEST_METRIC])
        if not math.isfinite(value):
          raise ValueError(f'{value}')
        scored.append((value, step))
      except (OSError, ValueError, KeyError, TypeError) as e:
        damaged.append(f'{step} ({type(e).__name__})')
    if damaged:
      log.warning('the validation metric of checkpoint %s in %s is damaged; best is chosen '
                  'among the %d steps whose metric reads', ', '.join(damaged), self.directory,
                  len(scored))
    return max(scored)[1] if scored else None

  def restore_params(self, step, sharding):
    """Only the parameters evaluation uses (EMA when kept), placed with `sharding`, verified
    against the step's checksums. Shapes come from the checkpoint itself."""
    step_dir = self.directory / str(step)
    if not (step_dir / 'params').exists():
      raise CheckpointError(f'{step_dir} has the single-item layout of an older version; run '
                            f'python scripts/migrate.py --workdir {self.directory.parent}')
    item = 'params'
    handler = ocp.StandardCheckpointHandler()
    tree = handler.metadata(step_dir / item)
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=sharding),
                            tree)
    out = handler.restore(step_dir / item, args=ocp.args.StandardRestore(abstract))
    if (step_dir / 'checksums').exists():
      verify_checksums(read_json_item(step_dir, 'checksums').get(item, {}), out,
                       step_dir / item)
    else:
      log.warning('checkpoint %s predates checksums: restored without verification', step_dir)
    return out

  def restore_prior_state(self, step):
    """The prior's state saved at `step` ({} when it has none), as jax arrays, verified
    against the step's checksums of the 'state' item."""
    step_dir = self.directory / str(step)
    handler = ocp.StandardCheckpointHandler()
    tree = handler.metadata(step_dir / 'state')
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree)
    out = handler.restore(step_dir / 'state', args=ocp.args.StandardRestore(abstract))
    if (step_dir / 'checksums').exists():
      verify_checksums(read_json_item(step_dir, 'checksums').get('state', {}), out,
                       step_dir / 'state')
    return jax.tree.map(jnp.asarray, out.get('prior_state', {}))


def _first_line(error):
  text = str(error)
  return text.splitlines()[0][:200] if text else ''


def check_compatible(meta, expected, where):
  """Raises CheckpointError if the checkpoint's model or data differ from this run's."""
  # Fields added to the schema after the checkpoint was written take their defaults, which
  # reproduce the older behaviour (config_lib.with_saved_values).
  got = config_lib.flatten(config_lib.config_json(
      config_lib.with_saved_values(meta.get('config', {}))))
  want = config_lib.flatten(expected['config'])
  for key in config_lib.structural_fields():
    a, b = got.get(key), want.get(key)
    if a != b:
      raise CheckpointError(
          f'checkpoint {where} has {key}={a!r} but this config has {b!r}; use the '
          'config it was trained with or a new --workdir')
  got_data, want_data = meta.get('data', {}), expected['data']
  for key in ('name', 'shape'):
    if got_data.get(key) != want_data.get(key):
      raise CheckpointError(
          f'checkpoint {where} was trained on data {key}={got_data.get(key)!r} but this run '
          f'has {want_data.get(key)!r}; use the matching data config or a new --workdir')


def split_state(state):
  """TrainState -> (params item, rest item): the evaluation parameters and everything else."""
  rest = {'step': state.step, 'opt_state': state.opt_state, 'rng': state.rng}
  if state.prior_state:  # the prior's state (priors.Prior.init_state; {} for most priors)
    rest['prior_state'] = state.prior_state
  if state.objective_state:  # the objective's auxiliary parameters and optimizer state
    rest['objective_state'] = state.objective_state
  if state.ema_params:
    rest['params'] = state.params
    return state.ema_params, rest
  return state.params, rest


def join_state(params, rest):
  """The inverse of `split_state`."""
  extra = {k: rest.get(k, {}) for k in ('prior_state', 'objective_state')}
  if 'params' in rest:
    return TrainState(step=rest['step'], params=rest['params'], opt_state=rest['opt_state'],
                      ema_params=params, rng=rest['rng'], **extra)
  return TrainState(step=rest['step'], params=params, opt_state=rest['opt_state'],
                    ema_params={}, rng=rest['rng'], **extra)


def restore_group(ckpts, abstracts, metas, frozen=()):
  """Step 1 of the resume order for members trained together (one member: a single run).

  Args:
    ckpts: one Checkpointer per member.
    abstracts: each member's abstract TrainState (shapes and shardings).
    metas: each member's expected meta.
    frozen: indices of members that stopped early (each restores its own newest).

  Returns:
    (list of member states, step) or None for a fresh start.
  """
  training = [i for i in range(len(ckpts)) if i not in frozen]
  while training:
    common = set.intersection(*(set(ckpts[i].steps()) for i in training))
    if not common:  # a fresh start: steps some members saved are trained and saved again
      for i in training:
        ckpts[i].set_aside_newer(-1)
      return None
    step = max(common)
    states = {}
    for i in training:
      out = ckpts[i].restore_at(step, abstracts[i], metas[i])
      if out is None:
        break
      states[i] = out[0]
    else:
      for i in training:  # a kill between two members' saves of one step leaves it on some
        ckpts[i].set_aside_newer(step)
      for i in frozen:
        out = ckpts[i].restore_latest(abstracts[i], metas[i])
        if out is None:
          raise CheckpointError(f'{ckpts[i].directory} has no readable checkpoint of its '
                                'finished run; remove its done.json to train it again')
        states[i] = out[0]
      return [states[i] for i in range(len(ckpts))], step
  return None


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a concrete pytree."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)
