"""The Exemplar VAE's prior (Norouzi, Fleet & Norouzi 2020), model.prior=exemplar: everything
about exemplars lives here.

p(z) is the uniform mixture of N(mu(x_n), sigma^2 I) over the encoder's means of the N
training exemplars, sigma^2 learned. Training retrieves each example's nearest exemplars
(`retrieve`) from a cache of exemplar means kept in the train state (the prior's state,
through the hooks of `priors.Prior`), refreshed at every epoch, with leave-one-out;
evaluation and `vae.load` use all N. Its fields (model.exemplar_k, exemplar_candidates,
exemplar_leave_one_out), checks and memory are registered with it at the end.
"""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae import config_lib
from vae.config_lib import check
from vae.families import priors


class ExemplarPrior(nn.Module, priors.GaussianMixturePrior):
  """The Exemplar VAE's prior (Norouzi, Fleet & Norouzi 2020): the uniform mixture of
  Gaussians N(mu(x_n), sigma^2 I) centred at the encoder's means of training exemplars x_n,
  with one learned log-variance log sigma^2 shared by every component and dimension
  (initialized at 0; the reference code draws it from N(0, 1)).

  Its exemplars come with each call, in the 'exemplars' collection (`exemplar_variables`):
  'images' [U, H, W, C] (training: encoded here through `encode`, so gradients reach the
  encoder through the prior) or 'means' [U, D] (evaluation and sampling: the means of all N
  training exemplars, computed once), and optionally 'log_weights' [U] or [B, U] (one row per
  example: retrieval and leave-one-out, `retrieve`; default uniform). Without exemplars
  (initialization) it is N(0, sigma^2 I).
  """
  latent_dim: int
  k: int = 10                 # model.exemplar_k: nearest exemplars retrieved per example
  candidates: int = 0         # model.exemplar_candidates: drawn per step (0: all N)
  leave_one_out: bool = True  # model.exemplar_leave_one_out

  needs_training_set = True  # the exemplars are the training images (priors.Prior)

  def setup(self):
    self.log_variance = self.param('log_variance', nn.initializers.zeros, ())

  def components(self, ctx):
    if self.has_variable('exemplars', 'means'):
      means = self.get_variable('exemplars', 'means')
    elif self.has_variable('exemplars', 'images'):
      means = ctx.encode(self.get_variable('exemplars', 'images'))[0]
    else:
      means = jnp.zeros((1, self.latent_dim))
    k = means.shape[0]
    log_weights = (self.get_variable('exemplars', 'log_weights')
                   if self.has_variable('exemplars', 'log_weights')
                   else jnp.full((k,), -math.log(k)))
    return log_weights, means, jnp.broadcast_to(self.log_variance, means.shape)

  # -- the state hooks of priors.Prior: the cache of exemplar means in the train state

  def init_state(self, latent_dim, num_train):
    """The cache of the N exemplar means, zeros until the first step fills it."""
    return {'means': jnp.zeros((num_train, latent_dim), jnp.float32)}

  def train_context(self, model, params, state, x, batch, key):
    """The batch's exemplars and the cache after it: the cache is recomputed at an epoch's
    start and takes the batch's own means at every step; each example's prior is the
    mixture over its retrieved exemplars (`retrieve`), encoded inside the loss (images in
    the 'exemplars' collection) so that gradients reach the encoder through the prior."""
    data, ids = batch['data'], batch['ids']
    num_train = state['means'].shape[0]
    cache = jax.lax.cond(batch['epoch_start'],
                         lambda: exemplar_means(model, params, data, num_train),
                         lambda: state['means'])
    means = jax.lax.stop_gradient(model.apply({'params': params}, x, method=model.top_mean))
    cache = cache.at[ids].set(means)
    ex_ids, log_w = retrieve(key, cache, means, ids, self.candidates, self.k,
                             self.leave_one_out)
    images = _gather_rows(data, ex_ids).astype(jnp.float32) / 255.0
    return exemplar_variables(images=images, log_weights=log_w), {'means': cache}

  def eval_variables(self, model, params, state, train_data, num_train):
    """The means of all N training exemplars under `params` (not the training cache)."""
    del state
    return exemplar_variables(means=exemplar_means(model, params, train_data, num_train))

  def state_variables(self, state):
    """The cached exemplar means (those of the training parameters)."""
    return exemplar_variables(means=state['means']) if state else {}

  def sample_near(self, key, centres, n, temperature=1.0):
    """n draws per centre [M, D] from its component: centre + temperature sigma eps,
    [n, M, D]."""
    eps = jax.random.normal(key, (n,) + centres.shape)
    return centres + temperature * jnp.exp(0.5 * self.log_variance) * eps


