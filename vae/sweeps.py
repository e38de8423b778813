"""Sweeps: expanding `get_sweep(arg)` override lists, naming members, running them, their status.

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

import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import shlex
import signal
import string
import subprocess
import sys
import time

import ml_collections

from vae import config_lib, loop, metrics_io, progress as progress_lib, run_dir, settings
from vae import validation

log = logging.getLogger('vae')
ENDED = ('finished', 'early_stopped')


NAME_SAFE = frozenset(string.ascii_letters + string.digits + '=,._+-()[] ')
NAME_MAX_BYTES = 200


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
        f'vae.sweeps.member_name: repair or remove {root / "sweep.json"} and rerun')
  path = root / name
  if path.is_symlink() or (path.exists() and not path.is_dir()):
    raise config_lib.ConfigError(f'{path} is not a directory inside {root} (a link or a file); '
                                 'remove it and rerun')
  return path


def apply_overrides(config, overrides):
  """A locked copy of `config` with dotted-key overrides; unknown keys are errors."""
  c = ml_collections.ConfigDict(config.to_dict())
  for key, value in overrides.items():
    try:
      config_lib.set_field(c, key, value)
    except config_lib.ConfigError:
      raise config_lib.ConfigError(f'sweep override {key!r} is not a config field') from None
  c.lock()
  return c


def load_config_module(spec):
  """(module, arg) of a config spec 'configs/x.py[:arg]' (`config_lib.resolve_config_spec`)."""
  path, _, arg = config_lib.resolve_config_spec(spec).partition(':')
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
    fields = config_lib.vmappable_fields(c)
    key = tuple(sorted((k, str(v)) for k, v in flat.items() if k not in fields))
    groups.setdefault(key, []).append(i)
  return list(groups.values())


def saved_groups(root):
  """{group index: [(position in the group or None, member name)]} of the vmap groups a sweep
  root has trained, from the members' status files ('group', 'group_position'; roots saved
  before the position was recorded have None)."""
  groups = {}
  root = pathlib.Path(root)
  if not root.is_dir():
    return groups
  for d in sorted(root.iterdir()):
    status = read_status(d) if d.is_dir() and not d.is_symlink() else None
    if status and status.get('group') is not None:
      groups.setdefault(int(status['group']), []).append((status.get('group_position'), d.name))
  return groups


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


def members(root):
  """(name, overrides, workdir) of every member: from sweep.json, else subdirectories.

  A member's directory is ROOT/<name> wherever ROOT now is: a sweep copied from a cluster
  or moved keeps its members (the absolute paths sweep.json records are not used)."""
  root = pathlib.Path(root)
  if (root / 'sweep.json').exists():
    data = read_sweep_json(root / 'sweep.json')
    return [(m['name'], m['overrides'], member_dir(root, m['name'])) for m in data['members']]
  return [(d.name, {}, d) for d in sorted(root.iterdir()) if (d / 'metrics.jsonl').exists()]


def read_sweep_json(path):
  """ROOT/sweep.json checked for its shape (an object whose members are objects with a name
  and their overrides), or ConfigError naming it."""
  data = run_dir.read_json(path)
  ok = isinstance(data, dict) and isinstance(data.get('members', []), list) and all(
      isinstance(m, dict) and isinstance(m.get('name'), str)
      and isinstance(m.get('overrides', {}), dict) for m in data.get('members', []))
  if not ok:
    raise config_lib.ConfigError(f'{path} is damaged (not a sweep record: members need a name '
                                 'and overrides); restore it, or move it aside and rerun the '
                                 'sweep command to write it again')
  for m in data.get('members', []):
    m.setdefault('overrides', {})
  data.setdefault('members', [])
  return data


STATUS_FILE = 'sweep_status.json'


def read_status(workdir):
  """A member's status record ({'status': ...}) from its own directory, or None."""
  path = pathlib.Path(workdir) / STATUS_FILE
  try:
    return json.loads(path.read_text()) if path.exists() else None
  except ValueError:  # torn by a kill between write and rename cannot happen (atomic), but
    return None       # a damaged file must not stop a summary


