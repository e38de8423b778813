"""One run's life: its workdir files, metrics, checkpoints, best and patience, and its end.

A `Run` owns everything that belongs to one model being trained (one member of a vmapped
group, or the single model of `train.py`): the config and its JSON, the done record of an
earlier session, the run record (run.json), the metrics writer (metrics.jsonl and
TensorBoard), the checkpointer, the best validation ELBO and the patience of early stopping,
the last metrics and the status. The training loop only says when the moments come:

  run = Run(config, workdir, chief)    # reads done.json: has this run already ended?
  run.start(dataset_info, keep)        # config.json, data.json, run.json, checkpointer
  run.resume(resume_step)              # metrics truncated to the resume step, best replayed
  run.log_train(...), stop = run.log_eval(...), run.save(...), run.stop_early(step)
  run.finish(step)                     # done.json and run.json; run.close() in any case

"Best by validation" lives here alone (`selection_elbo`, `best_event`). Nothing here compiles
or runs a model, so these moments are tested on their own (tests/training/test_run.py).
"""

import json
import logging
import math
import pathlib

from vae import config_lib
from vae.training import checkpointing, metrics_io, run_dir, run_record

log = logging.getLogger('vae')


def selection_elbo(eval_metrics):
  """The figure that model selection (early stopping, the best checkpoint) ranks by: the
  validation ELBO in nats per example. None without a validation split: such a run has no
  early stopping (a config error) and its "best" checkpoint is the latest one, never one
  chosen on test."""
  return eval_metrics.get('val/elbo')


def best_event(events, upto=None):
  """(selection ELBO, step) of the best evaluation among metrics events with step <= upto
  (all when None); (-inf, 0) when there is none."""
  best = (-math.inf, 0)
  for e in events:
    if e.get('event', 'eval') != 'eval' or (upto is not None and e['step'] > upto):
      continue
    value = selection_elbo(e)
    if value is not None and value > best[0]:
      best = (value, e['step'])
  return best


# What a run alone shows first in TensorBoard's HParams view (then every other field).
KEY_HPARAMS = ('model.latent_dim', 'objective.beta', 'seed')


def hparams(config_json, swept=()):
  """A run's settings for TensorBoard's HParams view: a sweep member's swept fields only
  (`swept`, the same for every member, so the view's columns are what varies); a run alone
  every field, KEY_HPARAMS first. Numbers, booleans and strings as they are; tuples (e.g.
  model.hidden) and None as their text, "(300, 300)"."""
  text = lambda v: str(tuple(v)) if isinstance(v, list) else str(v)
  flat = config_lib.flatten(config_json)
  keys = [k for k in swept if k in flat] or (
      [k for k in KEY_HPARAMS if k in flat] + [k for k in flat if k not in KEY_HPARAMS])
  return {k: flat[k] if isinstance(flat[k], (bool, int, float, str)) else text(flat[k])
          for k in keys}


def swept_fields(workdir):
  """The fields a sweep varies over its members (their overrides' keys, in first-seen order)
  when `workdir` is a member of a sweep (its parent holds sweep.json); () otherwise."""
  path = pathlib.Path(workdir).parent / 'sweep.json'
  try:
    members = run_dir.read_json(path).get('members', []) if path.exists() else []
  except (OSError, ValueError, AttributeError):
    return ()
  keys = []
  for m in members:
    for k in (m.get('overrides') or {}) if isinstance(m, dict) else ():
      if k not in keys:
        keys.append(k)
  return tuple(keys)


