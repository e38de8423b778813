"""Fashion-MNIST protocol of configs/fashion_mnist_gated.py with the VampPrior (500 pseudo-inputs; Tomczak & Welling 2018).

Everything else (data, gated MLPs 300-300, 40 latents, warm-up, early stopping,
k = 5000 evaluation) is the baseline's, so the rows of docs/results.md differ in
one thing. Arguments are the baseline's (epochs, warmup, patience, seed, smoke,
prior, components, posterior, flow_steps, layers, k).

Commands:
  python train.py --config configs/fashion_mnist_vamp.py --workdir runs/fmnist_vamp
  python scripts/evaluate.py --workdir runs/fmnist_vamp --num_samples 5000

Reference: published (Exemplar-VAE table): VAE with VampPrior -227.35 +- 0.05.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ["prior=vamp", arg])))
