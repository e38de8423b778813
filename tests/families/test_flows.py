"""Tests of vae/families/flows.py: MADE masks, the IAF step's log-determinant and its exact inverse."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.families import flows

D, C = 5, 3


def _step(reverse, seed=0):
  step = flows.IAFStep((16, 16), reverse=reverse)
  z = jax.random.normal(jax.random.key(seed), (D,))
  ctx = jax.random.normal(jax.random.key(seed + 1), (C,))
  params = step.init(jax.random.key(seed + 2), z, ctx)
  # Move away from the near-identity start so the test has something to check.
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(seed + 3), a.shape),
                        params)
  return step, params, z, ctx


@pytest.mark.parametrize('reverse', [False, True])
def test_iaf_log_det_equals_the_log_abs_det_of_the_numerical_jacobian(reverse):
  step, params, z, ctx = _step(reverse)
  jac = jax.jit(jax.jacfwd(lambda v: step.apply(params, v, ctx)[0]))(z)
  _, log_abs_det = np.linalg.slogdet(np.asarray(jac, np.float64))
  _, log_det = jax.jit(step.apply)(params, z, ctx)
  np.testing.assert_allclose(float(log_det), log_abs_det, rtol=1e-5, atol=1e-5)
  # Autoregressive: output d depends on z only through d itself and the dimensions before
  # it in the step's order, so the Jacobian is triangular in that order.
  j = np.asarray(jac)
  order = np.arange(D)[::-1] if reverse else np.arange(D)
  permuted = j[np.ix_(order, order)]
  assert np.allclose(np.triu(permuted, 1), 0.0)
  assert np.all(np.abs(np.diag(permuted)) > 1e-3)


@pytest.mark.parametrize('reverse', [False, True])
def test_iaf_step_is_inverted_exactly_dimension_by_dimension(reverse):
  step, params, z, ctx = _step(reverse, seed=10)
  z_new, _ = step.apply(params, z, ctx)
  shift_gate = lambda v: step.apply(params, v, ctx, shift_and_gate=True)
  z_back = jax.jit(lambda v: flows.inverse_step(shift_gate, v, reverse))(z_new)
  np.testing.assert_allclose(np.asarray(z_back), np.asarray(z), rtol=1e-5, atol=1e-5)


def test_made_masks_connect_each_output_to_every_earlier_input_and_no_other():
  masks = flows.made_masks(D, (12, 12))
  reach = masks[0]
  for m in masks[1:]:
    reach = (reach @ m > 0).astype(np.float32)
  # reach[i, o]: input i reaches output o iff i < o (forward order).
  np.testing.assert_array_equal(reach > 0, np.triu(np.ones((D, D)), 1) > 0)


def test_the_context_reaches_every_output_including_the_first():
  step, params, z, ctx = _step(False, seed=20)
  jac_ctx = jax.jit(jax.jacfwd(lambda c: step.apply(params, z, c, shift_and_gate=True)[1]))(ctx)
  assert np.all(np.abs(np.asarray(jac_ctx)).sum(axis=1) > 0)


def test_a_fresh_flow_starts_close_to_the_identity():
  flow = flows.IAF(2, (32,))
  z = jax.random.normal(jax.random.key(0), (64, D))
  ctx = jax.random.normal(jax.random.key(1), (64, C))
  params = flow.init(jax.random.key(2), z, ctx)
  out, log_det = jax.jit(flow.apply)(params, z, ctx)
  # Gates near sigmoid(2) = 0.88: the log-det per dimension and step is near log(0.88) =
  # -0.127 (-0.141 here), and every example's is below 0 (each gate < 1). The tolerance is
  # well below 0.127, so a log-det of 0 fails.
  assert abs(float(log_det.mean()) / (2 * D) - np.log(jax.nn.sigmoid(2.0))) < 0.04
  assert np.all(np.asarray(log_det) < -0.05 * 2 * D)
  assert float(jnp.corrcoef(out.ravel(), z.ravel())[0, 1]) > 0.7