class Run:
  """One model's run in its workdir; see the module docstring for its moments."""

  def __init__(self, config, workdir, chief=True):
    self.config, self.workdir, self.chief = config, workdir, chief
    self.config_json = config_lib.config_json(config)
    run_dir.check_workdir_config(workdir, self.config_json)
    self.done = (run_dir.read_done(workdir) if run_dir.is_done(workdir, config.train.num_epochs)
                 else None)
    self.stopped = self.done is not None  # ended in an earlier session, or stopped early now
    self.status = self.done.get('status', 'early_stopped') if self.stopped else 'finished'
    self.last = (dict(metrics_io.last_metrics(workdir), step=self.done['step']) if self.done
                 else {})
    self.best = (-math.inf, 0)
    self.evaluated = (None, None)  # (step, selection ELBO) of the newest evaluation
    self.checkpointer = self.writer = self.record = None
    self.meta = None

  # -- before training

  def saved_steps(self):
    """The checkpoint steps on disk (without opening a manager)."""
    return checkpointing.CheckpointReader(self.workdir / 'checkpoints').steps()

  def start(self, dataset_info, keep, hooks=None):
    """Writes config.json and data.json (chief), opens the run record and the checkpointer."""
    self.record = run_record.RunRecord(self.workdir, dataset_info.get('files', ()),
                                    enabled=self.chief and not self.stopped)
    if self.chief:
      metrics_io.write_json(self.workdir / 'config.json', self.config_json)
      metrics_io.write_json(self.workdir / 'data.json', dataset_info)
    self.checkpointer = checkpointing.Checkpointer(self.workdir / 'checkpoints', keep, hooks)
    self.meta = {'config': self.config_json,
                 'data': {k: dataset_info[k] for k in ('name', 'shape', 'source')}}

  def resume(self, resume_step):
    """Opens the metrics writer (events after `resume_step` dropped: they are trained again)
    and replays the best evaluation up to it, so that patience continues where it was."""
    self.writer = metrics_io.MetricsWriter(self.workdir, resume_step,
                                           enabled=self.chief and not self.stopped)
    self.writer.text('config', '```\n' + json.dumps(self.config_json, indent=2) + '\n```')
    if resume_step is not None:
      self.best = best_event(metrics_io.read_metrics(self.workdir / 'metrics.jsonl'),
                             resume_step)

  def rewind(self):
    """Before the group restores an earlier step in the same session (a member diverged):
    the metrics writer closes (`resume` reopens it at that step) and the newest evaluation
    is forgotten."""
    if self.writer is not None:
      self.writer.close()
    self.evaluated = (None, None)

  # -- at boundaries

  def log_train(self, step, epoch, examples, metrics):
    tm = {f'train/{k}': float(v) for k, v in metrics.items()}
    self.writer.write('train', step, epoch, examples, tm)
    self.last.update(tm)

  def log_eval(self, step, epoch, examples, metrics, patience_steps):
    """Records an evaluation; returns whether early stopping ends the run here (no
    improvement of the selection ELBO for `patience_steps`; 0 never stops)."""
    self.writer.write('eval', step, epoch, examples, metrics)
    self.last.update(metrics)
    value = selection_elbo(metrics)
    self.evaluated = (step, value)
    if value is not None and value > self.best[0]:
      self.best = (value, step)
    return bool(patience_steps) and step - self.best[1] >= patience_steps

  def save(self, step, state):
    """A checkpoint of this run's state, ranked for "best" by the selection ELBO of an
    evaluation at the same step (a checkpoint without one is never the best)."""
    checkpointer, *job = self.save_job(step, state)
    checkpointer.save(*job)

  def save_job(self, step, state):
    """`save` as a job for `saver.BackgroundSaver`: (checkpointer, step, state,
    meta, selection ELBO or None)."""
    at, value = self.evaluated
    return (self.checkpointer, step, state, self.meta, value if at == step else None)

  def stop_early(self, step, where=''):
    """Ends the run at `step`: its last metrics in HParams, done.json, no more writes."""
    log.info('early stopping %sat step %d: val ELBO last improved at step %d (%.3f)',
             where, step, self.best[1], self.best[0])
    self.stopped, self.status = True, 'early_stopped'
    self.writer.hparams(hparams(self.config_json, swept_fields(self.workdir)), self.last)
    self.writer.close()
    if self.chief:
      run_dir.write_done(self.workdir, step, 'early_stopped', self.config.train.num_epochs)
    self.last['step'] = step

  def diverged(self, step):
    """Ends a member of a vmapped group whose loss or gradient became NaN/Inf at `step`:
    done.json records it as diverged (a rerun does not train it again, which would only
    repeat the divergence); its checkpoints end at the last good step."""
    log.error('%s: loss or gradient became NaN/Inf at step %d; this member stops at its last '
              'good checkpoint (done.json: diverged) and the others go on; to train it again '
              'with other settings, use a new workdir', self.workdir, step)
    self.stopped, self.status = True, 'diverged'
    if self.chief:
      run_dir.write_done(self.workdir, step, 'diverged', self.config.train.num_epochs)

  def interrupted(self, signal_name):
    if self.status not in ('early_stopped', 'diverged'):
      self.status = signal_name

  def finish(self, step, resume_step):
    """At the end of the loop: HParams and done.json for a run that trained to the end, and
    this session in run.json. Returns the run's result dict (last metrics, step, status)."""
    self.last.setdefault('step', step)
    if not self.stopped:
      self.last['step'] = step
      self.writer.hparams(hparams(self.config_json, swept_fields(self.workdir)), self.last)
      if self.status == 'finished' and self.chief:
        run_dir.write_done(self.workdir, step, 'finished', self.config.train.num_epochs)
    self.last['status'] = self.status
    if self.record is not None:
      self.record.finish(self.status, resume_step or 0, self.last['step'])
    return self.last

  def close(self):
    """Closes the writer and the checkpointer (waiting for pending writes); safe to repeat."""
    if self.writer is not None:
      self.writer.close()
    if self.checkpointer is not None:
      self.checkpointer.close()
      self.checkpointer = None
