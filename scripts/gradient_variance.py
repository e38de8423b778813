"""Reparameterization vs score-function gradients of the ELBO's reconstruction term.

  python scripts/gradient_variance.py --out docs/gradient_variance.png [--workdir DIR]
      [--samples 1,10,100,1000] [--repeats 64] [--batch 32]

For the encoder's parameters of a model (fresh, from --config, or trained, from
--workdir), estimates d/dphi E_q[log p(x|z)] on a batch of images with each
estimator of vae/gradient_estimators.py and S samples per example, `repeats`
times; compares them with a pathwise reference from --reference_samples
samples: total variance (sum over parameters) and cosine similarity, as S
grows. Also reports the norm of the gradient that z drawn without
reparameterization gives the encoder: exactly 0. Writes the figure and the
numbers to OUT with suffix .json.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

import vae  # pylint: disable=g-import-not-at-top
from configs import default
from vae import data as data_lib, gradient_estimators as ge, input_pipeline, models


def setup(workdir, batch, seed):
  """(model, params, x): a trained model's test images, or a fresh default model's."""
  if workdir:
    m = vae.load(workdir, 'best')
    images, _ = m.load_split('test')
    return m.model, m.params, m.to_float(images[:batch]), f'trained ({workdir}, step {m.step})'
  c = default.get_config()
  try:
    ds = data_lib.load(c.data)
    images = input_pipeline.binarize_fixed(ds.test.images[:batch], [seed, 2])
  except data_lib.DataError:
    c = default.get_config('smoke')
    ds = data_lib.load(c.data)
    images = input_pipeline.binarize_fixed(ds.test.images[:batch], [seed, 2])
  model = models.build_model(c.model, ds.image_shape)
  x = jnp.asarray(images, jnp.float32) / 255.0
  params = model.init(jax.random.key(seed), x, jax.random.key(seed + 1))['params']
  return model, params, x, f'fresh (default config, {c.data.name}, seed {seed})'


def study(model, params, x, sample_counts, repeats, reference_samples, seed=0):
  key = jax.random.key(seed)
  reference = ge.flatten(jax.jit(lambda k: ge.encoder_gradient(
      model, params, x, k, reference_samples, 'pathwise'))(jax.random.fold_in(key, 0)))
  results = {'reference_norm': float(jnp.linalg.norm(reference)), 'estimators': {}}
  for est in ('pathwise', 'score', 'score_loo'):
    rows = []
    for s in sample_counts:
      if est == 'score_loo' and s < 2:
        continue
      stats = ge.estimator_statistics(model, params, x, jax.random.fold_in(key, s), s, est,
                                      repeats, reference)
      rows.append({'samples': s, **stats})
    results['estimators'][est] = rows
  sampled = ge.encoder_gradient(model, params, x, jax.random.fold_in(key, 7), 10, 'sampled')
  results['sampled_without_reparameterization_grad_norm'] = float(
      jnp.linalg.norm(ge.flatten(sampled)))
  return results


def figure(results, out, title):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  names = {'pathwise': 'reparameterization (pathwise)', 'score': 'score function (REINFORCE)',
           'score_loo': 'score function + leave-one-out baseline'}
  for est, rows in results['estimators'].items():
    s = [r['samples'] for r in rows]
    axes[0].plot(s, [r['total_variance'] for r in rows], 'o-', label=names[est])
    axes[1].plot(s, [r['cosine'] for r in rows], 'o-', label=names[est])
  axes[0].set_yscale('log')
  axes[0].set_ylabel('total variance of the estimate (sum over encoder parameters)')
  axes[1].set_ylabel('cosine similarity to the many-sample reference')
  axes[1].set_ylim(-0.05, 1.05)
  for ax in axes:
    ax.set_xscale('log')
    ax.set_xlabel('samples per example (S)')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle(f'd/d(encoder) E_q[log p(x|z)], {title}; z drawn without reparameterization: '
               f'gradient norm {results["sampled_without_reparameterization_grad_norm"]:.1f}',
               fontsize=9)
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--out', required=True)
  parser.add_argument('--workdir', default='', help='a trained workdir; default: fresh model')
  parser.add_argument('--samples', default='1,10,100,1000')
  parser.add_argument('--repeats', type=int, default=64)
  parser.add_argument('--reference_samples', type=int, default=10000)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  model, params, x, title = setup(args.workdir, args.batch, args.seed)
  counts = [int(s) for s in args.samples.split(',')]
  results = study(model, params, x, counts, args.repeats, args.reference_samples, args.seed)
  results.update(model=title, batch=args.batch, repeats=args.repeats,
                 reference_samples=args.reference_samples)
  figure(results, args.out, title)
  pathlib.Path(args.out).with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
  print(f'{"estimator":<12} {"S":>6} {"total var":>12} {"cosine":>8}')
  for est, rows in results['estimators'].items():
    for r in rows:
      print(f'{est:<12} {r["samples"]:>6} {r["total_variance"]:>12.4g} {r["cosine"]:>8.3f}')
  print(f'sampled without reparameterization: encoder gradient norm '
        f'{results["sampled_without_reparameterization_grad_norm"]}')
  print(f'figure: {args.out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
