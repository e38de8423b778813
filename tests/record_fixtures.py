"""Records the smoke-run fixtures that tests/training/test_loop.py compares against.

  python -m tests.record_fixtures            # tests/fixtures/smoke_reference.* (defaults)

The recording holds the metrics' events (without wall-clock fields), the final step and
parameters, the processor's model name (`recorded_on`: the tolerance is 1e-6 relative on
that class, 1e-3 on another) and the jax version. Record again only when a change of the
numbers is intended, and say why in the commit.
"""

import json
import sys
import tempfile

import jax
import numpy as np

from tests.helpers import FIXTURES, final_params, leaves, read_events, smoke_config
from vae.training import loop


def cpu_model_name():
  """The processor's model name as /proc/cpuinfo gives it ('' where it does not)."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((line.split(':', 1)[1].strip() for line in f
                   if line.startswith('model name')), '')
  except OSError:
    return ''


def record(name, **overrides):
  """Trains the smoke config (with dotted-key `overrides`) and writes FIXTURES/name.json
  and FIXTURES/name_params.npz."""
  with tempfile.TemporaryDirectory() as work:
    loop.train_and_evaluate(smoke_config(**overrides), work)
    step, params = final_params(work)
    out = {'recorded_on': cpu_model_name(), 'jax': jax.__version__, 'step': int(step),
           'overrides': overrides, 'events': read_events(work)}
    (FIXTURES / f'{name}.json').write_text(json.dumps(out, indent=1) + '\n')
    np.savez(FIXTURES / f'{name}_params.npz', **leaves(params))


if __name__ == '__main__':
  record(sys.argv[1] if len(sys.argv) > 1 else 'smoke_reference')
