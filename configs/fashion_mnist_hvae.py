"""Fashion-MNIST protocol of configs/fashion_mnist_gated.py with two stochastic layers (40 + 40 latents): q(z2|x) q(z1|x,z2), p(z2) p(z1|z2) p(x|z1,z2); `:prior=vamp` puts the VampPrior on z2.

Everything else (data, gated MLPs 300-300, 40 latents, warm-up, early stopping,
k = 5000 evaluation) is the baseline's, so the rows of docs/results.md differ in
one thing. Arguments are the baseline's (epochs, warmup, patience, seed, smoke,
prior, components, posterior, flow_steps, layers, k).

Commands:
  python train.py --config configs/fashion_mnist_hvae.py --workdir runs/fmnist_hvae
  python scripts/evaluate.py --workdir runs/fmnist_hvae --num_samples 5000

Reference: published (Exemplar-VAE table): HVAE with Gaussian prior -227.37 +- 0.10, with
VampPrior -226.72 +- 0.08, Exemplar HVAE (`:prior=exemplar`) -226.53 +- 0.09; ours in
docs/results.md.
"""

from configs import fashion_mnist_gated


def get_config(arg=None):
  return fashion_mnist_gated.get_config(','.join(filter(None, ["layers=2", arg])))
