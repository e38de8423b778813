"""Default: MLP VAE on dynamically binarized Fashion-MNIST, 20 latents, Bernoulli decoder.

784-512-256-20 ReLU MLP encoder (decoder mirrored), Adam 1e-3, batch 128,
30 epochs (14,040 steps); 50,000 train / 10,000 validation (carved with seed 0)
/ 10,000 test images; training images re-binarized from the pixel intensities
at every step, evaluation images binarized once with a fixed seed.

Command:
  python train.py --config configs/default.py --workdir runs/default

Result it should reach (measured, see docs/results.md): test ELBO about -237
nats per example after 30 epochs (about 3 minutes on a 2-core CPU).

Arguments after the colon pick structure, e.g.
  configs/default.py:latent_dim=2,arch=conv,smoke
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, latent_dim=20, arch='mlp', likelihood='bernoulli',
                           model='vae', smoke=False)
  c = config_lib.base_config()
  c.model.latent_dim = a.latent_dim
  c.model.arch = a.arch
  c.model.type = a.model
  c.model.likelihood = a.likelihood
  if a.likelihood in ('gaussian', 'continuous_bernoulli'):
    c.data.binarize = 'none'
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c
