"""A sweep root's record: ROOT/sweep.json (config, overrides, members and their statuses,
`SweepRecord`), each member's own status file, and reading them back (`members`, `statuses`,
`read_sweep_json`, `saved_groups`), every file checked for its shape."""

import fcntl
import hashlib
import json
import logging
import pathlib

from vae import config_lib
from vae.sweeps.plan import member_dir, member_name, natural_key
from vae.training import metrics_io, run_dir

log = logging.getLogger('vae')


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


def members(root):
  """(name, overrides, workdir) of every member, in natural order of their names
  (`plan.natural_key`): from sweep.json, else subdirectories.

  A member's directory is ROOT/<name> wherever ROOT now is: a sweep copied from a cluster
  or moved keeps its members (the absolute paths sweep.json records are not used)."""
  root = pathlib.Path(root)
  if (root / 'sweep.json').exists():
    data = read_sweep_json(root / 'sweep.json')
    return sorted([(m['name'], m['overrides'], member_dir(root, m['name']))
                   for m in data['members']], key=lambda m: natural_key(m[0]))
  return sorted([(d.name, {}, d) for d in root.iterdir() if (d / 'metrics.jsonl').exists()],
                key=lambda m: natural_key(m[0]))


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

  def __init__(self, root, config_arg, overrides, config_overrides=None, base_content=None):
    self.root = pathlib.Path(root)
    self.path = self.root / 'sweep.json'
    config_overrides = {k: list(v) if isinstance(v, tuple) else v
                        for k, v in (config_overrides or {}).items()}
    members = [{'name': member_name(o), 'overrides': o,
                'workdir': str(member_dir(self.root, member_name(o)))} for o in overrides]
    self.saved_mode = None
    if self.path.exists():
      saved = read_sweep_json(self.path)
      self.saved_mode = saved.get('mode')
      if saved.get('config_overrides', {}) != config_overrides:
        raise config_lib.ConfigError(
            f'{self.path} was run with --config overrides {saved.get("config_overrides", {})}, '
            f'not {config_overrides}; rerun with the same ones or use a new --workdir')
      names = {m['name'] for m in members}  # members of an earlier --axis cut stay listed
      members += [{'name': m['name'], 'overrides': m['overrides'],
                   'workdir': str(member_dir(self.root, m['name']))}  # even if the root moved
                  for m in saved.get('members', []) if m['name'] not in names]
      if base_content is not None and 'config_content' not in saved:
        log.warning('%s records only the path of its config (%s); its content is recorded '
                    'from this run on', self.path, config_arg)
    self.data = {'config': config_arg, 'config_overrides': config_overrides,
                 'imports': list(config_lib.PLUGINS), 'members': members}
    if base_content is not None:  # what the file said, so an edit of it can be seen
      text = json.dumps(base_content, sort_keys=True)
      self.data.update(config_content=base_content,
                       config_sha256=hashlib.sha256(text.encode()).hexdigest())
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
