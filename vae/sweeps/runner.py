"""Running a sweep: `run_sweep` expands `get_sweep(arg)` override lists (vae/sweeps/plan.py),
runs the members and keeps their status (vae/sweeps/record.py); `slurm_script` writes the
array job.

A config file may define `get_sweep(arg)` next to `get_config(arg)`, returning a
list of override dicts built with `config_lib.product` and `config_lib.zip_axes`, e.g.

    def get_sweep(arg=None):
      return config_lib.product(**{'model.latent_dim': [2, 5, 10, 20],
                                   'objective.beta': [0.5, 1.0, 2.0, 4.0],
                                   'seed': [0, 1, 2]})

`run_sweep` (scripts/sweep.py's library call) turns it into runs under
ROOT/<member name>/ and keeps ROOT/sweep.json with each member's overrides,
directory and status: pending, running, finished, interrupted (a signal
stopped it; rerunning resumes it) or failed. Finished members are skipped.

Modes: `sequential` (members one after another in this process), `processes`
(each member a train.py process, `parallel` at a time), `vmap` (members that
differ only in `config_lib.VMAPPABLE` fields train together in one program,
`loop.train_members`). Vmap groups are formed from all members of the sweep,
in the sweep's order, so a group's number and members never change when some
members are already done.
"""

import dataclasses
import logging
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

import jax

from vae import config_lib, settings
from vae.sweeps.plan import (expand, member_dir, resolve_config_spec, task_from_environment,
                             units_of, vmap_groups)
from vae.sweeps.record import SweepRecord, saved_groups
from vae.training import loop, progress as progress_lib, run_dir

log = logging.getLogger('vae')


ENDED = ('finished', 'early_stopped')


def plan_groups(root, configs, names, pending):
  """[(group index, member indices)]: the vmap groups to run. A member that trained in a saved
  group stays in it (the group reruns whole while any of its members is pending, and must
  then be selected whole); pending members in no saved group form new groups with new
  indices, one per class of members a program can stack (`vmap_groups`). So a sweep grows:
  new seeds or settings train in new groups and the existing groups' files stay untouched.

  Raises:
    ConfigError: a saved group with a pending member is selected only in part.
  """
  index = {n: i for i, n in enumerate(names)}
  saved, plan, placed = saved_groups(root), [], set()
  for g, entries in sorted(saved.items()):
    group_names = [n for _, n in entries]
    position = {n: p for p, n in entries}
    chosen = sorted((index[n] for n in group_names if n in index),  # the order it was saved in
                    key=lambda i: (position[names[i]] if position[names[i]] is not None else i))
    placed.update(chosen)
    if any(i in pending for i in chosen):
      if len(chosen) < len(group_names):
        raise config_lib.ConfigError(
            f'{pathlib.Path(root) / f"_vmap_group_{g}"} holds a group of {len(group_names)} '
            f'members, not {len(chosen)}; select all of its members to resume it (or use a '
            'new sweep root)')
      plan.append((g, chosen))
  next_index = max(saved, default=-1) + 1
  for group in vmap_groups(configs):
    new = [i for i in group if i in pending and i not in placed]
    if new:
      plan.append((next_index, new))
      next_index += 1
  return plan


def _flag(key, value):
  if isinstance(value, (tuple, list)):
    value = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return f'--config.{key}={value}'


def _result_status(status):
  if status == 'diverged':  # a member of a vmapped group that went NaN/Inf (run.Run.diverged)
    return 'failed'
  return 'finished' if status in ENDED else 'interrupted'


