"""Tests of vae/evaluation/latent_space.py: the information decomposition, holes, the aggregate posterior."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae.evaluation import latent_space


def test_kl_decomposes_into_mutual_information_and_marginal_kl():
  rng = np.random.default_rng(0)
  mean = jnp.asarray(rng.normal(0, 1.0, (400, 2)), jnp.float32)
  logvar = jnp.asarray(rng.uniform(-1.5, 0.0, (400, 2)), jnp.float32)
  d = latent_space.latent_diagnostics(mean, logvar, jax.random.key(0))
  assert d['mc_avg_kl'] == pytest.approx(d['avg_kl'], rel=0.06)
  assert d['mutual_info'] > 0 and d['marginal_kl'] > 0
  assert d['mutual_info'] <= d['mutual_info_upper_bound'] + 1e-6


def test_collapsed_posterior_has_no_information_and_no_holes():
  mean, logvar = jnp.zeros((300, 3)), jnp.zeros((300, 3))  # q(z | x) = p(z) for every x
  d = latent_space.latent_diagnostics(mean, logvar, jax.random.key(1))
  assert d['avg_kl'] == 0.0
  assert abs(d['mutual_info']) < 1e-4 and abs(d['marginal_kl']) < 1e-4
  assert d['prior_hole_fraction'] == 0.0 and abs(d['reverse_kl']) < 1e-4


def test_narrow_far_posteriors_leave_holes():
  rng = np.random.default_rng(1)
  mean = jnp.asarray(rng.normal(5.0, 0.3, (200, 2)), jnp.float32)   # data far from the prior
  logvar = jnp.full((200, 2), -6.0)
  d = latent_space.latent_diagnostics(mean, logvar, jax.random.key(2))
  assert d['prior_hole_fraction'] > 0.99 and d['nn_distance_ratio'] > 10
  ae = latent_space.latent_diagnostics(mean, logvar, jax.random.key(2), deterministic=True)
  assert 'mutual_info' not in ae and ae['nn_distance_ratio'] == d['nn_distance_ratio']


def test_aggregate_posterior_density_matches_direct_mixture():
  rng = np.random.default_rng(2)
  mean = rng.normal(size=(7, 3))
  logvar = rng.normal(0, 0.3, (7, 3))
  z = rng.normal(size=(5, 3))
  got = latent_space.log_aggregate_posterior(jnp.asarray(z, jnp.float32),
                                           jnp.asarray(mean, jnp.float32),
                                           jnp.asarray(logvar, jnp.float32), chunk=2)
  var = np.exp(logvar)
  dens = np.exp(-0.5 * (((z[:, None] - mean[None]) ** 2) / var[None]).sum(-1)) / np.sqrt(
      (2 * np.pi) ** 3 * var.prod(-1))[None]
  np.testing.assert_allclose(got, np.log(dens.mean(1)), rtol=1e-4)
