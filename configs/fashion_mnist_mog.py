"""Fashion-MNIST protocol of configs/fashion_mnist_gated.py with a learned mixture-of-Gaussians prior (500 components).

Everything else (data, gated MLPs 300-300, 40 latents, warm-up, early stopping,
k = 5000 evaluation) is the baseline's, so the rows of docs/results.md differ in
one thing. Arguments are the baseline's (epochs, warmup, patience, seed, smoke,
prior, components, posterior, flow_steps, layers, k).

Commands:
  python train.py --config configs/fashion_mnist_mog.py --workdir runs/fmnist_mog
  python scripts/evaluate.py --workdir runs/fmnist_mog --num_samples 5000

Reference: no published row on Fashion-MNIST in REFERENCE.md; the VampPrior paper's MoG prior sits between the Gaussian prior and the VampPrior on MNIST.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ["prior=mog", arg])))
