"""What the train step minimizes, as registered families (config.objective.name).

An objective sees the whole batch, so it may hold batch-level terms (a total-correlation
estimate over the batch's latents), and it may own auxiliary parameters (a discriminator)
trained by an optax optimizer of its own. The train state, checkpoints, resume, vmapped
groups and `vae.load` carry those parameters and their optimizer state
(`TrainState.objective_state`) without knowing what they are.

The protocol (`Objective`), every method with a default:
  init_aux(key, latent_dim, image_shape)   the auxiliary parameters ({}: none).
  aux_optimizer()                          their optax transformation (None: none).
  loss(model, variables, x, key, hp, aux)  -> `StepLoss`: the batch's loss to minimize over
                                           the model's parameters, the per-example terms
                                           (recon, kl, elbo in nats), extra scalar metrics,
                                           and what the auxiliary loss needs.
  aux_loss(aux, aux_input, key, hp)        -> (scalar, {metric: scalar}): minimized over
                                           the auxiliary parameters after the model's update
                                           (its input is held fixed: stop_gradient).
`hp` holds the traced per-model hyperparameters: beta (after warm-up), free_bits,
latent_mask (a padded member) and the families' vmappable fields by dotted name
(`config_lib.Field(..., role='vmappable')`), so a vmapped group may vary them.

A new objective is one module: a subclass, `register(name, build, fields=...)`.
"""

import dataclasses
from typing import Any, NamedTuple

import jax.numpy as jnp

from vae import config_lib
from vae.families import objectives


class StepLoss(NamedTuple):
  """An objective's result for one batch.

  loss: the scalar the model's optimizer minimizes (nats per example, averaged).
  terms: per-example [B] arrays in nats: 'recon', 'kl' and 'elbo' (beta = 1) at least.
  metrics: extra scalars, logged as train/<name> (averaged over the log window).
  aux_input: what `Objective.aux_loss` needs (held fixed there); {} when it has none.
  """
  loss: Any
  terms: dict
  metrics: dict = {}
  aux_input: Any = {}


class Objective:
  """The protocol (see the module's docstring); the defaults have no auxiliary part."""

  def init_aux(self, key, latent_dim, image_shape):
    del key, latent_dim, image_shape
    return {}

  def aux_optimizer(self):
    return None

  def loss(self, model, variables, x, key, hp, aux):
    raise NotImplementedError

  def aux_loss(self, aux, aux_input, key, hp):
    del aux, aux_input, key, hp
    return jnp.zeros(()), {}


@dataclasses.dataclass(frozen=True)
class Elbo(Objective):
  """The ELBO with a KL weight, warm-up and free bits; with num_samples = k > 1 the IWAE
  bound (estimator='iwae') or the k-sample average ELBO (`objectives.per_example_objective`)."""
  num_samples: int = 1
  estimator: str = 'iwae'

  def loss(self, model, variables, x, key, hp, aux):
    del aux
    loss, terms = objectives.per_example_objective(
        model, variables, x, key, beta=hp['beta'], free_bits=hp['free_bits'],
        num_samples=self.num_samples, latent_mask=hp.get('latent_mask'),
        estimator=self.estimator)
    return StepLoss(jnp.mean(loss), terms)


REGISTRY = {}
CHECKS = {}


def register(name, build, check_config=None, fields=()):
  """Makes `build(objective_config)` -> `Objective` available as objective.name=name;
  `check_config(objective_config)` raises ConfigError for its own fields; `fields`
  (`config_lib.Field`s named 'objective.<field>') are its config fields."""
  config_lib.declare(*fields)
  REGISTRY[name] = build
  if check_config is not None:
    CHECKS[name] = check_config
  return build


def check_config(oc):
  """objective.name is registered, and the family's own checks pass."""
  config_lib.check(oc.name in REGISTRY,
                   f'objective.name={oc.name!r}; choose one of {tuple(REGISTRY)}')
  if oc.name in CHECKS:
    CHECKS[oc.name](oc)


def build(oc):
  """The `Objective` of `config.objective`."""
  return REGISTRY[oc.name](oc)


register('elbo', lambda oc: Elbo(int(oc.num_samples), oc.estimator))
