"""Runs a config's sweep: python scripts/sweep.py --config configs/x.py[:arg] --workdir ROOT.

  --mode sequential  members one after another in this process (default)
  --mode processes   members as separate train.py processes, --parallel at a time
  --mode vmap        members that differ only in beta, free bits, warm-up, lr,
                     seed or latent size train together in one compiled program
                     (vae/multi_model.py); others are grouped by what they share
  --dry_run          print the members and their directories; run nothing

Each member runs into ROOT/<name>/ (name from its overrides, e.g.
`latent_dim=2,beta=0.5,seed=0`) with the files of a single run. Finished
members are skipped, interrupted ones resume, and ROOT/sweep.json records each
member's overrides and status. Then: scripts/summarize.py ROOT and
scripts/plot_curves.py ROOT --out FILE.
"""

import argparse
import importlib.util
import logging
import pathlib
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae import config_lib, data as data_lib, multi_model, sweeps  # pylint: disable=g-import-not-at-top
from vae import checkpointing, trainer

REPO = pathlib.Path(__file__).resolve().parents[1]


def load_config_module(spec):
  path, _, arg = spec.partition(':')
  path = pathlib.Path(path)
  if not path.is_file():
    raise config_lib.ConfigError(f'config file {path} not found')
  mod_spec = importlib.util.spec_from_file_location(f'sweep_config_{path.stem}', path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module, arg or None


def _flag(key, value):
  if isinstance(value, (tuple, list)):
    value = '(' + ','.join(str(v) for v in value) + (',)' if len(value) == 1 else ')')
  return f'--config.{key}={value}'


def run_sweep(config_spec, root, mode='sequential', parallel=2, dry_run=False):
  """Runs (or lists) the sweep; returns the SweepRecord."""
  module, arg = load_config_module(config_spec)
  if not hasattr(module, 'get_sweep'):
    raise config_lib.ConfigError(f'{config_spec} defines no get_sweep(arg); add one returning a '
                                 'list of override dicts (vae/sweeps.py)')
  base = module.get_config(arg)
  overrides = module.get_sweep(arg)
  configs = [sweeps.apply_overrides(base, o) for o in overrides]
  names = [sweeps.member_name(o) for o in overrides]
  if len(set(names)) != len(names):
    raise config_lib.ConfigError('sweep members have duplicate names; vary at least one field')
  for c in configs:
    config_lib.validate(c)
  root = pathlib.Path(root)
  record = sweeps.SweepRecord(root, config_spec, overrides)
  workdirs = [root / n for n in names]
  pending = [i for i, (c, w) in enumerate(zip(configs, workdirs))
             if not sweeps.is_finished(w, c)]
  if dry_run:
    for i, (n, w) in enumerate(zip(names, workdirs)):
      state = 'pending' if i in pending else 'finished (skipped)'
      print(f'{n:<48} {w}  {state}')
    print(f'{len(names)} members, {len(pending)} to run, mode {mode}')
    return record
  record.save()
  for i, m in enumerate(record.data['members']):
    if i not in pending:
      record.set(m['name'], 'finished')
  if mode == 'sequential':
    for i in pending:
      record.set(names[i], 'running')
      try:
        result = trainer.train_and_evaluate(configs[i], str(workdirs[i]))
      except Exception as e:
        record.set(names[i], 'failed', error=str(e).splitlines()[0][:300])
        raise
      record.set(names[i], 'finished' if result['status'] != 'SIGTERM' else 'interrupted')
  elif mode == 'processes':
    queue, running = list(pending), {}
    while queue or running:
      while queue and len(running) < parallel:
        i = queue.pop(0)
        cmd = [sys.executable, str(REPO / 'train.py'), '--config', config_spec,
               '--workdir', str(workdirs[i])] + [_flag(k, v) for k, v in overrides[i].items()]
        log_file = open(root / f'{names[i]}.log', 'w')
        running[i] = (subprocess.Popen(cmd, cwd=REPO, stdout=log_file,
                                       stderr=subprocess.STDOUT), log_file)
        record.set(names[i], 'running')
      for i, (proc, log_file) in list(running.items()):
        if proc.poll() is not None:
          log_file.close()
          record.set(names[i], 'finished' if proc.returncode == 0 else 'failed',
                     returncode=proc.returncode)
          del running[i]
      time.sleep(0.2)
  elif mode == 'vmap':
    groups = {}
    for i in pending:  # group by everything vmap cannot stack
      flat = multi_model._flat(configs[i])  # pylint: disable=protected-access
      key = tuple(sorted((k, str(v)) for k, v in flat.items()
                         if k not in multi_model.VMAPPABLE))
      groups.setdefault(key, []).append(i)
    for g, members in enumerate(groups.values()):
      for i in members:
        record.set(names[i], 'running', group=g)
      results = multi_model.train_members([configs[i] for i in members],
                                          [workdirs[i] for i in members],
                                          root / f'_vmap_group_{g}')
      for i, r in zip(members, results):
        record.set(names[i], 'finished' if r['status'] == 'finished' else 'interrupted')
  else:
    raise config_lib.ConfigError(f'unknown --mode {mode!r}; choose sequential, processes, vmap')
  return record


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--config', required=True, help='configs/x.py[:arg] with get_sweep')
  parser.add_argument('--workdir', required=True, help='sweep root directory')
  parser.add_argument('--mode', default='sequential', choices=('sequential', 'processes', 'vmap'))
  parser.add_argument('--parallel', type=int, default=2, help='processes at a time')
  parser.add_argument('--dry_run', action='store_true')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  try:
    record = run_sweep(args.config, args.workdir, args.mode, args.parallel, args.dry_run)
  except (config_lib.ConfigError, data_lib.DataError, checkpointing.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if not args.dry_run:
    failed = [m['name'] for m in record.data['members'] if m['status'] == 'failed']
    print(f'sweep {args.workdir}: {len(record.data["members"])} members, failed: {failed or "none"}')
    return 1 if failed else 0
  return 0


if __name__ == '__main__':
  sys.exit(main())
