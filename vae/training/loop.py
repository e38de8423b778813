"""The one training loop, for a single run and for a vmapped group of members.

`train_and_evaluate(config, workdir)` trains one model; `train_members(configs,
workdirs, group_dir)` trains M models together in one compiled program
(`members.Group`). Both are `train`: the same host loop, where a single run is
the one-member case with the unbatched step. Every per-run feature works per
member: its metrics, images and collapse warnings at each evaluation, its own
latest and best checkpoints (unpadded, loadable with `vae.load`), early
stopping (a stopped member is frozen inside the program; the loop ends when
all have stopped or at the end), its data order from its own seed (resident
or streamed), a lock on its workdir and its done record.

Time: durations in the config are in epochs; they are converted to steps once
(`Schedule`). The host calls one compiled chunk up to the next boundary: a
log, eval or checkpoint step or the end. Train metrics are averaged over the
chunk, and resume always starts at a boundary, so a resumed run logs the same
numbers as an uninterrupted one.
"""

import contextlib
import dataclasses
import logging
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae import errors
from vae import config_lib, specs
from vae.data import datasets as data_lib
from vae.training import checkpointing
from vae.data import input_pipeline
from vae.training import memory
from vae.families import likelihoods, models
from vae.training import members as members_lib, metrics_io, optim
from vae.training import run as run_lib
from vae import settings
from vae.training import driver as driver_lib, migration, run_dir, saver as saver_lib
from vae.training import sharding, validation

log = logging.getLogger('vae')


