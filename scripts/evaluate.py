"""Test log-likelihood and latent diagnostics of a trained model.

  python scripts/evaluate.py --workdir runs/default [--checkpoint best|latest|STEP]
      [--num_samples 5000] [--split test] [--out FILE]

Prints a table and writes WORKDIR/eval.json (or --out): the importance-weighted
estimate of log p(x) with S samples (nats per example) and its standard error
over examples, the estimate at k = 1, 10, 100, 1000, ... <= S (the same
samples, nested) to show convergence, ELBO / reconstruction / KL, bits/dim,
active units, KL per latent dimension, the mutual information I(x; z), the
aggregate-posterior KL and the prior-hole measures (vae/evaluation.py). Every
random draw comes from --seed, so the result is deterministic.
"""

import argparse
import json
import math
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

import vae  # pylint: disable=g-import-not-at-top
from vae import checkpointing, data as data_lib, evaluation, objectives
from vae.likelihoods import bits_per_dim


def evaluate(model, images, num_samples, batch_size=500, chunk_size=100, seed=0):
  """Per-example estimates over uint8 `images`; returns the result dict."""
  ks = [k for k in (1, 10, 100, 1000, 5000, 10000) if k < num_samples]
  key = jax.random.key(seed)
  iw_fn = jax.jit(lambda p, x, k: evaluation.iw_log_likelihood(
      model.model, {'params': p}, x, k, num_samples, min(chunk_size, num_samples), ks))
  terms_fn = jax.jit(lambda p, x, k: objectives.per_example_objective(
      model.model, {'params': p}, x, k)[1])
  ests, elbo, recon, kl, means, logvars = [], [], [], [], [], []
  t0 = time.time()
  for b, start in enumerate(range(0, len(images), batch_size)):
    kb = jax.random.fold_in(key, b)
    x = model.to_float(images[start:start + batch_size], jax.random.fold_in(kb, 0))
    if not model.model.deterministic:
      ests.append(np.asarray(iw_fn(model.params, x, jax.random.fold_in(kb, 1))))
    t = terms_fn(model.params, x, jax.random.fold_in(kb, 2))
    elbo.append(np.asarray(t['elbo']))
    recon.append(np.asarray(t['recon']))
    kl.append(np.asarray(t['kl']))
    m, lv = model.encode(x)
    means.append(np.asarray(m))
    logvars.append(np.asarray(lv))
  seconds = time.time() - t0
  n = len(images)
  num_dims = int(np.prod(model.image_shape))
  elbo, recon, kl = map(np.concatenate, (elbo, recon, kl))
  mean, logvar = np.concatenate(means), np.concatenate(logvars)
  se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))
  out = {'num_examples': n, 'num_samples': num_samples, 'seconds': seconds,
         'elbo': float(elbo.mean()), 'elbo_se': se(elbo), 'recon': float(recon.mean()),
         'kl': float(kl.mean()), 'elbo_bpd': float(bits_per_dim(-elbo.mean(), num_dims))}
  if ests:
    est = np.concatenate(ests, axis=1)  # [len(ks) + 1, N]
    ll = est[-1]
    out.update(log_likelihood=float(ll.mean()), log_likelihood_se=se(ll),
               nll=float(-ll.mean()), nll_bpd=float(bits_per_dim(-ll.mean(), num_dims)),
               convergence={str(k): float(est[i].mean()) for i, k in enumerate(ks + [num_samples])})
  d = model.config.train.active_unit_threshold
  num_active, var = evaluation.active_units(mean.sum(0), (mean ** 2).sum(0), n, d)
  out['active_units'] = num_active
  out['posterior_mean_variance_per_dim'] = var.tolist()
  if not model.model.deterministic:
    out['kl_per_dim'] = np.mean(
        np.asarray(objectives.gaussian_kl_per_dim(mean, logvar)), axis=0).tolist()
  out['latent'] = evaluation.latent_diagnostics(
      jnp.asarray(mean), jnp.asarray(logvar), jax.random.fold_in(key, 10 ** 6),
      deterministic=model.model.deterministic)
  return out


def print_table(result, header):
  print(header)
  rows = [('examples', result['num_examples'])]
  if 'log_likelihood' in result:
    rows += [(f'log p(x), k={result["num_samples"]}',
              f'{result["log_likelihood"]:.3f} +- {result["log_likelihood_se"]:.3f} nats'),
             ('NLL bits/dim', f'{result["nll_bpd"]:.4f}')]
    rows += [(f'  k={k}', f'{v:.3f}') for k, v in result['convergence'].items()]
  rows += [('ELBO', f'{result["elbo"]:.3f} +- {result["elbo_se"]:.3f} nats'),
           ('reconstruction', f'{result["recon"]:.3f} nats'),
           ('KL', f'{result["kl"]:.3f} nats'), ('ELBO bits/dim', f'{result["elbo_bpd"]:.4f}'),
           ('active units', result['active_units'])]
  rows += [(k, f'{v:.4g}') for k, v in result['latent'].items()]
  rows.append(('seconds', f'{result["seconds"]:.1f}'))
  for name, value in rows:
    print(f'  {name:<28} {value}')


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--checkpoint', default='best', help='best, latest or a step')
  parser.add_argument('--num_samples', type=int, default=5000)
  parser.add_argument('--split', default='test', choices=('test', 'val', 'train'))
  parser.add_argument('--batch_size', type=int, default=500)
  parser.add_argument('--chunk_size', type=int, default=100, help='samples per chunk')
  parser.add_argument('--max_examples', type=int, default=0, help='0 = the whole split')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default='', help='default: WORKDIR/eval.json')
  args = parser.parse_args(argv)
  if args.num_samples < 1:
    parser.error('--num_samples must be >= 1')
  try:
    model = vae.load(args.workdir, args.checkpoint)
    images, _ = model.load_split(args.split)
  except (checkpointing.CheckpointError, data_lib.DataError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.max_examples:
    images = images[:args.max_examples]
  result = evaluate(model, images, args.num_samples, args.batch_size, args.chunk_size, args.seed)
  result.update(workdir=str(args.workdir), checkpoint_step=model.step, split=args.split,
                data=model.data_info, seed=args.seed)
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / 'eval.json')
  out.write_text(json.dumps(result, indent=2) + '\n')
  print_table(result, f'{args.workdir} step {model.step}, {args.split} split -> {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