class SweepRecord:
  """The sweep's members and their statuses.

  Each member's status lives in its own directory (ROOT/<name>/sweep_status.json), written
  only by the task that runs it, so tasks of one sweep running at once on a shared file
  system never race; ROOT/sweep.json (config, overrides, members, statuses) is assembled
  from those files each time a status changes, and `statuses` reads them afresh.
  """

  def __init__(self, root, config_arg, overrides, config_overrides=None):
    self.root = pathlib.Path(root)
    self.path = self.root / 'sweep.json'
    config_overrides = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in (config_overrides or {}).items()}
    members = [{'name': member_name(o), 'overrides': o,
                'workdir': str(member_dir(self.root, member_name(o)))} for o in overrides]
    if self.path.exists():
      saved = read_sweep_json(self.path)
      if saved.get('config_overrides', {}) != config_overrides:
        raise config_lib.ConfigError(
            f'{self.path} was run with --config overrides {saved.get("config_overrides", {})}, '
            f'not {config_overrides}; rerun with the same ones or use a new --workdir')
      names = {m['name'] for m in members}  # members of an earlier --axis cut stay listed
      members += [{'name': m['name'], 'overrides': m['overrides'],
                   'workdir': str(member_dir(self.root, m['name']))}  # even if the root moved
                  for m in saved.get('members', []) if m['name'] not in names]
    self.data = {'config': config_arg, 'config_overrides': config_overrides,
                 'members': members}
    self._refresh()

  def _refresh(self):
    for m in self.data['members']:
      m.update(read_status(m['workdir']) or {'status': 'pending'})

  def set(self, name, status, **extra):
    """Records member `name`'s status in its own directory, then the assembled sweep.json."""
    member = next(m for m in self.data['members'] if m['name'] == name)
    record = dict(read_status(member['workdir']) or {}, status=status, **extra)
    pathlib.Path(member['workdir']).mkdir(parents=True, exist_ok=True)
    metrics_io.write_json(pathlib.Path(member['workdir']) / STATUS_FILE, record)
    self.save()

  def status(self, name):
    return next(m['status'] for m in self.data['members'] if m['name'] == name)

  def save(self):
    """Assembles sweep.json from the members' files, under a lock shared by the tasks, so
    the last writer always saw every status written before it."""
    self.root.mkdir(parents=True, exist_ok=True)
    with open(self.root / '.sweep.lock', 'a') as lock:
      fcntl.flock(lock, fcntl.LOCK_EX)
      try:
        self._refresh()
        metrics_io.write_json(self.path, self.data)
      finally:
        fcntl.flock(lock, fcntl.LOCK_UN)


def statuses(root):
  """{member name: status} of a sweep, read from the members' own directories."""
  return {name: (read_status(workdir) or {'status': 'pending'})['status']
          for name, _, workdir in members(root)}


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


def _flag(key, value):
  if isinstance(value, (tuple, list)):
    value = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return f'--config.{key}={value}'


def _result_status(status):
  if status == 'diverged':  # a member of a vmapped group that went NaN/Inf (run.Run.diverged)
    return 'failed'
  return 'finished' if status in ENDED else 'interrupted'


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


def select_members(base, overrides, axes):
  """The members whose value of every axis KEY is among its listed values.

  Args:
    base: the sweep's base config.
    overrides: the members' override dicts.
    axes: {dotted key: [value strings]} (`--axis KEY=V1,V2`).
  Raises:
    ConfigError: an unknown key, or a listed value that no member has.
  """
  for key, texts in axes.items():
    current = _field(base, key, '--axis')
    wanted = [parse_value(key, t, current) for t in texts]
    have = [o.get(key, current) for o in overrides]
    norm = lambda v: tuple(v) if isinstance(v, list) else v
    missing = [w for w in wanted if not any(norm(h) == w for h in have)]
    if missing:
      raise config_lib.ConfigError(f'--axis {key}: no member has {missing}; the sweep has '
                                   f'{sorted({str(h) for h in have})}')
    overrides = [o for o, h in zip(overrides, have) if norm(h) in wanted]
  return overrides


