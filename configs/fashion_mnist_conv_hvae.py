"""ConvHVAE on the Fashion-MNIST protocol of configs/fashion_mnist_gated.py: two stochastic
layers (40 + 40 latents) with the gated convolutional networks of the VampPrior and Exemplar
VAE papers (vae/families/gated_conv.py); `:prior=vamp` puts the VampPrior on z2,
`:prior=exemplar` the Exemplar prior (Exemplar ConvHVAE).

Everything else (data, warm-up, early stopping, k = 5000 evaluation; p(z1 | z2) as gated
dense layers of 300) is the baseline's. Arguments are the baseline's (epochs, warmup,
patience, seed, smoke, prior, components, posterior, ...).

Commands:
  python train.py --config configs/fashion_mnist_conv_hvae.py --workdir runs/fmnist_conv_hvae
  python scripts/evaluate.py --workdir runs/fmnist_conv_hvae --num_samples 5000

Published (Exemplar-VAE table): ConvHVAE with Gaussian prior -225.38 +- 0.08, with VampPrior
-224.67 +- 0.03, Exemplar ConvHVAE -224.63 +- 0.06. Its cost (docs/families.md): a GPU's
work; the CPU runs smoke tests and short runs.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ['layers=2,arch=conv', arg])))
