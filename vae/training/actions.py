"""The work at a chunk boundary, as periodic actions.

Each action decides whether it is due at a boundary, dispatches what it needs of the train
state on the device (`capture`, before the next chunk takes over the state's buffers) and
finishes on the host once the chunk's results are read (`finish`). The driver runs every
action's `capture`, dispatches the next chunk, then every action's `finish`, in the order
of `default_actions`: train metrics, evaluation (with early stopping's decision), images,
checkpoints, the early stop itself, and the answer to a signal. What they share at one
boundary is a `Boundary`; each action's seconds go to its `bucket` in run.json's timing.

A new periodic action (say, a latent traversal every 10 epochs) is one class here and a
place in `default_actions`.
"""

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from vae.families import models
from vae.training import estimates, members as members_lib, plots

log = logging.getLogger('vae')


@dataclasses.dataclass
class Boundary:
  """One boundary as its actions see it.

  Attributes:
    step: the step the chunk reached.
    epoch, examples: the same in epochs and training examples.
    checkpoint_due: a checkpoint is due (its cadence, or a signal).
    preempted: the name of the signal that ends the run here, or None.
    training: the members still training.
    means: the chunk's mean train metrics, on the host (set before `finish`).
    captured: {action name: what its `capture` dispatched}.
    stopping: the members that early stopping ends here (set by `Evaluate`).
  """
  step: int
  epoch: float
  examples: int
  checkpoint_due: bool
  preempted: object
  training: list
  means: dict = None
  captured: dict = dataclasses.field(default_factory=dict)
  stopping: set = dataclasses.field(default_factory=set)


class Action:
  """A periodic action; the defaults do nothing."""
  name = ''
  bucket = None  # 'eval' | 'checkpoint' | 'images': where its seconds are counted

  def capture(self, driver, state, b):
    """Dispatches device work on the state at `b.step`; returns what `finish` needs."""
    return None

  def finish(self, driver, b):
    """The host's part, once the chunk's results are read."""


class TrainMetrics(Action):
  name = 'train_metrics'

  def finish(self, driver, b):
    runs, group = driver.runs, driver.group
    for m in b.training:
      runs[m].log_train(b.step, b.epoch, b.examples, group.pick(b.means, m))
    if len(runs) > 1:  # the range over the members still training, said as such
      losses = [runs[m].last.get('train/loss', float('nan')) for m in b.training]
      driver.progress.update(b.step, loss=f'{min(losses):.2f}..{max(losses):.2f} over '
                             f'{len(b.training)} training members')
    else:
      first = runs[b.training[0]].last
      driver.progress.update(b.step, loss=first.get('train/loss', float('nan')),
                             elbo=first.get('train/elbo', float('nan')))


class Evaluate(Action):
  """The evaluation sets' sums at each evaluation step; early stopping's decision."""
  name, bucket = 'evaluate', 'eval'

  def capture(self, driver, state, b):
    if not driver.sched.is_eval(b.step):
      return None
    ev = driver.evaluator
    sums = {s: ev.fn(state, batches, mask, driver.train_data)
            for s, (batches, mask) in ev.sets.items()}
    for v in sums.values():
      driver.timeline.dispatched('eval', v)
    return sums

  def finish(self, driver, b):
    sums = b.captured.get(self.name)
    if sums is None:
      return
    runs, group = driver.runs, driver.group
    base = runs[0].config
    per_split = {s: jax.device_get(v) for s, v in sums.items()}
    for m in b.training:
      r, em = runs[m], {}
      for split, split_sums in per_split.items():
        sums_m = members_lib.unpad_sums(group.pick(split_sums, m),
                                        models.total_latent_dim(r.config.model))
        em.update(estimates.summarize_sums(sums_m, driver.evaluator.num_dims, split,
                                           base.train.active_unit_threshold,
                                           driver.evaluator.bpd_offset))
      if r.log_eval(b.step, b.epoch, b.examples, em, driver.patience_steps):
        b.stopping.add(m)
      warn_collapse(em, r.config, r.workdir if len(runs) > 1 else None)


class Snapshot(Action):
  """Copies of each training member's state where a checkpoint or images may need them
  (every evaluation, since it may stop a member; every checkpoint)."""
  name, bucket = 'snapshot', 'checkpoint'

  def capture(self, driver, state, b):
    if not (driver.sched.is_eval(b.step) or b.checkpoint_due):
      return {}
    out = {}
    for m in b.training:
      out[m] = device_copy(driver.group.member_state(state, m))
      driver.timeline.dispatched('snapshot', jax.tree.leaves(out[m])[0])
    return out