def expand(config_spec, axes=None, config_overrides=None):
  """The sweep's members: (override dicts, configs, names, the --config overrides), after
  the --config overrides and the --axis cut, each config validated.

  Raises:
    ConfigError: a bad spec, override or axis.
  """
  module, arg = load_config_module(config_spec)
  if not hasattr(module, 'get_sweep'):
    raise config_lib.ConfigError(f'{config_spec} defines no get_sweep(arg); add one returning a '
                                 'list of override dicts (vae/sweeps.py)')
  base = module.get_config(arg)
  overrides = module.get_sweep(arg)
  fixed = {k: parse_value(k, v, _field(base, k, '--config.'))
           for k, v in (config_overrides or {}).items()}
  clash = sorted({k for o in overrides for k in o} & set(fixed))
  if clash:
    raise config_lib.ConfigError(f'--config.{clash[0]} is an axis of this sweep; cut it with '
                                 f'--axis {clash[0]}=... instead')
  base = apply_overrides(base, fixed)
  overrides = select_members(base, overrides, axes or {})
  configs = [apply_overrides(base, o) for o in overrides]
  names = [member_name(o) for o in overrides]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError('sweep members have duplicate names; vary at least one field')
  for c in configs:
    validation.validate(c)
  return overrides, configs, names, fixed


def run_sweep(config_spec, root, mode='sequential', parallel=2, dry_run=False, out=print,
              axes=None, config_overrides=None, task_index=None, num_tasks=None, unit=None):
  """Runs (or, with `dry_run`, lists) the sweep of `config_spec` under `root`.

  Args:
    task_index, num_tasks: run only the units of task I of N (defaults: the scheduler's
      array variables, `task_from_environment`). Unit k belongs to task k mod N: a fixed
      rule over the whole (cut) member list, whatever is already done, so concurrent
      tasks never run the same member.
    unit: 'member' or 'group' (a vmap group, formed from all members); default: group
      in vmap mode, member otherwise.
    axes: {dotted key: [value strings]}: keep only the members with those values.
    config_overrides: {dotted key: value string}: set for every member (recorded in
      sweep.json; a rerun with other overrides is refused).

  Returns:
    the SweepRecord.
  Raises:
    ConfigError: a bad spec, override or mode (before anything runs).
  """
  if mode not in ('sequential', 'processes', 'vmap'):
    raise config_lib.ConfigError(f'unknown --mode {mode!r}; choose sequential, processes or '
                                 'vmap')
  overrides, configs, names, fixed = expand(config_spec, axes, config_overrides)
  root = pathlib.Path(root)
  record = SweepRecord(root, config_spec, overrides, fixed)
  workdirs = [member_dir(root, n) for n in names]
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
    _run_processes(config_spec, configs, [dict(fixed, **o) for o in overrides], names, workdirs,
                   pending, parallel, record, root, progress)
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


def _run_processes(config_spec, configs, overrides, names, workdirs, pending, parallel, record,
                   root, progress):
  """Runs the pending members as train.py processes, `parallel` at a time. SIGTERM / SIGINT
  to the sweep are passed on to the running members (each saves at its next chunk boundary
  and exits 0); no new member starts; the sweep waits for them, records them as
  interrupted, and returns (rerun the same command to resume)."""
  queue, running, finished = list(pending), {}, 0
  stop = []

  def forward(signum, _frame):
    if not stop:
      log.warning('sweep %s: %s: passed on to the %d running members; no new member starts',
                  root, signal.Signals(signum).name, len(running))
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
    _process_loop(config_spec, configs, overrides, names, workdirs, queue, running, parallel,
                  record, root, progress, stop)
  finally:
    for sig, handler in old.items():
      signal.signal(sig, handler)


