"""A researcher's own families in a module outside vae/, registered on import, as a user
names them on the command line with `--import tests.user_families` (tests/commands/
test_cli.py trains, evaluates, visualizes, sweeps and loads with it).

  laplace_pixels  p(x | z) = prod Laplace(x; sigmoid(decoder), 0.1) on continuous pixels
                  (a new likelihood).
  student_t       p(z) = prod_d Student-t(z_d; model.student_t_df) (a new prior with a
                  declared field and no closed-form KL: the objective estimates it).
"""

import dataclasses

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln

from vae import config_lib
from vae.families import likelihoods, priors

STUDENT_T_DF = config_lib.Field('model.student_t_df', 5.0, 'student_t: degrees of freedom',
                                'structural')


class LaplacePixels(likelihoods.Family):
  """Laplace(x; mu, b) per pixel, mu = sigmoid(decoder output), b = 0.1."""
  name = 'laplace_pixels'
  scale = 0.1

  def log_prob_per_pixel(self, lik, params, x):
    mu = jax.nn.sigmoid(params['logits'])
    return -jnp.abs(x - mu) / self.scale - jnp.log(2.0 * self.scale)

  def mean(self, lik, params):
    return jax.nn.sigmoid(params['logits'])


@dataclasses.dataclass(frozen=True)
class StudentTPrior(priors.Prior):
  """prod_d t_df(z_d), in nats."""
  df: float = 5.0

  def log_prob(self, z, ctx):
    del ctx
    v = self.df
    log_norm = gammaln((v + 1) / 2) - gammaln(v / 2) - 0.5 * jnp.log(v * jnp.pi)
    return jnp.sum(log_norm - (v + 1) / 2 * jnp.log1p(jnp.square(z) / v), axis=-1)

  def sample(self, key, n, ctx, temperature=1.0):
    return temperature * jax.random.t(key, self.df, (n, ctx.latent_dim))


likelihoods.register(LaplacePixels(), 'continuous')
priors.register('student_t', lambda mc, image_shape: StudentTPrior(float(mc.student_t_df)),
                fields=(STUDENT_T_DF,))
