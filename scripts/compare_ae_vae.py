"""AE vs VAE: one figure and the latent diagnostics side by side, in nats.

  python scripts/compare_ae_vae.py --vae runs/pair_vae --ae runs/pair_ae --out runs/ae_vs_vae.png

The figure has, for each model, prior samples z ~ N(0, I) decoded to images,
and the test-set posterior means (first two principal axes when D > 2) drawn
over the prior's 1, 2 and 3 sigma circles, coloured by label. The diagnostics
(vae/evaluation/latent_space.py: latent_diagnostics) go to OUT with the suffix .json and
are printed as a table.
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
  interrupts.exit_on_signals('the AE/VAE comparison', 'rerun the same command')

import jax  # pylint: disable=g-import-not-at-top

import vae
from vae.commands import cli
from vae.evaluation import latent_space
from vae.reporting import figures


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--vae', required=True, help='workdir of the VAE')
  parser.add_argument('--ae', required=True, help='workdir of the autoencoder')
  parser.add_argument('--out', required=True, help='figure path (.png)')
  parser.add_argument('--checkpoint', default='best',
                      help='which checkpoint of each workdir: best, latest or a step number')
  parser.add_argument('--max_examples', type=cli.positive_int, default=5000,
                      help='test images encoded for the latent-space comparison')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0,
                      help='seed of the samples and the probes between codes')
  args = parser.parse_args(argv)

  results, panels = {}, []
  for name, workdir in (('VAE', args.vae), ('AE', args.ae)):
    try:
      model = vae.load(workdir, args.checkpoint)
    except cli.BAD_INPUT as e:
      return cli.fail(e, cli.EXIT_BAD_INPUT)
    expected = name == 'AE'
    if model.model.deterministic != expected:
      return cli.fail(f'--{name.lower()} {workdir} holds a model.type='
                      f'{model.config.model.type} run; give a {name} workdir',
                      cli.EXIT_BAD_INPUT)
    images, labels = model.load_split('test')
    images, labels = images[:args.max_examples], labels[:args.max_examples]
    diag, means, samples = latent_space.latent_summary(model, images, labels,
                                                     jax.random.key(args.seed))
    results[name] = diag
    panels.append((name, means, labels, samples))

  out = figures.ae_vs_vae(panels, args.out)
  out.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
  keys = sorted(set(results['VAE']) | set(results['AE']))
  print(f'{"diagnostic":<28} {"VAE":>12} {"AE":>12}')
  for k in keys:
    fmt = lambda v: f'{v:12.4g}' if isinstance(v, float) else f'{"-":>12}'
    print(f'{k:<28} {fmt(results["VAE"].get(k))} {fmt(results["AE"].get(k))}')
  print(f'figure: {out}')
  return 0


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