# --mode auto's rule, from docs/benchmarks.md ("a sweep of 8 default models"): on a CPU one
# model already fills the cores (vmap, processes and one after another within 4 % of each
# other), so the members run one after another in this process (compiled programs reused);
# on an accelerator in vmapped programs (3.3x one model's throughput at 8 members, 5.9x at
# 32, H200). A sweep recorded with a mode keeps it when it resumes or grows under auto.
def choose_mode(mode, backend, num_members, saved=None):
  """(mode, why) for `--mode` (auto or a mode) on `backend` with `num_members` members."""
  if mode != 'auto':
    return mode, 'asked'
  if saved in MODES:
    return saved, 'auto: kept from sweep.json'
  if backend == 'cpu' or num_members < 2:
    return 'sequential', f'auto: {num_members} member(s) on {backend}'
  return 'vmap', f'auto: {num_members} members on {backend}'


MODES = ('sequential', 'processes', 'vmap')


def run_sweep(config_spec, root, mode='auto', parallel=2, dry_run=False, out=print,
              axes=None, config_overrides=None, task_index=None, num_tasks=None, unit=None,
              zipped=False, random=0, seed=0):
  """Runs (or, with `dry_run`, lists) the sweep of `config_spec` under `root`.

  Args:
    task_index, num_tasks: run only the units of task I of N (defaults: the scheduler's
      array variables, `task_from_environment`). Unit k belongs to task k mod N: a fixed
      rule over the whole (cut) member list, whatever is already done, so concurrent
      tasks never run the same member.
    unit: 'member' or 'group' (a vmap group, formed from all members); default: group
      in vmap mode, member otherwise.
    axes: {dotted key: [value strings]}: cut the preset to those values, or set them
      (vae/sweeps/grid.py); zipped, random, seed: `--zip`, `--random N --seed S`.
    config_overrides: {dotted key: value string}: set for every member (recorded in
      sweep.json; a rerun with other overrides is refused).

  Returns:
    the SweepRecord.
  Raises:
    ConfigError: a bad spec, override or mode (before anything runs).
  """
  if mode not in MODES + ('auto',):
    raise config_lib.ConfigError(f'unknown --mode {mode!r}; choose auto, sequential, '
                                 'processes or vmap')
  overrides, configs, names, fixed, base = expand(config_spec, axes, config_overrides, zipped,
                                                  random, seed)
  root = pathlib.Path(root)
  workdirs = [member_dir(root, n) for n in names]
  # A member trained from another (or an edited) config file is refused, trained or not,
  # with the fields that differ, before anything is written.
  loop.check_members(configs, workdirs)
  record = SweepRecord(root, config_spec, overrides, fixed, config_lib.config_json(base))
  if random:
    record.data['random'] = {'members': random, 'seed': seed, 'axes': axes}
  mode, why = choose_mode(mode, jax.default_backend(), len(configs), record.saved_mode)
  record.data.update(mode=mode, mode_chosen=why)
  task_index, num_tasks = task_from_environment(task_index, num_tasks)
  unit = unit or ('group' if mode == 'vmap' else 'member')
  if mode == 'vmap' and unit == 'member' and num_tasks > 1:
    raise config_lib.ConfigError('--mode vmap across tasks needs --unit group (a vmap group '
                                 'cannot be split between tasks)')
  mine = sorted(i for k, u in enumerate(units_of(configs, unit)) if k % num_tasks == task_index
                for i in u)
  pending = [i for i in mine if not run_dir.is_done(workdirs[i], configs[i].train.num_epochs)]
  if dry_run:
    for i, (n, w) in enumerate(zip(names, workdirs)):
      state = ('pending' if i in pending else 'finished (skipped)') if i in mine else (
          'another task')
      out(f'{n:<48} {w}  {state}')
    task = f', task {task_index} of {num_tasks} ({unit}s)' if num_tasks > 1 else ''
    out(f'{len(names)} members, {len(pending)} to run, mode {mode}{task}')
    return record
  plan = []
  if mode == 'vmap':  # every refusal before anything is written: a refused rerun changes nothing
    plan = (plan_groups(root, configs, names, pending) if num_tasks == 1
            else [(g, group) for g, group in enumerate(vmap_groups(configs))
                  if set(group) <= set(mine)])
    for g, group in plan:
      if any(i in pending for i in group):
        loop.check_group([configs[i] for i in group], [workdirs[i] for i in group],
                         root / f'_vmap_group_{g}')
  # One process per task: a second start of the same task is refused here, before it
  # writes (two would leapfrog member by member, each recording the other's as failed).
  root.mkdir(parents=True, exist_ok=True)
  lock = run_dir.WorkdirLock(
      root, f'.task-{task_index}-of-{num_tasks}.lock',
      lambda owner: f'task {task_index} of {num_tasks} of sweep {root} is already running (pid '
                    f'{owner}); wait for it or stop it (the lock ends with its process)')
  try:
    sweep = _Sweep(config_spec, root, record, configs, names, workdirs,
                   [dict(fixed, **o) for o in overrides])
    return _run_task(sweep, mode, parallel, mine, pending, plan)
  finally:
    lock.release()


