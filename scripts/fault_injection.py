"""Kill -9 a training run at random moments, rerun it, and compare with an uninterrupted run.

  python scripts/fault_injection.py --workdir /tmp/faults [--kills 10] [--seed 0]
      [--config configs/default.py:smoke] [flags for train.py ...]
  python scripts/fault_injection.py --sweep --workdir /tmp/sweep_faults [--kills 24]

With --sweep, the same for a vmap sweep (`scripts/sweep.py --mode vmap` of
configs/default.py:smoke,sweep=tiny4, four members in one program): every third kill is
made at an injection point instead of a random moment, in turn during a checkpoint's
write (VAE_INJECT_KILL_DURING_SAVE) and between two members' saves of one step
(VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES), at the next checkpoint after the members'
newest committed step; then the sweep is rerun to the end and every member compared
with the uninterrupted sweep's.

Trains the config once uninterrupted (WORKDIR/reference), then into
WORKDIR/killed: starts train.py, kills it with SIGKILL after a random delay,
`--kills` times (some kills land during compilation, some mid-chunk, some
while a checkpoint is written), then lets it finish. Reports whether the two
runs ended with equal metrics.jsonl (minus wall-clock fields) and equal
parameters, and whether any event is duplicated. Exit code 0 when all hold.
"""

import json
import pathlib
import random
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top

from vae.commands import cli  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_FLAGS = ('--config.train.num_epochs=6', '--config.train.checkpoint_every_epochs=0.5',
                 '--config.train.eval_every_epochs=3')


def _cmd(config, workdir, flags):
  return [sys.executable, str(REPO / 'train.py'), '--config', config, '--workdir', str(workdir),
          *flags]


def _events(workdir):
  from vae.training import metrics_io  # pylint: disable=g-import-not-at-top
  return [{k: v for k, v in e.items() if k not in ('wall_time', 'elapsed_s')}
          for e in metrics_io.read_metrics(pathlib.Path(workdir) / 'metrics.jsonl')]


def _params(workdir):
  import jax  # pylint: disable=g-import-not-at-top
  import vae  # pylint: disable=g-import-not-at-top
  return [np.asarray(a) for a in jax.tree.leaves(vae.load(workdir, 'latest').params)]


