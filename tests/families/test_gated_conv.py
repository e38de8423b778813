"""The convolutional two-level model (ConvHVAE, vae/families/gated_conv.py): its wiring is
exact (q(z1 | x, z2) on the image and z2 apart, p(x | z1, z2) on z split in two), its
networks have the papers' shapes, and the image's part of q(z1 | x, z2) is computed once for
all samples of z2 without changing a value."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import fashion_mnist_conv_hvae
from vae.families import gated_conv, models, objectives
from vae.families.likelihoods import Likelihood


class ImageGaussian(nn.Module):
  """q(z2 | x): images [..., H, W, C] -> a linear mean and a free log-variance."""
  latent_dim: int

  @nn.compact
  def __call__(self, x):
    mean = nn.Dense(self.latent_dim, name='mean')(x.reshape(x.shape[:-3] + (-1,)))
    logvar = self.param('logvar', nn.initializers.constant(-0.5), (self.latent_dim,))
    return mean, jnp.broadcast_to(logvar, mean.shape)


class ImageAndZ2Gaussian(nn.Module):
  """q(z1 | x, z2) the conv model's way: the image [B, H, W, C] and z2 [..., B, D] apart."""
  latent_dim: int

  @nn.compact
  def __call__(self, x, z2):
    mean = (nn.Dense(self.latent_dim, name='x')(x.reshape(x.shape[:-3] + (-1,)))
            + nn.Dense(self.latent_dim, use_bias=False, name='z2')(z2))
    logvar = self.param('logvar', nn.initializers.constant(-0.5), (self.latent_dim,))
    return mean, jnp.broadcast_to(logvar, mean.shape)


class VectorGaussian(nn.Module):
  """p(z1 | z2): a linear mean and a free log-variance."""
  latent_dim: int

  @nn.compact
  def __call__(self, z):
    mean = nn.Dense(self.latent_dim, name='mean')(z)
    logvar = self.param('logvar', nn.initializers.constant(-0.5), (self.latent_dim,))
    return mean, jnp.broadcast_to(logvar, mean.shape)


class SplitDecoder(nn.Module):
  """p(x | z1, z2) the conv model's way: z = [z1, z2] read as its two halves."""
  image_shape: tuple
  latent_dim: int

  @nn.compact
  def __call__(self, z):
    n = int(np.prod(self.image_shape))
    loc = (nn.Dense(n, name='z1')(z[..., :self.latent_dim])
           + nn.Dense(n, use_bias=False, name='z2')(z[..., self.latent_dim:]))
    return loc.reshape(z.shape[:-1] + tuple(self.image_shape))


