"""Records the smoke-run fixtures that tests/training/test_loop.py compares against.

  python -m tests.record_fixtures            # tests/fixtures/smoke_reference.* (defaults)
  python -m tests.record_fixtures exemplar   # tests/fixtures/exemplar_reference.* (EXEMPLAR)

The recording holds the metrics' events (without wall-clock fields), the final step and
parameters, the processor's model name (`recorded_on`: the tolerance is 1e-6 relative on
that class, 1e-3 on another) and the jax version. Record again only when a change of the
numbers is intended, and say why in the commit.
"""

import json
import pathlib
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


# A 100-step run with the Exemplar prior (4 epochs of 25 steps, a retrieval from 300
# candidates per step): its events, final parameters and the cache of exemplar means.
EXEMPLAR = {'model.prior': 'exemplar', 'model.exemplar_candidates': 300,
            'data.synthetic_train_size': 1856, 'train.num_epochs': 4.0}


def final_state_leaves(workdir, step):
  """{path: array} of the saved non-parameter state at `step` (the prior's and the
  objective's), read from the checkpoint's 'state' item as saved."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  state = ocp.StandardCheckpointer().restore(
      pathlib.Path(workdir).absolute() / 'checkpoints' / str(step) / 'state')
  return {k: v for k, v in leaves(state).items() if 'prior_state' in k or 'objective_state' in k}


def record(name, **overrides):
  """Trains the smoke config (with dotted-key `overrides`) and writes FIXTURES/name.json
  and FIXTURES/name_params.npz (and name_state.npz: the prior's final state, if any)."""
  with tempfile.TemporaryDirectory() as work:
    loop.train_and_evaluate(smoke_config(**overrides), work)
    step, params = final_params(work)
    out = {'recorded_on': cpu_model_name(), 'jax': jax.__version__, 'step': int(step),
           'overrides': overrides, 'events': read_events(work)}
    (FIXTURES / f'{name}.json').write_text(json.dumps(out, indent=1) + '\n')
    np.savez(FIXTURES / f'{name}_params.npz', **leaves(params))
    state = final_state_leaves(work, step)
    if state:
      np.savez(FIXTURES / f'{name}_state.npz', **state)


if __name__ == '__main__':
  if sys.argv[1:] == ['exemplar']:
    record('exemplar_reference', **EXEMPLAR)
  else:
    record(sys.argv[1] if len(sys.argv) > 1 else 'smoke_reference')