@dataclasses.dataclass(frozen=True)
class _Sweep:
  """What every part of one sweep task reads: the members (index i: configs[i], names[i],
  workdirs[i], flags[i], each member's overrides with the --config ones) and its record."""
  config_spec: str
  root: pathlib.Path
  record: SweepRecord
  configs: list
  names: list
  workdirs: list
  flags: list


def _run_task(sweep, mode, parallel, mine, pending, plan):
  """`run_sweep`'s work once its checks passed and its task lock is held."""
  root, record, configs, names, workdirs = (sweep.root, sweep.record, sweep.configs,
                                            sweep.names, sweep.workdirs)
  record.save()
  for i in mine:
    if i not in pending:
      status = _result_status(run_dir.read_done(workdirs[i]).get('status', 'finished'))
      if record.status(names[i]) != status:
        record.set(names[i], status)
  progress = progress_lib.Progress(len(pending), 'sweep member', min_interval_s=0.0)
  if mode == 'sequential':
    for done, i in enumerate(pending):
      log.info('sweep %s: member %d/%d %s', root, done + 1, len(pending), names[i])
      record.set(names[i], 'running')
      try:
        result = loop.train_and_evaluate(configs[i], str(workdirs[i]))
      except Exception as e:  # pylint: disable=broad-except  (the next members still run)
        error = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        record.set(names[i], 'failed', error=error)
        log.error('sweep %s: member %s failed (%s: %s); the other members go on, and the '
                  'sweep exits 1', root, names[i], type(e).__name__, error)
        progress.update(done + 1, last=f'{names[i]} failed')
        continue
      record.set(names[i], _result_status(result['status']))
      progress.update(done + 1, last=names[i])
      if result['status'] not in ENDED:  # a signal: stop the sweep, as the user asked
        break
  elif mode == 'processes':
    _run_processes(sweep, pending, parallel, progress)
  else:
    trained = 0
    for g, group in plan:
      todo = [i for i in group if i in pending]
      if not todo:
        continue
      for position, i in enumerate(group):
        record.set(names[i], 'running' if i in todo else record.status(names[i]), group=g,
                   group_position=position)
      log.info('sweep %s: vmap group %d, %d members (%d to train)', root, g, len(group),
               len(todo))
      results = loop.train_members([configs[i] for i in group], [workdirs[i] for i in group],
                                   root / f'_vmap_group_{g}')
      for i, r in zip(group, results):
        record.set(names[i], _result_status(r['status']))
      trained += len(todo)
      progress.update(trained, last=f'group {g}')
      if any(r['status'] not in ENDED + ('diverged',) for r in results):
        break
  return record


