"""Families defined outside vae/, as a researcher's own module would define them: the tests
of tests/test_extensions.py register them and train, kill, resume, load and evaluate them
with no edit under vae/. A subprocess imports this module to be killed mid-run.

  LaplacePrior  p(z) = prod_d Laplace(z_d; 0, b): no parameters, no closed-form KL
                against a Gaussian posterior in vae/ (the objective takes the single-draw
                estimate log q - log p).
  BankPrior     a prior with state: the uniform mixture of N(m_j, sigma^2 I) over a
                first-in first-out bank of the last encoder means seen in training, updated
                at every step, kept in the train state (checkpointed, vmapped, restored by
                vae.load), sigma^2 learned.
  FactorObjective  FactorVAE's objective (Kim & Mnih 2018): the ELBO minus gamma times the
                total correlation of q(z), estimated by a discriminator between draws of
                q(z) and draws whose dimensions are shuffled independently across the batch
                (a batch-level term); the discriminator is an auxiliary network trained by
                its own optax optimizer; gamma (objective.tc_gamma) is vmappable.
"""

import dataclasses
import math
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from vae import config_lib
from vae.families import objective_families, objectives, priors


@dataclasses.dataclass(frozen=True)
class LaplacePrior(priors.Prior):
  """prod_d Laplace(z_d; 0, scale), in nats."""
  scale: float = 1.0

  def log_prob(self, z, ctx):
    del ctx
    return jnp.sum(-jnp.abs(z) / self.scale - jnp.log(2.0 * self.scale), axis=-1)

  def sample(self, key, n, ctx, temperature=1.0):
    return temperature * self.scale * jax.random.laplace(key, (n, ctx.latent_dim))


class BankPrior(nn.Module, priors.GaussianMixturePrior):
  """The uniform mixture of N(m_j, sigma^2 I) over a bank of `size` encoder means, first in,
  first out (zeros before training fills it), sigma^2 = exp(log_variance) learned."""
  latent_dim: int
  size: int = 128

  evaluates_with_state = True  # the bank is the state: evaluation and vae.load use it

  def setup(self):
    self.log_variance = self.param('log_variance', nn.initializers.zeros, ())

  def components(self, ctx):
    means = (self.get_variable('bank', 'means') if self.has_variable('bank', 'means')
             else jnp.zeros((1, ctx.latent_dim)))
    k = means.shape[0]
    return (jnp.full((k,), -math.log(k)), means,
            jnp.broadcast_to(self.log_variance, means.shape))

  def init_state(self, latent_dim, num_train):
    del num_train
    return {'means': jnp.zeros((self.size, latent_dim), jnp.float32),
            'next': jnp.zeros((), jnp.int32)}

  def train_context(self, model, params, state, x, batch, key):
    """The bank before this batch is the batch's prior; the batch's means then enter it."""
    del batch, key
    means = jax.lax.stop_gradient(model.apply({'params': params}, x, method=model.top_mean))
    rows = (state['next'] + jnp.arange(means.shape[0])) % self.size  # distinct: B <= size
    new = {'means': state['means'].at[rows].set(means),
           'next': (state['next'] + means.shape[0]) % self.size}
    return self.state_variables(state), new

  def eval_variables(self, model, params, state, train_data, num_train):
    del model, params, train_data, num_train
    return self.state_variables(state)

  def state_variables(self, state):
    return {'bank': {'prior': {'means': state['means']}}}


class Discriminator(nn.Module):
  """Logits [B, 2] of (a draw of q(z), a draw with dimensions shuffled over the batch)."""
  hidden: int = 64

  @nn.compact
  def __call__(self, z):
    h = nn.leaky_relu(nn.Dense(self.hidden)(z), 0.2)
    h = nn.leaky_relu(nn.Dense(self.hidden)(h), 0.2)
    return nn.Dense(2)(h)


def shuffle_dimensions(key, z):
  """Each latent dimension permuted independently across the batch: draws of prod_j q(z_j)."""
  keys = jax.random.split(key, z.shape[-1])
  return jax.vmap(lambda k, col: jax.random.permutation(k, col), in_axes=(0, 1),
                  out_axes=1)(keys, z)


@dataclasses.dataclass(frozen=True)
class FactorObjective(objective_families.Objective):
  """-(ELBO - gamma * TC) with TC ~ mean_b [logit_q(z_b) - logit_shuffled(z_b)]."""
  hidden: int = 64
  lr: float = 1e-3

  def init_aux(self, key, latent_dim, image_shape):
    del image_shape
    return Discriminator(self.hidden).init(key, jnp.zeros((1, latent_dim)))['params']

  def aux_optimizer(self):
    return optax.adam(self.lr, b1=0.5, b2=0.9)

  def loss(self, model, variables, x, key, hp, aux):
    k_z, k_shuffle = jax.random.split(key)
    mean, logvar = model.apply(variables, x, method=model.encode)
    z = objectives.reparameterize(k_z, mean, logvar)
    recon = model.likelihood.log_prob(model.apply(variables, z, method=model.decode), x)
    kl = objectives.gaussian_kl(mean, logvar)
    logits = Discriminator(self.hidden).apply({'params': aux}, z)
    tc = jnp.mean(logits[:, 0] - logits[:, 1])
    loss = -jnp.mean(recon - hp['beta'] * kl) + hp['objective.tc_gamma'] * tc
    terms = {'recon': recon, 'kl': kl, 'elbo': recon - kl}
    return objective_families.StepLoss(
        loss, terms, {'tc': tc}, {'z': z, 'shuffled': shuffle_dimensions(k_shuffle, z)})

  def aux_loss(self, aux, aux_input, key, hp):
    del key, hp
    disc = Discriminator(self.hidden)
    lq = disc.apply({'params': aux}, aux_input['z'])
    ls = disc.apply({'params': aux}, aux_input['shuffled'])
    label = lambda logits, c: jnp.full(logits.shape[:1], c, jnp.int32)
    loss = 0.5 * (jnp.mean(optax.softmax_cross_entropy_with_integer_labels(lq, label(lq, 0)))
                  + jnp.mean(optax.softmax_cross_entropy_with_integer_labels(ls, label(ls, 1))))
    accuracy = 0.5 * (jnp.mean(jnp.argmax(lq, -1) == 0) + jnp.mean(jnp.argmax(ls, -1) == 1))
    return loss, {'disc_accuracy': accuracy}


TC_GAMMA = config_lib.Field('objective.tc_gamma', 6.0, 'factor_test: weight of the total '
                            'correlation', 'vmappable')


def register():
  """Registers this module's families (idempotent)."""
  priors.register('laplace_test', lambda mc, image_shape: LaplacePrior(0.5))
  priors.register('bank_test', lambda mc, image_shape: BankPrior(mc.latent_dim))
  objective_families.register('factor_test', lambda oc: FactorObjective(), fields=(TC_GAMMA,))


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