def test_conv_two_level_elbo_equals_a_float64_direct_sum():
  """With the networks replaced by fixed linear mean / log-variance functions wired as the
  conv model wires them, the library's ELBO, recon and per-layer KLs equal the same terms
  summed directly in float64 numpy (the MLP model's twin: test_models.py's
  test_two_level_elbo_equals_a_hand_computed_value)."""
  d, shape, sigma = 2, (2, 2, 1), 0.7
  model = models.VAE(ImageGaussian(d), SplitDecoder(shape, d),
                     Likelihood('gaussian', 'fixed', sigma), shape, d,
                     encoder_z1=ImageAndZ2Gaussian(d), prior_z1=VectorGaussian(d),
                     q_z1_input='image_and_z2')
  x = jax.random.uniform(jax.random.key(0), (6,) + shape)
  params = model.init(jax.random.key(1), x[:1], jax.random.key(2))['params']
  params = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.key(a.size), a.shape),
                        params)  # distinct log-variances and offsets in every layer
  key = jax.random.key(11)
  _, terms = jax.jit(lambda p: objectives.per_example_objective(model, {'params': p}, x, key))(
      params)
  k_top, k_z1 = jax.random.split(key)
  zeros = jnp.zeros((6, d))
  f64 = lambda a: np.asarray(a, np.float64)
  eps2 = f64(objectives.reparameterize(k_top, zeros, zeros))
  eps1 = f64(objectives.reparameterize(k_z1, zeros, zeros))
  p = jax.tree.map(f64, params)
  xf = f64(x).reshape(6, 4)
  m2 = xf @ p['encoder']['mean']['kernel'] + p['encoder']['mean']['bias']
  lv2 = p['encoder']['logvar']
  z2 = m2 + np.exp(lv2 / 2) * eps2
  q1 = p['encoder_z1']
  m1 = xf @ q1['x']['kernel'] + q1['x']['bias'] + z2 @ q1['z2']['kernel']
  lv1 = q1['logvar']
  z1 = m1 + np.exp(lv1 / 2) * eps1
  pm = z2 @ p['prior_z1']['mean']['kernel'] + p['prior_z1']['mean']['bias']
  plv = p['prior_z1']['logvar']
  dec = p['decoder']
  loc = z1 @ dec['z1']['kernel'] + dec['z1']['bias'] + z2 @ dec['z2']['kernel']
  recon = np.sum(-0.5 * ((xf - loc) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi), 1)
  kl2 = 0.5 * np.sum(np.exp(lv2) + m2 ** 2 - 1 - lv2, 1)
  kl1 = 0.5 * np.sum(plv - lv1 - 1 + (np.exp(lv1) + (m1 - pm) ** 2) / np.exp(plv), 1)
  for name, want in (('recon', recon), ('kl_z2', kl2), ('kl_z1', kl1),
                     ('elbo', recon - kl1 - kl2)):
    np.testing.assert_allclose(f64(terms[name]), want, rtol=1e-6, atol=1e-6, err_msg=name)


def test_the_papers_networks_at_28x28():
  """The Fashion-MNIST ConvHVAE: a 7 x 7 x 6 map (294 features) in both encoders, 40 + 40
  latents, the likelihood's logits at 28 x 28; q(z1 | x, z2) under S samples of z2 equals
  the same encoder applied sample by sample (x's stack runs once)."""
  c = fashion_mnist_conv_hvae.get_config('posterior=iaf')
  model = models.build_model(c.model, (28, 28, 1))
  assert isinstance(model.encoder, gated_conv.ConvTopEncoder)
  assert isinstance(model.encoder_z1, gated_conv.ConvZ1Encoder)
  assert isinstance(model.decoder, gated_conv.ConvHVAEDecoder)
  x = jax.random.bernoulli(jax.random.key(0), 0.3, (3, 28, 28, 1)).astype(jnp.float32)
  variables = model.init(jax.random.key(1), x, jax.random.key(2))
  top = variables['params']['encoder']
  assert top['gated_conv_0']['value']['kernel'].shape == (7, 7, 1, 32)
  assert top['gated_conv_4']['value']['kernel'].shape == (3, 3, 64, 6)
  assert top['gaussian_head']['kernel'].shape == (294, 80)
  z2 = jax.random.normal(jax.random.key(3), (5, 3, 40))
  enc1 = lambda x, z: model.apply(variables, x, z, method=lambda m, x, z: m.encoder_z1(x, z))
  mean, logvar, context = enc1(x, z2)
  assert mean.shape == logvar.shape == (5, 3, 40) and context.shape == (5, 3, 300)
  for s in range(5):
    one = enc1(x, z2[s])
    np.testing.assert_allclose(one[0], mean[s], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one[1], logvar[s], rtol=1e-5, atol=1e-5)
  assert float(logvar.min()) >= -6.0 and float(logvar.max()) <= 2.0
  z = jnp.zeros((5, 3, 80))
  logits = model.apply(variables, z, method=lambda m, z: m.decoder(z))
  assert logits.shape == (5, 3, 28, 28, 1)


@pytest.mark.parametrize('layers', [1, 2])
def test_conv_model_with_a_width_the_image_does_not_divide_is_one_line(layers):
  from vae import config_lib  # pylint: disable=g-import-not-at-top
  c = fashion_mnist_conv_hvae.get_config(f'layers={layers}')
  with c.unlocked():
    c.model.conv_channels = (8, 8, 8)
  with pytest.raises(config_lib.ConfigError, match='divisible by 8'):
    models.build_model(c.model, (28, 28, 1))
