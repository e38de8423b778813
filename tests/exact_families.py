"""Small linear-Gaussian models of every family whose log p(x) is known in closed form.

Each builder returns a real `vae.families.models.VAE` (linear modules in place of the MLPs) with
parameters, and the exact log p(x) for a batch of x, computed in float64 from the
marginal N(x; mean, cov) (or a mixture of such), so that tests check the library's
importance-weighted estimates, priors and flows against the truth.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae.families import exemplar, flows, objectives, priors
from vae.families.likelihoods import Likelihood
from vae.families.models import VAE


class LinearGaussianMap(nn.Module):
  """Vectors (or [..., 1, 1, n] images) -> (mean, logvar[, features]): a linear mean and a
  free log-variance; `features` returns the input as an IAF context."""
  latent_dim: int
  features: bool = False

  @nn.compact
  def __call__(self, x):
    h = x.reshape(x.shape[:-3] + (-1,)) if x.ndim >= 3 and x.shape[-3:-1] == (1, 1) else x
    mean = nn.Dense(self.latent_dim, name='mean')(h)
    logvar = jnp.broadcast_to(self.param('logvar', nn.initializers.constant(-0.5),
                                         (self.latent_dim,)), mean.shape)
    return (mean, logvar, h) if self.features else (mean, logvar)


class LinearDecoder(nn.Module):
  n: int

  @nn.compact
  def __call__(self, z):
    return nn.Dense(self.n, name='out')(z).reshape(z.shape[:-1] + (1, 1, self.n))


def gaussian_log_pdf(x, mean, cov):
  """log N(x; mean, cov) in float64 for x [B, n]."""
  diff = np.asarray(x, np.float64) - mean
  _, logdet = np.linalg.slogdet(cov)
  sol = np.linalg.solve(cov, diff.T).T
  return -0.5 * (x.shape[-1] * np.log(2 * np.pi) + logdet + np.sum(diff * sol, axis=-1))


EXEMPLAR_MEANS = np.array([[-1.5, 0.5], [0.0, -1.0], [1.2, 1.0]], np.float32)


def one_layer(prior='standard', posterior='diagonal', n=5, d=2, k=3, sigma=0.6, seed=0):
  """p(z) (N(0, I) or a mixture), p(x | z) = N(W z + b, sigma^2 I). For the Exemplar prior
  the k exemplars' means are fixed (EXEMPLAR_MEANS, given as the 'exemplars' variables, as
  evaluation gives all N), the shared variance a parameter: `extra(model)` returns them.

  Returns:
    (model, params, log_px(x [B, 1, 1, n], params=None) -> [B] float64,
     x [64, 1, 1, n] drawn from the initial model).
  """
  if prior == 'mog':
    prior_module = priors.MixturePrior(d, k)
  elif prior == 'vamp':
    prior_module = priors.VampPrior(k, (1, 1, n))
  elif prior == 'exemplar':
    prior_module = exemplar.ExemplarPrior(d)
  else:
    prior_module = priors.StandardNormal()
  flow = flows.IAF(2, (8, 8)) if posterior == 'iaf' else None
  model = VAE(LinearGaussianMap(d, features=flow is not None), LinearDecoder(n),
              Likelihood('gaussian', 'fixed', sigma), (1, 1, n), d, prior=prior_module, flow=flow)
  x0 = jnp.zeros((1, 1, 1, n))
  params = model.init(jax.random.key(seed), x0, jax.random.key(seed + 1))['params']
  if prior == 'vamp':  # pseudo-inputs spread over [0, 1] so the components differ
    raw = jax.random.uniform(jax.random.key(seed + 2), (k, 1, 1, n))
    params = dict(params, prior={'pseudo_inputs': raw})
  if prior == 'exemplar':
    params = dict(params, prior={'log_variance': jnp.float32(-0.8)})
  if prior == 'mog':
    params = dict(params, prior={
        'means': 1.5 * jax.random.normal(jax.random.key(seed + 3), (k, d)),
        'logvars': jnp.linspace(-1.0, 0.5, k)[:, None] * jnp.ones((k, d)),
        'logits': jnp.linspace(-0.5, 0.5, k)})
  def marginal(p):
    w = np.asarray(p['decoder']['out']['kernel'], np.float64).T   # [n, d]
    b = np.asarray(p['decoder']['out']['bias'], np.float64)
    log_w, means, logvars = (np.asarray(a, np.float64) for a in model.apply(
        variables(model, p), method=model.prior_components))
    x_means = [w @ means[j] + b for j in range(len(log_w))]
    x_covs = [w @ np.diag(np.exp(logvars[j])) @ w.T + sigma ** 2 * np.eye(n)
              for j in range(len(log_w))]
    return log_w, x_means, x_covs

  def log_px(x, p=None):
    """Exact log p(x) under parameters p (default: the initial ones; the VampPrior's
    components move with the encoder, so pass the parameters actually evaluated)."""
    log_w, x_means, x_covs = marginal(params if p is None else p)
    x = np.asarray(x, np.float64).reshape(-1, n)
    comps = [log_w[j] + gaussian_log_pdf(x, x_means[j], x_covs[j]) for j in range(len(log_w))]
    return np.logaddexp.reduce(np.stack(comps), axis=0)

  return model, params, log_px, _mixture_draws(*marginal(params), 64, seed + 4)


def variables(model, params):
  """model.apply's variables: the parameters, and the fixed exemplars of an Exemplar prior."""
  out = {'params': params}
  if isinstance(model.prior, exemplar.ExemplarPrior):
    out.update(exemplar.exemplar_variables(means=jnp.asarray(EXEMPLAR_MEANS)))
  return out