def exemplar_variables(means=None, images=None, log_weights=None):
  """The 'exemplars' collection of a VAE whose prior is an ExemplarPrior (its module is named
  'prior'): merge it into the variables of `model.apply`."""
  found = {'means': means, 'images': images, 'log_weights': log_weights}
  return {'exemplars': {'prior': {k: v for k, v in found.items() if v is not None}}}


def retrieve(key, cache, batch_means, batch_ids, num_candidates, k, leave_one_out=True):
  """The exemplars of a training batch's prior (the Exemplar VAE's approximate prior).

  For each example, the k exemplars whose cached means lie nearest its posterior mean, among
  `num_candidates` exemplars drawn at random with replacement (all N, in order, when
  num_candidates is 0 or >= N). The batch's mixture is then uniform over the distinct
  retrieved exemplars (one retrieved twice counts once), with leave-one-out removing each
  example's own exemplar from its mixture.

  Args:
    key: PRNG key of the candidate draw.
    cache: [N, D] exemplar means (refreshed every epoch during training).
    batch_means: [B, D] the batch's posterior means (no gradient needed).
    batch_ids: [B] int, each example's index among the N exemplars.
    num_candidates: candidates per step (0: all).
    k: nearest exemplars per example.
    leave_one_out: drop each example's own exemplar from its mixture.
  Returns:
    (ids [B * k'] int32, log_weights [B, B * k']) with k' = min(k, candidates): the exemplars
    to encode and each example's mixture log-weights (-inf for a duplicate or the left-out
    exemplar; the rest -log of their count).
  """
  n = cache.shape[0]
  if num_candidates <= 0 or num_candidates >= n:
    pool = jnp.arange(n, dtype=jnp.int32)
  else:
    pool = jax.random.randint(key, (num_candidates,), 0, n, dtype=jnp.int32)
  cand = cache[pool]                                                   # [P, D]
  d2 = (jnp.sum(jnp.square(batch_means), -1, keepdims=True) - 2.0 * batch_means @ cand.T
        + jnp.sum(jnp.square(cand), -1)[None])                        # [B, P]
  _, pos = jax.lax.top_k(-d2, min(k, pool.shape[0]))                  # [B, k']
  ids = pool[pos].reshape(-1)                                          # [B k']
  order = jnp.argsort(ids)
  sorted_ids = ids[order]
  first_sorted = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  first = jnp.zeros_like(first_sorted).at[order].set(first_sorted)    # one of each id
  valid = jnp.broadcast_to(first[None, :], (batch_ids.shape[0], ids.shape[0]))
  if leave_one_out:
    valid = valid & (ids[None, :] != batch_ids[:, None])
  count = jnp.maximum(jnp.sum(valid, axis=1), 1).astype(jnp.float32)
  return ids, jnp.where(valid, -jnp.log(count)[:, None], -jnp.inf)


def exemplar_means(model, params, data, num_exemplars):
  """The top layer's posterior means [N, D] (`VAE.top_mean`) of the first N images of the
  uint8 training set `data`, its pixels scaled to [0, 1] (how exemplars are encoded, as in
  the reference code: grey levels, not a binarization)."""
  encode = lambda images: model.apply({'params': params}, images.astype(jnp.float32) / 255.0,
                                      method=model.top_mean)
  return encode_exemplars(encode, data, num_exemplars)


