"""A matched pair: the VAE and the plain autoencoder built from the same modules.

Same data (dynamically binarized Fashion-MNIST), architecture (784-512-256-D
MLP), likelihood, optimizer and seed; the autoencoder uses z = mean and drops
the KL term. With 2 latents the latent space can be drawn as it is.

Commands:
  python train.py --config configs/ae_vs_vae.py:model=vae --workdir runs/pair_vae
  python train.py --config configs/ae_vs_vae.py:model=ae --workdir runs/pair_ae
  python scripts/compare_ae_vae.py --vae runs/pair_vae --ae runs/pair_ae --out runs/ae_vs_vae.png

What it shows (docs/results.md has the measured table): prior samples decoded
by the VAE look like clothes, the autoencoder's mostly do not; the VAE's test
latents fill the prior, the autoencoder's sit in a region of their own scale,
leaving prior mass where no data lies (nn_distance_ratio >> 1).
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='vae', latent_dim=2, epochs=10.0, smoke=False)
  c = config_lib.base_config()
  c.model.type = a.model
  c.model.latent_dim = a.latent_dim
  c.train.num_epochs = a.epochs
  c.train.eval_every_epochs = 2.0
  c.train.checkpoint_every_epochs = 2.0
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c
