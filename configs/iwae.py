"""Burda, Grosse & Salakhutdinov 2015 (IWAE), Table 1: one stochastic layer, k in {1, 5, 50}.

Protocol (../shared/REFERENCE.md): dynamically binarized MNIST (TFDS, needs
internet; `:dataset=fashion_mnist` runs offline), 784-200-200-50 tanh MLP
encoder and decoder, Bernoulli likelihood; Adam (b1 0.9, b2 0.999, eps 1e-4),
batch 20; 8 stages i = 0..7 of 3^i epochs at lr 1e-3 * 10^(-i/7) (3,280 epochs);
trained with the k-sample IWAE bound (`:model=iwae`) or the k-sample average
ELBO (`:model=vae`); test NLL with 5,000 importance samples.

Commands:
  python train.py --config configs/iwae.py:model=iwae,k=50 --workdir runs/iwae_k50
  python scripts/evaluate.py --workdir runs/iwae_k50 --num_samples 5000
  python scripts/sweep.py --config configs/iwae.py --workdir runs/iwae_table --mode sequential

Published test NLL (nats): VAE 86.76 / 86.47 / 86.35 and IWAE 86.76 / 85.54 /
84.78 for k = 1 / 5 / 50 (scripts/evaluate.py reports log p(x) = -NLL).
`:stages=N` shortens the schedule to N stages (sum of 3^i epochs).
"""

from vae import config_lib


def get_config(arg=None):
  a = config_lib.parse_arg(arg, model='iwae', k=50, dataset='mnist', stages=8, smoke=False)
  if a.model not in ('iwae', 'vae'):
    raise config_lib.ConfigError(f'configs/iwae.py: model={a.model!r}; choose iwae or vae')
  c = config_lib.base_config()
  c.data.name = a.dataset
  c.data.binarize = 'dynamic'
  c.model.hidden = (200, 200)
  c.model.activation = 'tanh'
  c.model.latent_dim = 50
  c.objective.num_samples = a.k
  c.objective.estimator = 'iwae' if a.model == 'iwae' else 'elbo'
  c.optim.name = 'adam'
  c.optim.lr = 1e-3
  c.optim.eps = 1e-4
  c.optim.schedule = 'iwae_staircase'
  c.optim.iwae_stages = a.stages
  c.train.batch_size = 20
  c.train.eval_batch_size = 500
  c.train.eval_every_epochs = 10.0
  c.train.checkpoint_every_epochs = 10.0
  c.train.log_every_steps = 500
  if a.smoke:
    config_lib.smoke(c)
    c.train.batch_size = 20
    c.train.log_every_steps = 8
  c.lock()
  return c


def get_sweep(arg=None):
  del arg
  return config_lib.product(**{'objective.estimator': ['elbo', 'iwae'],
                           'objective.num_samples': [1, 5, 50]})[1:]  # k=1 is the same for both
