"""Reparameterization vs score-function gradients of the ELBO's reconstruction term.

  python scripts/gradient_variance.py --out docs/gradient_variance.png [--workdir DIR]
      [--samples 1,10,100,1000] [--repeats 64] [--batch 32]

For the encoder's parameters of a model (fresh, from --config, or trained, from
--workdir), estimates d/dphi E_q[log p(x|z)] on a batch of images with each
estimator of vae/evaluation/gradient_estimators.py and S samples per example, `repeats`
times; compares them with a pathwise reference from --reference_samples
samples: total variance (sum over parameters) and cosine similarity, as S
grows. Also reports the norm of the gradient that z drawn without
reparameterization gives the encoder: exactly 0. Writes the figure and the
numbers to OUT with suffix .json.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('the gradient-variance study', 'rerun the same command')

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp

import vae  # pylint: disable=g-import-not-at-top
from configs import default
from vae import config_lib
from vae.commands import cli
from vae.data import datasets as data_lib, input_pipeline
from vae.evaluation import gradient_estimators
from vae.reporting import figures
from vae.families import models


def setup(workdir, batch, seed):
  """(model, params, x): a trained model's test images, or a fresh default model's."""
  if workdir:
    m = vae.load(workdir, 'best')
    if not m.model.analytic_kl:
      raise config_lib.ConfigError(
          f'{workdir} has model.prior={m.config.model.prior}, model.posterior='
          f'{m.config.model.posterior}, model.stochastic_layers='
          f'{m.config.model.stochastic_layers}; the gradient study takes the diagonal Gaussian '
          'posterior under N(0, I) with one layer: pass such a workdir, or none')
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


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--out', required=True, help='figure path (.png); the numbers go beside it as .json')
  parser.add_argument('--workdir', default='', help='a trained workdir; default: fresh model')
  parser.add_argument('--samples', default='1,10,100,1000',
                      help='comma-separated Monte Carlo sample counts per estimator')
  parser.add_argument('--repeats', type=cli.positive_int, default=64,
                      help='independent gradient estimates per sample count')
  parser.add_argument('--reference_samples', type=cli.positive_int, default=10000,
                      help='samples of the reference ("true") gradient')
  parser.add_argument('--batch', type=cli.positive_int, default=32,
                      help='test images in the batch whose gradient is estimated')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0, help='seed of the estimates')
  args = parser.parse_args(argv)
  try:
    counts = [cli.positive_int(s) for s in args.samples.split(',')]
  except Exception as e:  # pylint: disable=broad-except
    return cli.fail(f'--samples={args.samples!r}: {e}; give sample counts like 1,10,100',
                    cli.EXIT_BAD_INPUT)

  def work():
    model, params, x, title = setup(args.workdir, args.batch, args.seed)
    results = gradient_estimators.study(model, params, x, counts, args.repeats,
                                        args.reference_samples, args.seed)
    results.update(model=title, batch=args.batch, repeats=args.repeats,
                   reference_samples=args.reference_samples)
    figures.gradient_variance(results, args.out, title)
    pathlib.Path(args.out).with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
    print(f'{"estimator":<12} {"S":>6} {"total var":>12} {"cosine":>8}')
    for est, rows in results['estimators'].items():
      for r in rows:
        print(f'{est:<12} {r["samples"]:>6} {r["total_variance"]:>12.4g} {r["cosine"]:>8.3f}')
    print(f'sampled without reparameterization: encoder gradient norm '
          f'{results["sampled_without_reparameterization_grad_norm"]}')
    print(f'figure: {args.out}')

  return cli.run(work, args.out)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
