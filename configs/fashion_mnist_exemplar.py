"""Fashion-MNIST protocol of configs/fashion_mnist_gated.py with the Exemplar prior (Norouzi, Fleet & Norouzi 2020).

p(z) is the uniform mixture of N(mu(x_n), sigma^2 I) over the encoder's means of the 50,000
training images, sigma^2 learned. Training retrieves each example's 10 nearest exemplars
among 25,000 drawn at random (the reference code's setting for Fashion-MNIST), from a cache
of exemplar means refreshed at every epoch, with leave-one-out; evaluation uses all 50,000.
Everything else is the baseline's. Arguments are the baseline's (`:layers=2` for the
Exemplar HVAE, the prior on z2; exemplar_k, candidates).

Commands:
  python train.py --config configs/fashion_mnist_exemplar.py --workdir runs/fmnist_exemplar
  python train.py --config configs/fashion_mnist_exemplar.py:layers=2 --workdir runs/fmnist_exemplar_hvae
  python scripts/evaluate.py --workdir runs/fmnist_exemplar --num_samples 5000

Reference: published (Exemplar-VAE table): Exemplar VAE -226.75 +- 0.07, Exemplar HVAE
-226.53 +- 0.09. Cost: docs/families.md.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ["prior=exemplar", arg])))
