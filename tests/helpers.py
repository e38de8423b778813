"""Helpers shared by the tests: smoke configs, reading a workdir, running the command lines."""

import contextlib
import io
import os
import pathlib
import runpy
import subprocess
import sys

import jax
import numpy as np

import vae
from configs import default
from vae import metrics_io

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / 'tests' / 'fixtures'
VOLATILE = ('wall_time', 'elapsed_s')
SLOW_FLAGS = ('--config.train.num_epochs=6', '--config.train.checkpoint_every_epochs=0.5',
              '--config.train.eval_every_epochs=3')


def smoke_config(**overrides):
  """The default config shrunk to seconds (synthetic data), with dotted-key overrides."""
  c = default.get_config('smoke')
  with c.unlocked():
    for key, value in overrides.items():
      node = c
      *path, last = key.split('.')
      for p in path:
        node = node[p]
      node[last] = value
  return c


def read_events(workdir):
  """metrics.jsonl's events without the wall-clock fields."""
  return [{k: v for k, v in e.items() if k not in VOLATILE}
          for e in metrics_io.read_metrics(pathlib.Path(workdir) / 'metrics.jsonl')]


def final_params(workdir):
  model = vae.load(workdir, 'latest')
  return model.step, model.params


def leaves(tree):
  """{path string: numpy array} of a pytree."""
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def run_train(workdir, *flags, wait=True, config='configs/default.py:smoke', env=None):
  """train.py in a subprocess (for real exit codes, signals and kills)."""
  cmd = [sys.executable, str(REPO / 'train.py'), '--config', config, '--workdir', str(workdir),
         *flags]
  env = dict(os.environ, PYTHONUNBUFFERED='1', **(env or {}))
  if wait:
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
  return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=env)


def run_script(name, *argv):
  """Runs scripts/NAME.py in this process as its command line would: (exit code, out, err)."""
  out, err = io.StringIO(), io.StringIO()
  old_argv = sys.argv
  sys.argv = [str(REPO / 'scripts' / f'{name}.py'), *map(str, argv)]
  code = 0
  try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      runpy.run_path(sys.argv[0], run_name='__main__')
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
  finally:
    sys.argv = old_argv
  return code, out.getvalue(), err.getvalue()