def _run_processes(sweep, pending, parallel, progress):
  """Runs the pending members as train.py processes, `parallel` at a time. SIGTERM / SIGINT
  to the sweep are passed on to the running members (each saves at its next chunk boundary
  and exits 0); no new member starts; the sweep waits for them, records them as
  interrupted, and returns (rerun the same command to resume)."""
  queue, running = list(pending), {}
  stop = []

  def forward(signum, _frame):
    if not stop:
      log.warning('sweep %s: %s: passed on to the %d running members; no new member starts',
                  sweep.root, signal.Signals(signum).name, len(running))
    stop.append(signum)
    for proc, _ in running.values():
      if proc.poll() is None:
        proc.send_signal(signum)

  old = {}
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      old[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread
      pass
  try:
    _process_loop(sweep, queue, running, parallel, progress, stop)
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


def _process_loop(sweep, queue, running, parallel, progress, stop):
  names, workdirs, record = sweep.names, sweep.workdirs, sweep.record
  finished = 0
  while (queue and not stop) or running:
    while queue and not stop and len(running) < parallel:
      i = queue.pop(0)
      prefix, env = settings.command('vae.commands.train')  # vae-train, from any directory
      cmd = prefix + ['--config', sweep.config_spec, '--workdir', str(workdirs[i])] + [
          _flag(k, v) for k, v in sweep.flags[i].items()] + [
              f'--import={m}' for m in config_lib.PLUGINS]
      log_file = open(sweep.root / f'{names[i]}.log', 'w')
      running[i] = (subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env),
                    log_file)
      record.set(names[i], 'running')
    for i, (proc, log_file) in list(running.items()):
      if proc.poll() is not None:
        log_file.close()
        signalled = stop and proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT,
                                                 -signal.SIGTERM, -signal.SIGINT)
        if signalled:  # stopped before it could save (e.g. while its libraries loaded)
          status = 'interrupted'
        elif proc.returncode:
          status = 'failed'
        else:
          status = ('finished' if run_dir.is_done(workdirs[i],
                                                  sweep.configs[i].train.num_epochs)
                    else 'interrupted')
        record.set(names[i], status, returncode=proc.returncode)
        del running[i]
        finished += 1
        progress.update(finished, last=f'{names[i]} {status}')
    time.sleep(0.2)


@dataclasses.dataclass(frozen=True)
class SlurmOptions:
  """What a SLURM array task asks the scheduler for (`vae-sweep --mode slurm` flags).

  Attributes:
    partition, account, qos: the directives of the same names (empty: none).
    gpus_per_task: GPUs per task (0: none); gpu_directive: 'gpus-per-task' or 'gres'
      (`--gres=gpu:N`, for clusters that count GPUs as generic resources).
    time_limit, mem, cpus_per_task: per task.
    extra: further '#SBATCH' directives, each '--name[=value]' (e.g. '--constraint=a100').
    setup: shell lines run before the command (e.g. 'module load cuda/12.4').
    python: the interpreter the tasks run.
  """
  partition: str = ''
  gpus_per_task: int = 1
  gpu_directive: str = 'gpus-per-task'
  time_limit: str = '24:00:00'
  mem: str = '32G'
  cpus_per_task: int = 4
  account: str = ''
  qos: str = ''
  extra: tuple = ()
  setup: tuple = ()
  python: str = sys.executable

  def check(self, values):
    """ConfigError for a value with a line break (it would write a runnable line), a
    directive that is not '--name[=value]', or an unknown GPU directive."""
    for what, text in values + [('--partition', self.partition), ('--time', self.time_limit),
                                ('--mem', self.mem), ('--account', self.account),
                                ('--qos', self.qos)] + [('--sbatch', e) for e in self.extra] + [
                                    ('--setup', line) for line in self.setup]:
      if any(ch in text for ch in '\n\r\0'):
        raise config_lib.ConfigError(f'{what} {text!r} holds a line break or NUL; the job '
                                     'script takes one line per value')
    for e in self.extra:
      config_lib.check(re.fullmatch(r'--[a-z][a-z0-9-]*(=\S.*)?', e) is not None,
                       f'--sbatch {e!r}: give one directive as --name or --name=value')
    config_lib.check(self.gpu_directive in ('gpus-per-task', 'gres'),
                     f'--gpu_directive {self.gpu_directive!r}; choose gpus-per-task or gres')

  def directives(self):
    """The resource lines of the script (`--ntasks=1`: one process per array task)."""
    lines = [f'#SBATCH --time={self.time_limit}', f'#SBATCH --mem={self.mem}', '#SBATCH --ntasks=1',
             f'#SBATCH --cpus-per-task={self.cpus_per_task}']
    for name, value in (('partition', self.partition), ('account', self.account),
                        ('qos', self.qos)):
      if value:
        lines.append(f'#SBATCH --{name}={value}')
    if self.gpus_per_task:
      lines.append(f'#SBATCH --gres=gpu:{self.gpus_per_task}' if self.gpu_directive == 'gres'
                   else f'#SBATCH --gpus-per-task={self.gpus_per_task}')
    return lines + [f'#SBATCH {e}' for e in self.extra]