def _mixture_draws(log_w, means, covs, num, seed):
  """num draws [num, 1, 1, n] of sum_j w_j N(means[j], covs[j]), float32."""
  rng = np.random.default_rng(seed)
  comp = rng.choice(len(log_w), size=num, p=np.exp(log_w - np.logaddexp.reduce(log_w)))
  x = np.stack([rng.multivariate_normal(means[j], covs[j]) for j in comp])
  return jnp.asarray(x[:, None, None, :], jnp.float32)


def two_layer(n=5, d=2, sigma=0.6, seed=0, posterior='diagonal'):
  """z2 ~ N(0, I), z1 | z2 ~ N(A z2 + c, diag(v)), x | z ~ N(W [z1, z2] + b, sigma^2 I).

  Returns:
    (model, params, log_px, x) as `one_layer`.
  """
  iaf = posterior == 'iaf'
  model = VAE(LinearGaussianMap(d, features=iaf), LinearDecoder(n),
              Likelihood('gaussian', 'fixed', sigma), (1, 1, n), d,
              flow=flows.IAF(2, (8, 8)) if iaf else None,
              encoder_z1=LinearGaussianMap(d, features=iaf),
              prior_z1=LinearGaussianMap(d),
              flow_z1=flows.IAF(2, (8, 8)) if iaf else None)
  params = model.init(jax.random.key(seed), jnp.zeros((1, 1, 1, n)),
                      jax.random.key(seed + 1))['params']
  pz1 = params['prior_z1']
  a = np.asarray(pz1['mean']['kernel'], np.float64).T            # [d, d]
  c = np.asarray(pz1['mean']['bias'], np.float64)
  v = np.exp(np.asarray(pz1['logvar'], np.float64))
  w = np.asarray(params['decoder']['out']['kernel'], np.float64).T  # [n, 2d]: [z1, z2]
  b = np.asarray(params['decoder']['out']['bias'], np.float64)
  # z = [z1, z2] is Gaussian: mean [c, 0], cov [[A A^T + V, A], [A^T, I]].
  cov_z = np.block([[a @ a.T + np.diag(v), a], [a.T, np.eye(d)]])
  mean_z = np.concatenate([c, np.zeros(d)])

  x_mean, x_cov = w @ mean_z + b, w @ cov_z @ w.T + sigma ** 2 * np.eye(n)

  def log_px(x, p=None):  # p(x) does not involve q: the parameters of q are irrelevant
    del p
    return gaussian_log_pdf(np.asarray(x, np.float64).reshape(-1, n), x_mean, x_cov)

  return model, params, log_px, _mixture_draws(np.zeros(1), [x_mean], [x_cov], 64, seed + 4)


def fit_posterior(model, params, x, steps=300, lr=0.03):
  """Fits q (encoders and flows) to the fixed p by maximizing the ELBO on x: with the
  model p held exactly, the importance sampler's estimate then converges quickly."""
  q_names = [k for k in ('encoder', 'encoder_z1', 'flow', 'flow_z1') if k in params]
  q = {k: params[k] for k in q_names}
  tx = optax.adam(lr)

  def loss(q_params, key):
    full = dict(params, **q_params)
    return -jnp.mean(objectives.per_example_objective(model, variables(model, full), x,
                                                      key)[1]['elbo'])

  @jax.jit
  def run(q_params):
    def body(i, carry):
      qp, st = carry
      g = jax.grad(loss)(qp, jax.random.fold_in(jax.random.key(99), i))
      u, st = tx.update(g, st, qp)
      return optax.apply_updates(qp, u), st
    return jax.lax.fori_loop(0, steps, body, (q_params, tx.init(q_params)))[0]

  return dict(params, **run(q))