def eval_every_epochs(train_spec):
  """train.eval_every_epochs resolved: 'auto' is min(5, num_epochs / 3)."""
  every = train_spec.eval_every_epochs
  return min(5.0, train_spec.num_epochs / 3) if every == 'auto' else float(every)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """All durations in steps, converted once from the config's epochs."""
  steps_per_epoch: int
  total_steps: int
  log_every: int
  eval_every: int
  checkpoint_every: int
  images_every: int = 0  # 0: at every evaluation

  @classmethod
  def from_config(cls, config, num_train):
    t = config.train
    spe = num_train // t.batch_size
    to_steps = lambda epochs: max(1, int(round(epochs * spe)))
    total = to_steps(t.num_epochs)
    if config.optim.schedule == 'iwae_staircase':
      total = to_steps(optim.total_iwae_epochs(config.optim.iwae_stages))
    images = to_steps(t.images_every_epochs) if t.images_every_epochs else 0
    return cls(spe, total, t.log_every_steps, to_steps(eval_every_epochs(t)),
               to_steps(t.checkpoint_every_epochs), images)

  def next_boundary(self, step):
    nxt = lambda every: (step // every + 1) * every
    return min(nxt(self.log_every), nxt(self.eval_every), nxt(self.checkpoint_every),
               self.total_steps)

  @property
  def max_chunk(self):
    return min(self.log_every, self.eval_every, self.checkpoint_every, self.total_steps)

  def is_eval(self, step):
    return step % self.eval_every == 0 or step == self.total_steps

  def is_checkpoint(self, step):
    return step % self.checkpoint_every == 0 or step == self.total_steps

  def is_images(self, step):
    """Whether the evaluation at `step` writes images: the first evaluation at or after each
    multiple of images_every (every evaluation when images_every is 0), and the last step."""
    if not self.images_every or step == self.total_steps:
      return True
    return step // self.images_every != (step - self.eval_every) // self.images_every


def train_and_evaluate(config, workdir: str):
  """Trains and evaluates the model that `config` describes, writing into `workdir`.

  Running it again on the same workdir resumes from the newest good checkpoint.

  Args:
    config: a config from configs/ (a ConfigDict; see vae/config_lib.py for every field)
      or its frozen spec (vae/specs.py).
    workdir: output directory (created if needed).

  Returns:
    dict with the last logged metrics, 'step' and 'status' ('finished',
    'early_stopped' or the name of the signal that preempted the run).

  Raises:
    ConfigError, DataError, CheckpointError: bad input, before any compilation.
    NonFiniteError: the loss or gradient became NaN/Inf (no checkpoint written).
  """
  return train([config], [workdir])[0]


def train_members(configs, workdirs, group_dir):
  """Trains members that differ only in `config_lib.VMAPPABLE` fields in one program.

  Args:
    configs: member configs.
    workdirs: one output directory per member (each gets a single run's files).
    group_dir: the group's directory (members.json, mesh.json and its lock).

  Returns:
    one result dict per member, like `train_and_evaluate`'s.
  """
  return train(configs, workdirs, group_dir)


def train(configs, workdirs, group_dir=None):
  """The loop: one member unbatched (`group_dir` None) or a vmapped group. See the module."""
  t_start = time.time()
  configs = [validation.spec(c) for c in configs]
  if group_dir is not None:
    models.check_vmappable(configs)
  chief = jax.process_index() == 0
  dirs = [run_dir.prepare_workdir(w) for w in workdirs]
  group_dir = None if group_dir is None else run_dir.prepare_workdir(group_dir)
  with contextlib.ExitStack() as stack:
    if chief:
      for d in dirs + ([group_dir] if group_dir is not None else []):
        stack.callback(run_dir.WorkdirLock(d).release)
    # Signals count from here: one that arrives before the first step ends the run cleanly.
    preempt = run_dir.Preemption()
    preempt.install()
    stack.callback(preempt.restore)
    return _train(configs, dirs, group_dir, chief, t_start, preempt)


def check_members(configs, workdirs):
  """Raises ConfigError naming the fields when a workdir holds a run whose saved config is
  not `configs[i]` (apart from the fields that may change on resume); reads only."""
  for c, w in zip(configs, workdirs):
    w = pathlib.Path(w)
    if (w / 'config.json').exists():
      c = _keep_legacy_fields(specs.freeze(c), w, quiet=True)
      run_dir.check_workdir_config(w, config_lib.config_json(c))


def check_group(configs, workdirs, group_dir):
  """Raises ConfigError when the members saved in a vmapped group's directory
  (GROUP/members.json) are not these (their number, or a field that cannot change on
  resume); reads only, so that a sweep can refuse before it writes anything."""
  configs = [_keep_legacy_fields(specs.freeze(c), pathlib.Path(w), quiet=True)
             for c, w in zip(configs, workdirs)]
  run_dir.check_group_config(group_dir, [config_lib.config_json(c) for c in configs])


def _train(configs, workdirs, group_dir, chief, t_start, preempt):
  configs = [_keep_legacy_fields(c, w) for c, w in zip(configs, workdirs)]
  runs = [run_lib.Run(c, w, chief) for c, w in zip(configs, workdirs)]
  if group_dir is not None:
    run_dir.check_group_config(group_dir, [r.config_json for r in runs])
  if all(r.stopped for r in runs):
    log.info('nothing to train: every run in %s has ended', [str(w) for w in workdirs])
    return [dict(r.last, status=r.done['status']) for r in runs]
  base = configs[0]
  dataset = data_lib.load(base.data)
  validation.validate_for_data(base, dataset.image_shape, len(dataset.train),
                               len(dataset.validation) + len(dataset.test))
  data_notes = {}
  for r in runs:  # the data a run was trained on, checked before anything is written
    recorded = r.workdir / 'data.json'
    if recorded.exists() and not r.stopped:
      data_notes[r.workdir] = data_lib.check_same_data(
          run_dir.read_json(recorded), dataset.info, str(r.workdir),
          r.config.data.accept_changed_data)
      if data_notes[r.workdir]:
        log.warning('%s', data_notes[r.workdir])
  mesh = sharding.make_model_mesh(len(runs) if group_dir is not None else 1)
  widest = max(configs, key=lambda c: c.model.latent_dim)  # a group pads to its widest
  memory.check_fits(widest, dataset.image_shape, -(-len(runs) // mesh.shape['model']),
                    num_train=len(dataset.train))
  sched = _check_sizes(base, runs, mesh, len(dataset.train))
  try:
    hooks = settings.fault_hooks()
    _start_runs(runs, dataset.info, group_dir, mesh, chief, hooks)
    for r in runs:
      if data_notes.get(r.workdir):
        r.record.note('data_change', data_notes[r.workdir])
    return _train_runs(runs, group_dir, dataset, mesh, sched, t_start, preempt, hooks)
  finally:
    for r in runs:
      r.close()


def _check_sizes(base, runs, mesh, num_train):
  """The Schedule, after checking that batches divide over the data axis and that no saved
  checkpoint lies past the configured end."""
  n_data = sharding.data_axis_size(mesh)
  for name in ('batch_size', 'eval_batch_size'):
    config_lib.check(base.train[name] % n_data == 0,
                     f'train.{name}={base.train[name]} does not divide over the {n_data} '
                     f'devices of the data axis; use a multiple of {n_data}')
  log.info('devices: %s; mesh %s; process %d of %d', _device_summary(), dict(mesh.shape),
           jax.process_index(), jax.process_count())
  sched = Schedule.from_config(base, num_train)
  for r in runs:
    saved = r.saved_steps()
    traces = checkpointing.committed_traces(r.workdir / 'checkpoints')
    if traces and not saved:  # refused before anything is written (checked again on restore)
      raise checkpointing.no_restorable_step_error(r.workdir / 'checkpoints', traces)
    config_lib.check(not saved or saved[-1] <= sched.total_steps,
                     f'train.num_epochs={base.train.num_epochs} ends at step {sched.total_steps}, '
                     f'but {r.workdir} holds a checkpoint at step {saved[-1] if saved else 0}; give '
                     'at least the epochs already trained, or use a new --workdir')
  return sched


def _start_runs(runs, dataset_info, group_dir, mesh, chief, hooks):
  # Each member's checkpoints live in its own workdir; a group keeps >= 2 so that a kill
  # between two members' saves leaves a step that all of them have.
  keep = runs[0].config.train.keep_checkpoints
  keep = keep if len(runs) == 1 else max(2, keep)
  for r in runs:
    r.start(dataset_info, keep, hooks)
  if chief and group_dir is not None:
    metrics_io.write_json(group_dir / run_dir.GROUP_FILE, [r.config_json for r in runs])
    metrics_io.write_json(group_dir / 'mesh.json', dict(mesh.shape))


def _restore(runs, group, sched):
  """The group's train state: restored at the newest step every training run committed
  (checkpointing's resume order), else fresh. Returns (state, resume step or None)."""
  size = len(runs)
  restored = checkpointing.restore_group(
      [r.checkpointer for r in runs], [group.member_abstract(m) for m in range(size)],
      [r.meta for r in runs], frozen=[m for m, r in enumerate(runs) if r.stopped])
  if restored is None:
    for r in runs:  # a run that once committed a step never silently starts over
      traces = r.checkpointer.committed_traces()
      if traces:
        raise checkpointing.no_restorable_step_error(r.checkpointer.directory, traces)
    state, resume_step = group.init(), None
    log.info('starting from scratch: %d steps (%d per epoch)%s', sched.total_steps,
             sched.steps_per_epoch,
             f', {size} members (train.member_loop {group.member_loop})' if size > 1 else '')
  else:
    member_states, resume_step = restored
    state = group.join(member_states)
    log.info('resumed from checkpoint step %d of %d', resume_step, sched.total_steps)
  for m, r in enumerate(runs):
    if r.stopped:
      group.set_active(m, False)
  for r in runs:
    r.resume(resume_step)
  return state, resume_step


@dataclasses.dataclass
class _Evaluator:
  """The evaluation sets on the device and the fixed inputs of the images."""
  fn: object
  sets: dict
  sample_keys: list
  recon_inputs: list
  num_dims: int
  bpd_offset: object  # likelihoods.bpd_offset: 0.0, 8.0 or None (no bits/dim)


def _make_evaluator(group, base, mesh, eval_mode, val_images, test_images, image_shape):
  eval_sharding = sharding.batch_sharded(mesh, 1)
  sets = {}
  for split, images in (('val', val_images), ('test', test_images)):
    if len(images):
      batches, mask = input_pipeline.pad_to_batches(images, base.train.eval_batch_size)
      sets[split] = (sharding.put(batches, eval_sharding), sharding.put(mask, eval_sharding))
  return _Evaluator(
      fn=group.make_eval_fn(eval_mode, base.train.eval_iw_samples), sets=sets,
      sample_keys=[k['sample'] for k in group.keys],  # the same draws at every evaluation
      recon_inputs=[input_pipeline.to_float(jnp.asarray(test_images[:32]), eval_mode, k['eval'])
                    for k in group.keys],
      num_dims=int(np.prod(image_shape)),
      bpd_offset=likelihoods.bpd_offset(base.model.likelihood, base.data.dequantize))


def _train_runs(runs, group_dir, dataset, mesh, sched, t_start, preempt, hooks):
  """Builds the group, restores, and runs the chunks up to the end; returns the results."""
  base = runs[0].config
  _, eval_mode = input_pipeline.conversion_modes(base.data)
  train_images, val_images, test_images = input_pipeline.prepare_host_splits(dataset, base.data)
  streamed = (base.data.residency == 'host' or (
      base.data.residency == 'auto' and train_images.nbytes > base.data.max_device_bytes))
  group = members_lib.Group([r.config for r in runs], dataset.image_shape, sched, mesh,
                            streamed, len(dataset.train), batched=group_dir is not None,
                            hooks=hooks)
  log.info('compiled step: %s', group.options.summary())
  for r in runs:
    r.record.note('step_options', group.options.record())
  state, resume_step = _restore(runs, group, sched)
  evaluator = _make_evaluator(group, base, mesh, eval_mode, val_images, test_images,
                              dataset.image_shape)
  feed = driver_lib.Feed(group, mesh, sched, streamed, train_images, runs)
  saver = saver_lib.BackgroundSaver(hooks, background=jax.process_count() == 1)
  step = resume_step or 0
  driver = driver_lib.Driver(runs, group, sched, evaluator, saver, preempt, t_start, step)
  try:
    while True:
      try:
        step = driver.run(state, step, feed)
        break
      except errors.MembersDiverged as e:
        # The others go on from the group's newest common checkpoint, the diverged ones
        # frozen, in the same program on the same data (nothing reloaded or compiled again):
        # what they compute does not depend on a frozen member, so they end as they would
        # have.
        for m in e.members:
          runs[m].diverged(e.step)
        for r in runs:
          r.rewind()
        state, resume_step = _restore(runs, group, sched)
        step = resume_step or 0
        driver.rewind(step)
    saver.wait()
  finally:
    driver.close()
    saver.close()
  timing = driver.timing()
  log.info('%s', closing_line(timing))
  for r in runs:
    r.record.note('timing', timing)
  return [r.finish(step, resume_step) for r in runs]


def closing_line(timing):
  """The run's last line about time: shares of the wall time that add to 100 % (the first
  chunk, with its compilation; then the device busy; then the device idle, the host stall),
  and the host's boundary work in seconds, which overlaps the device's work."""
  whole, steady = timing['whole'], timing['steady']
  first = max(0.0, whole['wall_s'] - steady['wall_s'])
  busy = steady['device_busy_s']
  idle = max(0.0, steady['wall_s'] - busy)
  share = lambda s: 100.0 * s / max(whole['wall_s'], 1e-9)
  return (f'{whole["wall_s"]:.1f} s: first chunk (compilation) {share(first):.1f} %, device '
          f'busy {share(busy):.1f} %, device idle (host stall) {share(idle):.1f} %; the host\'s '
          f'boundary work, overlapping the device: evaluations {timing["eval_s"]:.1f} s, '
          f'checkpoints {timing["checkpoint_s"]:.1f} s (+{timing["checkpoint_background_s"]:.1f} '
          f's on the background thread), images {timing["images_s"]:.1f} s')


def _keep_legacy_fields(config, workdir, quiet=False):
  """`config`, with the older behaviour that the workdir's saved run names in its config.json
  (config_lib.LEGACY_VALUES, written there by scripts/migrate.py), so that it resumes as it
  started; a workdir that still needs migrating is refused (`migration.check_current`)."""
  path = workdir / 'config.json'
  if not path.exists():
    return config
  migration.check_current(workdir)
  changed = config_lib.legacy_to_adopt(run_dir.read_json(path), config)
  config = specs.with_fields(config, changed)
  for key, value in {} if quiet else changed.items():
    log.info('%s was saved with %s=%r: it resumes with it', workdir, key, value)
  return config


def _device_summary():
  kinds = {}
  for d in jax.devices():
    kinds[f'{d.platform}:{d.device_kind}'] = kinds.get(f'{d.platform}:{d.device_kind}', 0) + 1
  return ', '.join(f'{n} x {k}' for k, n in kinds.items())
