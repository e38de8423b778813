"""Families defined outside vae/, as a researcher's own module would define them: the tests
of tests/test_extensions.py register them and train, kill, resume, load and evaluate them
with no edit under vae/. A subprocess imports this module to be killed mid-run.

  LaplacePrior  p(z) = prod_d Laplace(z_d; 0, b): no parameters, no closed-form KL
                against a Gaussian posterior in vae/ (the objective takes the single-draw
                estimate log q - log p).
"""

import dataclasses
import sys

import jax
import jax.numpy as jnp

from vae.families import priors


@dataclasses.dataclass(frozen=True)
class LaplacePrior(priors.Prior):
  """prod_d Laplace(z_d; 0, scale), in nats."""
  scale: float = 1.0

  def log_prob(self, z, ctx):
    del ctx
    return jnp.sum(-jnp.abs(z) / self.scale - jnp.log(2.0 * self.scale), axis=-1)

  def sample(self, key, n, ctx, temperature=1.0):
    return temperature * self.scale * jax.random.laplace(key, (n, ctx.latent_dim))


def register():
  """Registers this module's families (idempotent)."""
  priors.register('laplace_test', lambda mc, image_shape: LaplacePrior(0.5))


if __name__ == '__main__':
  # python -m tests.plugins WORKDIR KEY=VALUE...: the smoke config with the overrides,
  # trained (or resumed) in WORKDIR with this module's families registered.
  import ast  # pylint: disable=g-import-not-at-top
  from tests.helpers import smoke_config  # pylint: disable=g-import-not-at-top
  from vae.training import loop  # pylint: disable=g-import-not-at-top
  register()
  overrides = {k: ast.literal_eval(v) if v[:1] in '0123456789-(' else v
               for k, v in (a.split('=', 1) for a in sys.argv[2:])}
  loop.train_and_evaluate(smoke_config(**overrides), sys.argv[1])
