"""Kingma & Welling 2013, Figure 2: the ELBO against training examples, for several latent sizes.

Protocol (../shared/REFERENCE.md): MNIST with a Bernoulli decoder, one tanh
hidden layer of 500 units in encoder and decoder, latent sizes 3, 5, 10, 20,
200; Adagrad with step size from {0.01, 0.02, 0.1} (0.02 here), minibatch 100,
one sample per datapoint (L=1), weight decay equivalent to a N(0, I) prior on
the weights (1/N per example = 2e-5 for N = 50,000), weights initialized from
N(0, 0.01^2); curves up to 1e8 training examples (2,000 epochs). Data:
dynamically binarized MNIST from TFDS (needs internet); `:dataset=fashion_mnist`
runs the same protocol offline on Debian's Fashion-MNIST.

Commands:
  python scripts/sweep.py --config configs/kingma_welling.py --workdir runs/kw --mode vmap
  python scripts/plot_curves.py runs/kw --out runs/kw/figure2.png
  # offline, shorter: configs/kingma_welling.py:dataset=fashion_mnist,epochs=20
  # offline, 1e7 examples, 3 seeds per latent size (bands), one vmapped program:
  python scripts/sweep.py --config configs/kingma_welling.py:dataset=fashion_mnist,epochs=200,seeds=3 --workdir runs/kw_fmnist_1e7 --mode vmap

Published: the MNIST test curves sit between about -150 and -100 nats per
datapoint, higher for larger latent spaces up to ~20 (no overfitting at 200
thanks to the prior). Our Fashion-MNIST figure is in docs/results.md.
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, dataset='mnist', latent_dim=20, epochs=2000.0, lr=0.02,
                           smoke=False, seeds=1)
  c = config_lib.base_config()
  c.data.name = a.dataset
  c.data.binarize = 'dynamic'
  c.model.hidden = (500,)
  c.model.activation = 'tanh'
  c.model.latent_dim = a.latent_dim
  c.model.init_std = 0.01
  c.optim.name = 'adagrad'
  c.optim.lr = a.lr
  c.optim.weight_decay = 2e-5
  c.train.batch_size = 100
  c.train.num_epochs = a.epochs
  c.train.eval_every_epochs = max(1.0, a.epochs / 40)
  c.train.checkpoint_every_epochs = c.train.eval_every_epochs
  c.train.log_every_steps = 50
  if a.smoke:
    config_lib.smoke(c)
  c.lock()
  return c


def get_sweep(arg=None):
  """Latent sizes 3, 5, 10, 20, 200 (smoke: 3-20), each with `seeds` seeds (the figure's
  bands): `:seeds=3` gives 15 members, one vmapped program in --mode vmap."""
  a = config_lib.parse_arg(arg, dataset='mnist', latent_dim=20, epochs=2000.0, lr=0.02,
                           smoke=False, seeds=1)
  axes = {'model.latent_dim': [3, 5, 10, 20] if a.smoke else [3, 5, 10, 20, 200]}
  if a.seeds > 1:  # (one seed keeps the member names of sweeps made before this argument)
    axes['seed'] = list(range(a.seeds))
  return config_lib.product(**axes)