def slurm_script(config_spec, root, num_units, task_mode, unit, axes=None, config_overrides=None,
                 options=SlurmOptions(), grid_flags=()):
  """A SLURM array script: one array task per unit of the sweep (a member, or a vmap group:
  several members packed into one task's program, e.g. one group per GPU).

  Each task runs `python -m vae.commands.sweep` (vae-sweep) on its own unit (`--task_index`
  from the array variables), so resubmitting the same array skips finished members and
  resumes interrupted ones. `--signal=B:TERM@120` asks the task to save 120 s before its
  time limit (the command is exec'd, so the trainer itself gets the signal) and `--requeue`
  lets the scheduler run a preempted task again. `options`: `SlurmOptions`.
  """
  options.check([('--workdir', str(root)), ('--config', config_spec)] + [
      (f'--config.{k}', str(v)) for k, v in (config_overrides or {}).items()])
  root = pathlib.Path(root).absolute()
  path, colon, arg = resolve_config_spec(config_spec).partition(':')
  config_spec = str(pathlib.Path(path).resolve()) + colon + arg  # tasks start anywhere
  python = options.python
  args = [python, '-m', 'vae.commands.sweep', '--config', config_spec, '--workdir', str(root),
          '--mode', task_mode, '--unit', unit, '--num_tasks', str(num_units)]
  for key, values in (axes or {}).items():
    args += ['--axis', f'{key}={",".join(values)}']
  args += [f'--config.{k}={v}' for k, v in (config_overrides or {}).items()]
  args += list(grid_flags)  # --zip, --random N --seed S: every task forms the same grid
  args += [f'--import={m}' for m in config_lib.PLUGINS]  # the user's families, in every task
  quoted = ' '.join(shlex.quote(a) for a in args)
  lines = (['#!/usr/bin/env bash', f'#SBATCH --job-name=vae-sweep-{root.name}',
            f'#SBATCH --array=0-{num_units - 1}'] + options.directives() + [
                '#SBATCH --signal=B:TERM@120', '#SBATCH --requeue',
                f'#SBATCH --output={root}/slurm-%A_%a.out'])
  lines += ['# Generated by vae-sweep (scripts/sweep.py) --mode slurm; submit with: sbatch THIS_FILE',
            'set -euo pipefail', *options.setup,
            # this package first on the path, installed or not (as settings.command does)
            f'export PYTHONPATH={shlex.quote(settings.package_root())}"${{PYTHONPATH:+:$PYTHONPATH}}"',
            'task=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))']
  if options.gpus_per_task:  # GPUs asked for: a jax without an accelerator fails fast, in one line
    check = ('import jax, sys; sys.exit(0 if jax.default_backend() != "cpu" else 3)')
    lines.append(f'{shlex.quote(python)} -c {shlex.quote(check)} 2>/dev/null || {{ echo '
                 f'"error: this job asked for GPUs but the jax of {shlex.quote(python)} has no '
                 'accelerator; install jax with its CUDA (or TPU) extra there '
                 '(docs/scaling.md) or set --gpus_per_task 0" >&2; exit 2; }')
  lines += [f'exec {quoted} --task_index "$task"', '']
  return '\n'.join(lines)
