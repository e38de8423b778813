"""Tests of vae/training/optim.py: every optimizer and schedule, the IWAE staircase, EMA."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from vae.training import optim


def _optim_config(**overrides):
  oc = ml_collections.ConfigDict(default.get_config().optim.to_dict())
  for k, v in overrides.items():
    oc[k] = v
  return oc


@pytest.mark.parametrize('name', ['adam', 'adamw', 'adagrad', 'sgd'])
@pytest.mark.parametrize('schedule', ['constant', 'cosine', 'warmup_cosine'])
def test_every_optimizer_descends(name, schedule):
  lr = 0.5 if name == 'adagrad' else 0.05  # adagrad's steps shrink as squares accumulate
  oc = _optim_config(name=name, schedule=schedule, lr=lr, warmup_epochs=1.0,
                     weight_decay=1e-4, grad_clip=10.0)
  tx, lr_fn = optim.make_optimizer(oc, steps_per_epoch=5, total_steps=100)
  params = {'w': jnp.array([3.0, -2.0])}
  loss = lambda p: jnp.sum(p['w'] ** 2)
  state = tx.init(params)
  start = float(loss(params))
  for _ in range(60):
    updates, state = tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  assert float(loss(params)) < 0.5 * start
  assert float(lr_fn(0)) <= lr + 1e-9


def test_iwae_staircase_matches_the_paper():
  oc = _optim_config(schedule='iwae_staircase', lr=1e-3, iwae_stages=8)
  _, lr_fn = optim.make_optimizer(oc, steps_per_epoch=10, total_steps=32800)
  ends = optim.iwae_staircase_boundaries(10, 8)
  assert ends[-1] == 3280 * 10 and optim.total_iwae_epochs(8) == 3280
  starts = [0] + ends[:-1]
  for i, s in enumerate(starts):  # stage i: 3^i epochs at 1e-3 * 10^(-i/7)
    assert float(lr_fn(s)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5)
    assert float(lr_fn(s + 3 ** i * 10 - 1)) == pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-5)


def test_constant_with_warmup_and_ema():
  _, lr_fn = optim.make_optimizer(_optim_config(lr=0.1, warmup_epochs=2.0), 5, 100)
  assert float(lr_fn(0)) == 0.0 and float(lr_fn(5)) == pytest.approx(0.05)
  assert float(lr_fn(50)) == pytest.approx(0.1)
  ema = optim.ema_update({'a': jnp.zeros(2)}, {'a': jnp.ones(2)}, 0.9)
  np.testing.assert_allclose(ema['a'], 0.1)
