"""The pytorch/examples VAE (examples/vae/main.py), for speed comparisons.

784-400-20 ReLU MLP encoder and decoder, Bernoulli cross-entropy on continuous
pixel intensities (no binarization), Adam lr 1e-3, batch 128, 10 epochs. Here
on Fashion-MNIST (same shapes as MNIST; MNIST needs a TFDS download).

Command:
  python train.py --config configs/pytorch_example.py --workdir runs/pytorch_example

scripts/benchmark.py runs it through train.py and beside a minimal plain-JAX loop of
the same model (docs/benchmarks.md).
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, epochs=10.0, smoke=False)
  c = config_lib.base_config()
  c.data.binarize = 'none'
  c.model.hidden = (400,)
  c.model.latent_dim = 20
  c.train.batch_size = 128
  c.train.num_epochs = a.epochs
  c.optim.lr = 1e-3
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c
