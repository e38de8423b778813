"""Tests of vae/training/step.py's randomness and of the resume step (vae/training/checkpointing.py): each step
draws new noise from fold_in(loop key, step), and a resume continues from the newest step
that every member has committed."""

import json

import jax
import jax.numpy as jnp
import numpy as np

from tests import helpers
from vae import config_lib
from vae.families import models
from vae.training import checkpointing, optim
from vae.training import step as step_lib


def _smoke_step():
  c = helpers.smoke_config()
  shape = (28, 28, 1)
  model = models.build_model(c.model, shape)
  tx, lr_fn = optim.make_optimizer(c.optim, 10, 100)
  options = step_lib.step_options(c, 'cpu')
  train_step = jax.jit(step_lib.make_train_step(model, tx, lr_fn, options, None))
  state = step_lib.init_state(model, tx, shape, step_lib.root_keys(c.seed), ema=False)
  hp = step_lib.hyperparameters(c, 10)
  x = jax.random.randint(jax.random.key(0), (8,) + shape, 0, 256).astype(jnp.uint8)
  return train_step, state, hp, x


def test_successive_steps_draw_different_noise_and_a_step_repeats_its_own():
  """The same parameters and batch at steps 5 and 6 give different losses (new binarization
  and posterior noise); step 5 twice gives the same loss to the bit."""
  train_step, state, hp, x = _smoke_step()
  loss_at = lambda s: float(train_step(state.replace(step=jnp.int32(s)), x, hp)[1]['loss'])
  a, b, again = loss_at(5), loss_at(6), loss_at(5)
  assert a == again
  assert abs(a - b) > 1e-3, (a, b)
  # The noise depends on the loop key too: another seed's key draws other noise at step 5.
  other = state.replace(step=jnp.int32(5), rng=step_lib.root_keys(7)['loop'])
  assert abs(float(train_step(other, x, hp)[1]['loss']) - a) > 1e-3


def _tiny_state(value):
  return step_lib.TrainState(step=jnp.int32(value),
                             params={'w': jnp.full((3,), value, jnp.float32)},
                             opt_state={'mu': jnp.full((3,), -value, jnp.float32)},
                             ema_params={}, rng=jax.random.PRNGKey(0))


def test_resume_takes_the_newest_step_every_member_committed(tmp_path):
  """Member a committed steps 10, 20, 30 and member b 10, 20 (killed before its save of 30):
  a single run resumes at its newest; the group at 20 with each member's own step-20 state."""
  meta = {'config': config_lib.config_json(helpers.smoke_config()),
          'data': {'name': 'synthetic', 'shape': [28, 28, 1]}}
  a = checkpointing.Checkpointer(tmp_path / 'a', keep=5)
  b = checkpointing.Checkpointer(tmp_path / 'b', keep=5)
  for s in (10, 20, 30):
    a.save(s, _tiny_state(s), meta)
    if s < 30:
      b.save(s, _tiny_state(100 + s), meta)
  abstract = checkpointing.abstract_like(_tiny_state(0))
  states, step = checkpointing.restore_group([a], [abstract], [meta])  # a alone: its newest
  assert step == 30 and float(states[0].params['w'][0]) == 30.0
  states, step = checkpointing.restore_group([a, b], [abstract, abstract], [meta, meta])
  assert step == 20
  np.testing.assert_array_equal(states[0].params['w'], 20.0)
  np.testing.assert_array_equal(states[1].params['w'], 120.0)
  np.testing.assert_array_equal(states[1].opt_state['mu'], -120.0)
  # a's step 30 is kept aside, so that the group trains and saves it again.
  assert a.steps() == [10, 20]
  assert [p.name.split('.')[0] for p in (tmp_path / 'a').glob('30.uncommitted-*')] == ['30']
  for c in (a, b):
    c.close()


def test_step_options_come_from_the_config_and_the_backend_in_one_place(smoke_run):
  """The 'auto' choices resolve by backend (conv on the CPU: the host loop), every option is
  in the StepOptions the step is built from, and each session's run.json records them."""
  c = helpers.smoke_config()
  conv = helpers.smoke_config(**{'model.arch': 'conv'})
  assert step_lib.step_options(conv, 'cpu').chunk_loop == 'host'
  assert step_lib.step_options(conv, 'gpu').chunk_loop == 'device'
  assert step_lib.step_options(c, 'cpu', model_axis_size=1).member_loop == 'map'
  assert step_lib.step_options(c, 'gpu', model_axis_size=1).member_loop == 'vmap'
  assert step_lib.step_options(c, 'cpu').member_loop is None
  old = helpers.smoke_config(**{'train.norm_metrics': 'mean', 'objective.num_samples': 3})
  o = step_lib.step_options(old, 'cpu')
  assert o.last_value_metrics == () and o.objective.num_samples == 3
  assert step_lib.step_options(c, 'cpu').last_value_metrics == ('grad_norm', 'param_norm')
  workdir, _ = smoke_run
  session = json.loads((workdir / 'run.json').read_text())['sessions'][-1]
  assert session['step_options'] == step_lib.step_options(c, 'cpu').record()