def encode_exemplars(encode, data, num_exemplars, block=500):
  """encode(images [b, H, W, C] uint8) -> means [b, D] over the first `num_exemplars` rows
  of `data`, `block` rows at a time (memory bounded by one block): [N, D]."""
  n_rows = data.shape[0]
  nb = -(-n_rows // block)
  padded = jnp.pad(data, [(0, nb * block - n_rows)] + [(0, 0)] * (data.ndim - 1))
  means = jax.lax.map(encode, padded.reshape((nb, block) + data.shape[1:]))
  return means.reshape(nb * block, -1)[:num_exemplars]


def _gather_rows(images, ids):
  """images[ids] [len(ids), H, W, C], gathered as rows of the flattened images (the same
  bytes as indexing; XLA's CPU gather of rows is faster)."""
  rows = jnp.take(images.reshape(images.shape[0], -1), ids, axis=0)
  return rows.reshape(ids.shape + images.shape[1:])


def memory(mc, tc, floats_per_example, num_train):
  """The cache of N exemplar means (train state); per step the distances to the candidates
  and the encoder's pass over the batch's retrieved exemplars; at evaluation all N means and
  the blocked mixture sum (at most priors.MIXTURE_BLOCK_ELEMENTS at once)."""
  n, d, b = num_train, mc.latent_dim, tc.batch_size
  candidates = n if mc.exemplar_candidates <= 0 else min(mc.exemplar_candidates, n)
  retrieved = b * min(mc.exemplar_k, candidates)
  return priors.PriorMemory(
      per_example=2 * retrieved, training=b * candidates + retrieved * floats_per_example,
      evaluation=n * d + priors.MIXTURE_BLOCK_ELEMENTS, state=n * d,
      why=(f'{n:,} training exemplars x model.latent_dim={d}, model.exemplar_candidates='
           f'{mc.exemplar_candidates}, model.exemplar_k={mc.exemplar_k}'))


def check_config(mc):
  """The Exemplar prior's own fields (ConfigError naming them)."""
  check(mc.exemplar_k >= 1, f'model.exemplar_k={mc.exemplar_k} must be >= 1')
  check(mc.exemplar_candidates >= 0,
        f'model.exemplar_candidates={mc.exemplar_candidates} must be >= 0 (0: all)')
  need = mc.exemplar_k + (1 if mc.exemplar_leave_one_out else 0)
  check(mc.exemplar_candidates == 0 or mc.exemplar_candidates >= need,
        f'model.exemplar_candidates={mc.exemplar_candidates} is below the {need} exemplars '
        f'retrieved per example (model.exemplar_k={mc.exemplar_k}'
        + (' + 1 left out' if mc.exemplar_leave_one_out else '') + f'); raise it to >= {need} '
        'or set 0 (all)')
  check(mc.posterior == 'diagonal',
        'model.prior=exemplar centres its components at the posterior means of a diagonal '
        'posterior; set model.posterior=diagonal')


FIELDS = (
    config_lib.Field('model.exemplar_k', 10, 'exemplar prior, training: nearest exemplars '
                     'retrieved per example', 'structural'),
    config_lib.Field('model.exemplar_candidates', 0, 'exemplar prior, training: exemplars drawn '
                     'at random per step among which the nearest are retrieved (0: all N)',
                     'structural'),
    config_lib.Field('model.exemplar_leave_one_out', True, "exemplar prior, training: drop each "
                     "example's own exemplar from its prior", 'structural'),
)

priors.register(
    'exemplar', lambda mc, image_shape: ExemplarPrior(
        mc.latent_dim, mc.exemplar_k, mc.exemplar_candidates, mc.exemplar_leave_one_out),
    memory, check_config, FIELDS)
