"""Trains a VAE: python train.py --config configs/default.py --workdir runs/default.

A thin entry point: flags in, `vae.loop.train_and_evaluate(config, workdir)`
out. Bad input (config, data, checkpoint) ends with one line on stderr and
exit code 2; NaN/Inf in training with exit code 3.
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from vae import checkpointing, config_lib, data, loop, step

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:arg]).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and images.')
flags.DEFINE_string('coordinator_address', None,
                    'Multi-host: host:port of process 0 (omit on TPU/SLURM: auto-detected).')
flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.')
flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index.')
flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() before training.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  logging.getLogger('absl').setLevel(logging.WARNING)
  if FLAGS.distributed or FLAGS.coordinator_address:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                               num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
  try:
    result = loop.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (config_lib.ConfigError, data.DataError, checkpointing.CheckpointError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except step.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(3)
  summary = {k: v for k, v in result.items() if k.startswith(('test/', 'val/'))}
  print(f'{result["status"]} at step {result["step"]}: ' +
        ', '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}'
                  for k, v in sorted(summary.items())))


if __name__ == '__main__':
  app.run(main)
