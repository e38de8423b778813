"""Kill -9 a training run at random moments, rerun it, and compare with an uninterrupted run.

  python scripts/fault_injection.py --workdir /tmp/faults [--kills 10] [--seed 0]
      [--config configs/default.py:smoke] [flags for train.py ...]

Trains the config once uninterrupted (WORKDIR/reference), then into
WORKDIR/killed: starts train.py, kills it with SIGKILL after a random delay,
`--kills` times (some kills land during compilation, some mid-chunk, some
while a checkpoint is written), then lets it finish. Reports whether the two
runs ended with equal metrics.jsonl (minus wall-clock fields) and equal
parameters, and whether any event is duplicated. Exit code 0 when all hold.
"""

import argparse
import json
import pathlib
import random
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_FLAGS = ('--config.train.num_epochs=6', '--config.train.checkpoint_every_epochs=0.5',
                 '--config.train.eval_every_epochs=3')


def _cmd(config, workdir, flags):
  return [sys.executable, str(REPO / 'train.py'), '--config', config, '--workdir', str(workdir),
          *flags]


def _events(workdir):
  from vae import metrics_io  # pylint: disable=g-import-not-at-top
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


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--kills', type=int, default=10)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--config', default='configs/default.py:smoke')
  args, flags = parser.parse_known_args(argv)
  report = run(args.workdir, args.kills, args.seed, args.config, tuple(flags) or DEFAULT_FLAGS)
  print(json.dumps(report, indent=2))
  return 0 if report['equal_events'] and report['equal_params'] and report['no_duplicates'] else 1


if __name__ == '__main__':
  sys.exit(main())
