"""Orbax checkpoints of the train state, and the resume order.

Layout: WORKDIR/checkpoints/<step>/{state,meta}. `state` is the TrainState
pytree; `meta` is JSON with the config and the data description, used to
refuse a checkpoint from another architecture or dataset. The manager keeps
the latest `keep` checkpoints and the best one by validation ELBO.

Resume order (the one place it is written down):
  1. the newest checkpoint whose meta matches this run and whose state
     restores; a newer one that fails to restore (truncated, corrupted) is
     moved aside to <step>.corrupt-<time> (kept for inspection, never deleted)
     with a warning, and the previous one is tried;
  2. else a fresh state from config.seed.
Orbax writes each checkpoint into a temporary directory and renames it when
complete, so a kill during a write leaves the previous checkpoints intact.
"""

import logging
import os
import pathlib
import time

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocp_policies

BEST_METRIC = 'val_elbo'
# Config fields that must equal the checkpoint's for its parameters to fit.
_STRUCTURAL_MODEL_KEYS = ('type', 'arch', 'latent_dim', 'hidden', 'activation', 'gated',
                          'conv_channels', 'conv_dense', 'conv_upsample', 'likelihood',
                          'gaussian_scale')


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used for this run; the message says why and what to do."""


def _best_metric(metrics):
  return metrics[BEST_METRIC]


class Checkpointer:
  """Saves and restores (state, meta) with orbax's CheckpointManager."""

  def __init__(self, directory, keep=3):
    self.directory = pathlib.Path(directory).absolute()
    policy = ocp_policies.AnyPreservationPolicy([
        ocp_policies.LatestN(n=keep),
        ocp_policies.BestN(get_metric_fn=_best_metric, reverse=False, n=1,
                           keep_checkpoints_without_metrics=False),
    ])
    options = ocp.CheckpointManagerOptions(
        best_fn=_best_metric, best_mode='max', preservation_policy=policy,
        enable_async_checkpointing=False, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'meta'))

  def save(self, step, state, meta, val_elbo=None):
    """Saves synchronously; `val_elbo` (nats per example) ranks the best checkpoint."""
    kill_at = os.environ.get('VAE_INJECT_KILL_DURING_SAVE')  # fault injection (tests only)
    if kill_at is not None and int(kill_at) == int(step):
      import signal  # pylint: disable=g-import-not-at-top
      import threading  # pylint: disable=g-import-not-at-top
      threading.Timer(float(os.environ.get('VAE_INJECT_KILL_DELAY_S', '0.02')),
                      lambda: os.kill(os.getpid(), signal.SIGKILL)).start()
    metrics = None if val_elbo is None else {BEST_METRIC: float(val_elbo)}
    self.manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
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
    return self.manager.best_step()

  def restore_meta(self, step):
    return self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']

  def restore(self, step, abstract_state):
    """Restores the state at `step` onto the shardings of `abstract_state`."""
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
    return out['state'], out['meta']

  def restore_latest(self, abstract_state, expected_meta):
    """Step 1 of the resume order. Returns (state, meta, step) or None.

    Raises:
      CheckpointError: a checkpoint exists but belongs to another model or
        dataset (never silently skipped: that would start over and lose work).
    """
    for step in reversed(self.steps()):
      try:
        meta = self.restore_meta(step)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      check_compatible(meta, expected_meta, self.directory / str(step))
      try:
        state, meta = self.restore(step, abstract_state)
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
        continue
      return state, meta, step
    return None

  def _set_aside(self, step, error):
    """Moves an unrestorable checkpoint out of the manager's sight, keeping its files."""
    src = self.directory / str(step)
    dst = self.directory / f'{step}.corrupt-{int(time.time())}'
    logging.warning('checkpoint %s cannot be restored (%s: %s); moved to %s, falling back to '
                    'the previous checkpoint', src, type(error).__name__,
                    str(error).splitlines()[0][:200] if str(error) else '', dst.name)
    if jax.process_index() == 0 and src.exists():
      os.rename(src, dst)
    self.manager.reload()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def check_compatible(meta, expected, where):
  """Raises CheckpointError if the checkpoint's model or data differ from this run's."""
  got_model = meta.get('config', {}).get('model', {})
  want_model = expected['config']['model']
  for key in _STRUCTURAL_MODEL_KEYS:
    a, b = got_model.get(key), want_model.get(key)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
      a, b = list(a or []), list(b or [])
    if a != b:
      raise CheckpointError(
          f'checkpoint {where} has model.{key}={a!r} but this config has {b!r}; use the '
          'config it was trained with or a new --workdir')
  got_data, want_data = meta.get('data', {}), expected['data']
  for key in ('name', 'shape'):
    if got_data.get(key) != want_data.get(key):
      raise CheckpointError(
          f'checkpoint {where} was trained on data {key}={got_data.get(key)!r} but this run '
          f'has {want_data.get(key)!r}; use the matching data config or a new --workdir')


def abstract_like(tree):
  """ShapeDtypeStructs (with shardings) of a concrete pytree."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)