def run(workdir, kills=10, seed=0, config='configs/default.py:smoke', flags=DEFAULT_FLAGS):
  """Runs the experiment; returns the report dict."""
  workdir = pathlib.Path(workdir)
  ref, killed = workdir / 'reference', workdir / 'killed'
  subprocess.run(_cmd(config, ref, flags), cwd=REPO, check=True, capture_output=True)
  t0 = time.time()
  subprocess.run(_cmd(config, workdir / 'timing', flags), cwd=REPO, check=True,
                 capture_output=True)
  duration = time.time() - t0
  rng = random.Random(seed)
  delays = []
  for _ in range(kills):
    delay = rng.uniform(0.3 * duration, 1.0 * duration)
    proc = subprocess.Popen(_cmd(config, killed, flags), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
      proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()
    delays.append(round(delay, 2))
  subprocess.run(_cmd(config, killed, flags), cwd=REPO, check=True, capture_output=True)
  ev_k, ev_r = _events(killed), _events(ref)
  keys = [(e['event'], e['step']) for e in ev_k]
  report = {'kills': kills, 'kill_delays_s': delays, 'run_seconds': round(duration, 1),
            'equal_events': ev_k == ev_r, 'no_duplicates': len(keys) == len(set(keys)),
            'equal_params': all(np.array_equal(a, b)
                                for a, b in zip(_params(killed), _params(ref)))}
  return report


SWEEP_SPEC = 'configs/default.py:smoke,sweep=tiny4'
SWEEP_FLAGS = ('--config.train.num_epochs=40', '--config.train.checkpoint_every_epochs=0.5',
               '--config.train.eval_every_epochs=2')
STEPS_PER_CHECKPOINT = 6  # the smoke sets: 768 training examples, batch 64, half an epoch


def _sweep_cmd(root, flags):
  return [sys.executable, str(REPO / 'scripts' / 'sweep.py'), '--config', SWEEP_SPEC,
          '--workdir', str(root), '--mode', 'vmap', *flags]


def _committed(member_dir):
  ckpts = pathlib.Path(member_dir) / 'checkpoints'
  if not ckpts.is_dir():
    return 0
  return max([int(p.name) for p in ckpts.iterdir()
              if p.name.isdigit() and (p / '_CHECKPOINT_METADATA').is_file()] or [0])


def run_sweep_campaign(workdir, kills=24, seed=0, flags=SWEEP_FLAGS):
  """The vmap-sweep campaign; returns the report dict."""
  import os  # pylint: disable=g-import-not-at-top
  workdir = pathlib.Path(workdir)
  ref, killed = workdir / 'reference', workdir / 'killed'
  t0 = time.time()
  subprocess.run(_sweep_cmd(ref, flags), cwd=REPO, check=True, capture_output=True)
  duration = time.time() - t0
  members = sorted(p.parent.name for p in ref.glob('*/done.json'))
  rng = random.Random(seed)
  attempts = []
  for k in range(kills):
    env, how = dict(os.environ), f'random, after {{delay}} s'
    # Short runs: each attempt gets a few seconds past its start-up, so the kills are spread
    # over the whole sweep (some land in the start-up or a compilation).
    delay = rng.uniform(0.05 * duration, 0.2 * duration)
    if k % 3 == 2:  # an injection point at the next checkpoint of every member
      step = (min(_committed(killed / m) for m in members) // STEPS_PER_CHECKPOINT + 1
              ) * STEPS_PER_CHECKPOINT
      var = ('VAE_INJECT_KILL_DURING_SAVE' if (k // 3) % 2 == 0
             else 'VAE_INJECT_KILL_BETWEEN_MEMBER_SAVES')
      env[var], delay, how = str(step), 10 * duration, f'{var}={step}'
    proc = subprocess.Popen(_sweep_cmd(killed, flags), cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
      code = proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
      proc.kill()
      code = proc.wait()
    attempts.append({'how': how.format(delay=round(delay, 1)), 'exit': code,
                     'committed_after': {m: _committed(killed / m) for m in members}})
  final = subprocess.run(_sweep_cmd(killed, flags), cwd=REPO, capture_output=True, text=True)
  equal_events = {m: _events(killed / m) == _events(ref / m) for m in members}
  equal_params = {m: all(np.array_equal(a, b) for a, b in zip(_params(killed / m),
                                                              _params(ref / m)))
                  for m in members}
  keys = {m: [(e['event'], e['step']) for e in _events(killed / m)] for m in members}
  return {'sweep': SWEEP_SPEC, 'flags': list(flags), 'members': members, 'kills': kills,
          'killed_by_signal': sum(a['exit'] == -9 for a in attempts),
          'uninterrupted_seconds': round(duration, 1), 'attempts': attempts,
          'final_exit': final.returncode,
          'equal_events': equal_events, 'equal_params': equal_params,
          'no_duplicates': {m: len(k) == len(set(k)) for m, k in keys.items()},
          'moved_aside': sorted(str(p.relative_to(killed))
                                for p in killed.glob('*/checkpoints/*.*-*'))}


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__, config_overrides=True)
  parser.add_argument('--workdir', required=True,
                      help='directory for the reference and the killed runs (created)')
  parser.add_argument('--kills', type=cli.positive_int, default=10,
                      help='SIGKILLs at random moments before the run may finish')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0,
                      help='seed of the kill delays')
  parser.add_argument('--config', default='configs/default.py:smoke',
                      help='config of the runs; further --config.a.b=value flags go to train.py')
  parser.add_argument('--sweep', action='store_true',
                      help='kill a vmap sweep instead (random moments and injection points)')
  parser.add_argument('--out', default='', help='also write the report (JSON) here')
  args, flags = parser.parse_known_args(argv)
  if args.sweep:
    report = run_sweep_campaign(args.workdir, args.kills, args.seed, tuple(flags) or SWEEP_FLAGS)
    ok = (report['final_exit'] == 0 and all(report['equal_events'].values())
          and all(report['equal_params'].values()) and all(report['no_duplicates'].values()))
  else:
    report = run(args.workdir, args.kills, args.seed, args.config, tuple(flags) or DEFAULT_FLAGS)
    ok = report['equal_events'] and report['equal_params'] and report['no_duplicates']
  print(json.dumps(report, indent=2))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(report, indent=1) + '\n')
  return 0 if ok else 1


if __name__ == '__main__':
  sys.exit(main())
