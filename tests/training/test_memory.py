"""The memory estimate: each prior's declared share (priors.register(..., memory=...))."""

from tests.helpers import smoke_config
from vae.families import priors
from vae.training import memory

SHAPE = (28, 28, 1)


def _exemplar(**overrides):
  return smoke_config(**{'model.prior': 'exemplar', 'model.latent_dim': 40, **overrides})


def test_the_exemplar_prior_declares_its_cache_and_retrieval():
  parts = memory.estimate(_exemplar(), SHAPE, num_train=50000)
  assert parts["the prior's state"][0] == 4 * 50000 * 40  # the cache of exemplar means
  assert '50,000 training exemplars' in parts["the prior's state"][1]
  # Retrieval grows with the neighbours encoded per example and the candidates scored.
  wide = memory.estimate(_exemplar(**{'model.exemplar_k': 1000}), SHAPE, num_train=50000)
  assert wide['training activations'][0] > 20 * parts['training activations'][0]
  assert 'model.exemplar_k=1000' in wide['training activations'][1]
  # Evaluation holds all N means beside the blocked mixture sum.
  assert parts['evaluation'][0] >= 4 * (50000 * 40 + priors.MIXTURE_BLOCK_ELEMENTS)


def test_a_registered_prior_without_a_declaration_adds_nothing(monkeypatch):
  monkeypatch.setattr(priors, 'REGISTRY', dict(priors.REGISTRY))
  monkeypatch.setattr(priors, 'MEMORY', dict(priors.MEMORY))
  priors.register('plain_test', lambda mc, image_shape: priors.StandardNormal())
  plain = memory.estimate(smoke_config(**{'model.prior': 'plain_test'}), SHAPE, num_train=10)
  standard = memory.estimate(smoke_config(), SHAPE, num_train=10)
  assert {k: v[0] for k, v in plain.items()} == {k: v[0] for k, v in standard.items()}


def test_a_vamp_prior_counts_its_pseudo_inputs_pass():
  few = memory.estimate(smoke_config(**{'model.prior': 'vamp', 'model.prior_components': 10}),
                        SHAPE)
  many = memory.estimate(smoke_config(**{'model.prior': 'vamp',
                                         'model.prior_components': 10000}), SHAPE)
  assert many['training activations'][0] > 10 * few['training activations'][0]
  assert 'model.prior_components=10000 pseudo-inputs' in many['training activations'][1]
