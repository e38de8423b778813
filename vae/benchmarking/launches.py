"""Training launched as a separate process, timed from outside: seconds from launch to the
first step (`first_step_seconds`), examples/s at the default cadence with evaluations and
checkpoints (`epochs_rate`) and between them (`steady_examples_per_s`).

A `Trainer` says how to start training: this package's `python -m vae.commands.train`
(`package_trainer`), or the train.py of another checkout that a benchmark compares with.
"""

import dataclasses
import json
import pathlib
import subprocess
import tempfile
import time
from typing import Optional, Sequence

import numpy as np

from vae import settings


@dataclasses.dataclass(frozen=True)
class Trainer:
  argv: Sequence[str]          # the command before its flags
  env: dict                    # the child's environment
  cwd: Optional[str] = None    # where it runs (config paths are relative to it)

  def command(self, *flags):
    return [*self.argv, *flags]


def package_trainer():
  """This package's trainer (`vae-train`), whatever the working directory."""
  argv, env = settings.command('vae.commands.train')
  return Trainer(argv, env)


# The host loop's stand-in model: so small that what is left is the loop around the step.
TINY = ('configs/pytorch_example.py:epochs={epochs}', '--config.model.hidden=(32,)',
        '--config.model.latent_dim=2')


def first_step_seconds(trainer, config_spec='configs/default.py'):
  """Wall seconds from launching `trainer` on `config_spec` to its first metrics event:
  (cold: an empty compilation cache, warm: the same launch again, reusing the programs the
  first one compiled; vae/commands/compilation_cache.py)."""
  with tempfile.TemporaryDirectory() as cache:
    env = dict(trainer.env, **{settings.COMPILATION_CACHE_ENV: cache})
    return tuple(_launch_to_first_event(trainer, config_spec, env) for _ in range(2))


def _launch_to_first_event(trainer, config_spec, env):
  with tempfile.TemporaryDirectory() as tmp:
    cmd = trainer.command('--config', config_spec, '--workdir', tmp,
                          '--config.train.log_every_steps=1')
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=trainer.cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = pathlib.Path(tmp) / 'metrics.jsonl'
    try:
      while time.time() - t0 < 300:
        if metrics.exists() and metrics.stat().st_size > 0:
          return time.time() - t0
        if proc.poll() is not None:
          return None
        time.sleep(0.02)
    finally:
      proc.kill()
      proc.wait()
  return None


def epochs_rate(trainer, epochs, skip_epochs=2, extra=()):
  """`trainer` on the tiny model (TINY) at its default cadence (evaluation every 5 epochs,
  checkpoints every 5, a log every 100 steps): examples/s from the end of epoch
  `skip_epochs` (compilation excluded) to the end, evaluations and checkpoints included; and
  its run.json timing (None where the trainer does not record it)."""
  spec, *flags = TINY
  with tempfile.TemporaryDirectory() as tmp:
    cmd = trainer.command('--config', spec.format(epochs=epochs), '--workdir', tmp, *flags,
                          *extra)
    subprocess.run(cmd, cwd=trainer.cwd, env=trainer.env, check=True, capture_output=True)
    events = [json.loads(line) for line in open(pathlib.Path(tmp) / 'metrics.jsonl')]
    session = json.loads((pathlib.Path(tmp) / 'run.json').read_text())['sessions'][-1]
    end_t = session['end']
  train = [e for e in events if e['event'] == 'train']
  spe = train[-1]['step'] / epochs
  start = min((e for e in train if e['step'] >= skip_epochs * spe), key=lambda e: e['step'])
  examples = train[-1]['examples_seen'] - start['examples_seen']
  return examples / (end_t - start['wall_time']), session.get('timing')


def steady_examples_per_s(trainer, config_spec, epochs, extra=()):
  """Steady-state examples/s of `trainer`: log windows that hold no evaluation or checkpoint
  (the first window, with compilation, is left out); the median over windows."""
  with tempfile.TemporaryDirectory() as tmp:
    cmd = trainer.command('--config', config_spec, '--workdir', tmp,
                          f'--config.train.num_epochs={epochs}',
                          f'--config.train.eval_every_epochs={epochs}',
                          f'--config.train.checkpoint_every_epochs={epochs}',
                          '--config.train.log_every_steps=100', *extra)
    subprocess.run(cmd, cwd=trainer.cwd, env=trainer.env, check=True, capture_output=True)
    events = [json.loads(line) for line in open(pathlib.Path(tmp) / 'metrics.jsonl')]
  train = [e for e in events if e['event'] == 'train']
  last_step = train[-1]['step']
  rates = [(b['examples_seen'] - a['examples_seen']) / (b['wall_time'] - a['wall_time'])
           for a, b in zip(train[1:], train[2:]) if b['step'] != last_step]
  return float(np.median(rates))
