"""The Flax VAE example's setup, for comparison: statically binarized MNIST from TFDS.

784-500-20 ReLU MLP encoder and decoder, Bernoulli likelihood, Adam 1e-3,
batch 128, 30 epochs; TFDS `binarized_mnist` (Larochelle's fixed binarization,
50,000 / 10,000 / 10,000 with its own validation split).

Command (needs TFDS to download binarized_mnist once, i.e. internet):
  python train.py --config configs/mnist.py --workdir runs/mnist

Result it should reach: the Flax example reports a test negative ELBO of about
104 nats after 10 epochs and 100.9 after 30 (test/elbo about -101). Not
measured on the build machine, which cannot download MNIST.
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, latent_dim=20, epochs=30.0, smoke=False)
  c = config_lib.base_config()
  c.data.name = 'binarized_mnist'
  c.data.source = 'tfds'
  c.data.binarize = 'none'  # already binary: the fixed Larochelle binarization
  c.model.hidden = (500,)
  c.model.latent_dim = a.latent_dim
  c.optim.lr = 1e-3
  c.train.batch_size = 128
  c.train.num_epochs = a.epochs
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c
