"""Default: MLP VAE on dynamically binarized Fashion-MNIST, 20 latents, Bernoulli decoder.

784-512-256-20 ReLU MLP encoder (decoder mirrored), Adam 1e-3, batch 128,
30 epochs (11,700 steps: 390 per epoch); 50,000 train / 10,000 validation (carved with seed 0)
/ 10,000 test images; training images re-binarized from the pixel intensities
at every step, evaluation images binarized once with a fixed seed.

Command:
  python train.py --config configs/default.py --workdir runs/default

Result it should reach (measured, see docs/results.md): test ELBO about -237
nats per example after 30 epochs (about 3 minutes on a 2-core CPU).

Arguments after the colon pick structure, e.g.
  configs/default.py:latent_dim=2,arch=conv,smoke

Sweeps (scripts/sweep.py --config configs/default.py:sweep=NAME --workdir ROOT):
  beta8     8 KL weights, 0.25 .. 8, 3 epochs each (the vmap benchmark)
  ablation  latent_dim {2, 5, 10, 20} x beta {0.5, 1, 2, 4} x seed {0, 1, 2}
"""

from vae import config_lib

_ARGS = dict(latent_dim=20, arch='mlp', likelihood='bernoulli', model='vae', smoke=False,
             sweep='ablation', epochs=30.0)


def get_config(arg=None):
  a = config_lib.parse_arg(arg, **_ARGS)
  c = config_lib.base_config()
  c.model.latent_dim = a.latent_dim
  c.model.arch = a.arch
  c.model.type = a.model
  c.model.likelihood = a.likelihood
  c.data.binarize = config_lib.binarize_for(a.likelihood)
  c.train.num_epochs = a.epochs
  if a.sweep == 'beta8':
    c.train.num_epochs = 3.0
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c


def get_sweep(arg=None):
  a = config_lib.parse_arg(arg, **_ARGS)
  if a.sweep == 'beta8':
    return config_lib.product(**{'objective.beta': [0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, 8.0]})
  if a.sweep == 'ablation':
    return config_lib.product(**{'model.latent_dim': [2, 5, 10, 20],
                             'objective.beta': [0.5, 1.0, 2.0, 4.0], 'seed': [0, 1, 2]})
  if a.sweep == 'tiny4':  # for tests: 2 latent sizes x 2 betas
    return config_lib.product(**{'model.latent_dim': [3, 5], 'objective.beta': [0.5, 2.0]})
  if a.sweep == 'tiny':  # for tests: 2 latent sizes x 2 betas, plus a seed
    return config_lib.product(**{'model.latent_dim': [3, 5], 'objective.beta': [0.5, 2.0]}) + [
        {'model.latent_dim': 5, 'objective.beta': 2.0, 'seed': 1}]
  if a.sweep == 'tiny_groups':  # for tests: 2 vmap groups (activation) x 2 betas, 6 epochs
    return config_lib.product(**{'model.activation': ['relu', 'tanh'], 'objective.beta': [0.5, 2.0],
                             'train.num_epochs': [6.0]})
  raise config_lib.ConfigError(f'unknown sweep {a.sweep!r}; choose beta8, ablation, tiny, tiny4 '
                               'or tiny_groups')