class Images(Action):
  """Reconstructions and prior samples at the image cadence and at an early stop."""
  name, bucket = 'images', 'images'

  def finish(self, driver, b):
    if b.captured.get('evaluate') is None:
      return
    runs, group, ev = driver.runs, driver.group, driver.evaluator
    for m in b.training:
      if driver.sched.is_images(b.step) or m in b.stopping:
        write_images(runs[m].writer, b.step, group.image_variables(b.captured['snapshot'][m]),
                     group.image_fns(m), ev.recon_inputs[m], ev.sample_keys[m], runs[m].chief,
                     driver.submit_file)


class Checkpoint(Action):
  """Saves (in the background) where due or where a member stops; done.json and the
  "saved" line wait for the commit."""
  name, bucket = 'checkpoint', 'checkpoint'

  def finish(self, driver, b):
    runs = driver.runs
    saving = [m for m in b.training if b.checkpoint_due or m in b.stopping]
    driver.saver.submit([runs[m].save_job(b.step, b.captured['snapshot'][m]) for m in saving])
    if saving:
      driver.saved()
    if b.stopping or b.preempted:
      driver.saver.wait()


class EarlyStop(Action):
  name = 'early_stop'

  def finish(self, driver, b):
    several = len(driver.runs) > 1
    for m in sorted(b.stopping):
      r = driver.runs[m]
      r.stop_early(b.step, f'{r.workdir} ' if several else '')
      driver.group.set_active(m, False)


class Preemption(Action):
  """A signal: every training member records it; one line names the committed step."""
  name = 'preemption'

  def finish(self, driver, b):
    if not b.preempted:
      return
    runs = driver.runs
    for m in b.training:
      runs[m].interrupted(b.preempted)
    committed = runs[b.training[0]].checkpointer.latest_step() if b.training else None
    log.warning('%s received: checkpoint committed at step %s; rerun the same command to '
                'resume', b.preempted, committed)


def default_actions():
  """The boundary's actions, in the order their `capture` and `finish` run."""
  return [TrainMetrics(), Evaluate(), Snapshot(), Images(), Checkpoint(), EarlyStop(),
          Preemption()]


# A copy on the device, dispatched without waiting (the state's own buffers go to the next
# chunk); `jax.Array.copy` would wait for the array on some backends.
device_copy = jax.jit(lambda tree: jax.tree.map(jnp.copy, tree))


def warn_collapse(metrics, config, where=None):
  active = metrics.get('val/active_units', metrics.get('test/active_units'))
  total = models.total_latent_dim(config.model)
  if active is None or not models.has_posterior(config.model):
    return
  if active < config.train.collapse_warn_fraction * total:
    log.warning('posterior collapse%s: only %d of %d latent units are active (variance of '
                'the posterior mean > %g); consider KL warm-up or free bits',
                f' in {where}' if where else '', active, total,
                config.train.active_unit_threshold)


def write_images(writer, step, variables, fns, inputs, sample_key, write, submit=None):
  """Reconstructions (means, not logits) of fixed test images and fixed prior samples, as
  PNG files in images/ and in TensorBoard.

  Every process runs the (collective) decoding; only the chief (`write`) saves files, the
  PNG figures through `submit(fn, *args, **kwargs)` when given (matplotlib takes a few
  tenths of a second a figure: they are drawn while training goes on).
  """
  recon_fn, sample_fn = fns
  recon = recon_fn(variables, inputs)
  samples = sample_fn(variables, sample_key)
  if not write:
    return
  images = writer.path.parent / 'images'
  grids = {'reconstructions': plots.interleave(jax.device_get(inputs), jax.device_get(recon)),
           'samples': jax.device_get(samples)}
  titles = {'reconstructions': f'step {step}: test images (odd rows) and reconstructions',
            'samples': f'step {step}: decoded means of fixed prior samples'}
  for name, grid in grids.items():
    args = (grid, images / f'{name}_{step:08d}.png')
    if submit is None:
      plots.save_grid(*args, title=titles[name])
    else:
      submit(plots.save_grid, *args, title=titles[name])
    writer.image(f'images/{name}', np.clip(plots.tile(grid), 0.0, 1.0), step)
