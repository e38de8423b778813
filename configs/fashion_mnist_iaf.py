"""Fashion-MNIST protocol of configs/fashion_mnist_gated.py with an IAF posterior (2 steps of MADE 320-320 on top of the diagonal Gaussian; Kingma et al. 2016).

Everything else (data, gated MLPs 300-300, 40 latents, warm-up, early stopping,
k = 5000 evaluation) is the baseline's, so the rows of docs/results.md differ in
one thing. Arguments are the baseline's (epochs, warmup, patience, seed, smoke,
prior, components, posterior, flow_steps, layers, k).

Commands:
  python train.py --config configs/fashion_mnist_iaf.py --workdir runs/fmnist_iaf
  python scripts/evaluate.py --workdir runs/fmnist_iaf --num_samples 5000

Reference: no published Fashion-MNIST row; on MNIST IAF is the strongest one-layer posterior.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ["posterior=iaf", arg])))
