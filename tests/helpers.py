"""Helpers shared by the tests: smoke configs, reading a workdir, running the command lines."""

import contextlib
import io
import os
import pathlib
import runpy
import struct
import subprocess
import sys

import jax
import numpy as np

import vae
from configs import default
from vae import config_lib
from vae.training import metrics_io

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
      config_lib.set_field(c, key, value)
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
  """Calls the command line's `main(argv)` in this process: (exit code, stdout, stderr).

  `name` is a script of scripts/ ('evaluate') or 'train' (train.py). The file is run as a
  module (not imported from the scripts package), as `python scripts/NAME.py` would load it.
  """
  path = REPO / 'train.py' if name == 'train' else REPO / 'scripts' / f'{name}.py'
  argv = [str(a) for a in argv]
  out, err = io.StringIO(), io.StringIO()
  saved_argv, sys.argv = sys.argv, [str(path), *argv]  # config_flags reads sys.argv
  try:
    module = runpy.run_path(str(path), run_name=f'cli_{name}')
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        code = module['main']([str(path), *argv] if name == 'train' else argv)
      except SystemExit as e:  # argparse
        code = e.code
  finally:
    sys.argv = saved_argv
  return (0 if code is None else code), out.getvalue(), err.getvalue()


def tensorboard_values(logdir):
  """[(tag, plugin name, has image)] of every summary value in the event files below logdir."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  out = []
  for path in sorted(pathlib.Path(logdir).rglob('events.out.tfevents.*')):
    data, i = path.read_bytes(), 0
    while i + 12 <= len(data):  # TFRecord: length, crc, payload, crc
      n = struct.unpack('<Q', data[i:i + 8])[0]
      event = event_pb2.Event()
      event.ParseFromString(data[i + 12:i + 12 + n])
      i += 12 + n + 4
      for v in event.summary.value:
        out.append((v.tag, v.metadata.plugin_data.plugin_name, v.HasField('image')))
  return out