def _process_loop(config_spec, configs, overrides, names, workdirs, queue, running, parallel,
                  record, root, progress, stop):
  finished = 0
  while (queue and not stop) or running:
    while queue and not stop and len(running) < parallel:
      i = queue.pop(0)
      prefix, env = settings.command('vae.commands.train')  # vae-train, from any directory
      cmd = prefix + ['--config', config_spec, '--workdir', str(workdirs[i])] + [
          _flag(k, v) for k, v in overrides[i].items()]
      log_file = open(root / f'{names[i]}.log', 'w')
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
          status = ('finished' if run_dir.is_done(workdirs[i], configs[i].train.num_epochs)
                    else 'interrupted')
        record.set(names[i], status, returncode=proc.returncode)
        del running[i]
        finished += 1
        progress.update(finished, last=f'{names[i]} {status}')
    time.sleep(0.2)


def slurm_script(config_spec, root, num_units, task_mode, unit, axes=None, config_overrides=None,
                 partition='', gpus_per_task=1, time_limit='24:00:00', mem='32G',
                 python=sys.executable, cpus_per_task=4):
  """A SLURM array script: one array task per unit of the sweep.

  Each task runs `python -m vae.commands.sweep` (vae-sweep) on its own unit (`--task_index` from the array
  variables), so resubmitting the same array skips finished members and resumes
  interrupted ones. `--signal=B:TERM@120` asks the task to save 120 s before its time
  limit (the command is exec'd, so the trainer itself gets the signal) and `--requeue`
  lets the scheduler run a preempted task again.
  """
  for what, text in [('--workdir', str(root)), ('--partition', partition), ('--time', time_limit),
                     ('--mem', mem), ('--config', config_spec)] + [
                         (f'--config.{k}', str(v)) for k, v in (config_overrides or {}).items()]:
    if any(ch in text for ch in '\n\r\0'):  # a line break would write a runnable line
      raise config_lib.ConfigError(f'{what} {text!r} holds a line break or NUL; the job script '
                                   'takes one line per value')
  root = pathlib.Path(root).absolute()
  path, colon, arg = config_lib.resolve_config_spec(config_spec).partition(':')
  config_spec = str(pathlib.Path(path).resolve()) + colon + arg  # tasks start anywhere
  args = [python, '-m', 'vae.commands.sweep', '--config', config_spec, '--workdir', str(root),
          '--mode', task_mode, '--unit', unit, '--num_tasks', str(num_units)]
  for key, values in (axes or {}).items():
    args += ['--axis', f'{key}={",".join(values)}']
  args += [f'--config.{k}={v}' for k, v in (config_overrides or {}).items()]
  quoted = ' '.join(shlex.quote(a) for a in args)
  lines = ['#!/usr/bin/env bash',
           f'#SBATCH --job-name=vae-sweep-{root.name}',
           f'#SBATCH --array=0-{num_units - 1}',
           f'#SBATCH --time={time_limit}',
           f'#SBATCH --mem={mem}',
           f'#SBATCH --cpus-per-task={cpus_per_task}',
           '#SBATCH --signal=B:TERM@120',
           '#SBATCH --requeue',
           f'#SBATCH --output={root}/slurm-%A_%a.out']
  if partition:
    lines.append(f'#SBATCH --partition={partition}')
  if gpus_per_task:
    lines.append(f'#SBATCH --gpus-per-task={gpus_per_task}')
  lines += ['# Generated by vae-sweep (scripts/sweep.py) --mode slurm; submit with: sbatch THIS_FILE',
            'set -euo pipefail',
            # this package first on the path, installed or not (as settings.command does)
            f'export PYTHONPATH={shlex.quote(settings.package_root())}"${{PYTHONPATH:+:$PYTHONPATH}}"',
            'task=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-0} ))']
  if gpus_per_task:  # GPUs asked for: a jax without an accelerator fails fast, in one line
    check = ('import jax, sys; sys.exit(0 if jax.default_backend() != "cpu" else 3)')
    lines.append(f'{shlex.quote(python)} -c {shlex.quote(check)} 2>/dev/null || {{ echo '
                 f'"error: this job asked for GPUs but the jax of {shlex.quote(python)} has no '
                 'accelerator; install jax with its CUDA (or TPU) extra there (README, GPU and '
                 'TPU) or set --gpus_per_task 0" >&2; exit 2; }')
  lines += [f'exec {quoted} --task_index "$task"', '']
  return '\n'.join(lines)
