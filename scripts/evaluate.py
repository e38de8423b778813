"""Test log-likelihood and latent diagnostics of a trained model.

  python scripts/evaluate.py --workdir runs/default [--checkpoint best|latest|STEP]
      [--num_samples 5000] [--split test] [--out FILE]
  python scripts/evaluate.py --sweep runs/ablation [--num_samples 5000]   # every member

Prints a table and writes WORKDIR/eval.json (or --out): the importance-weighted
estimate of log p(x) with S samples (nats per example) and its standard error
over examples, the estimate at k = 1, 10, 100, 1000, ... <= S (the same
samples, nested) to show convergence, ELBO / reconstruction / KL, bits/dim,
active units, KL per latent dimension, the mutual information I(x; z), the
aggregate-posterior KL and the prior-hole measures (vae/training/estimates.py). Every
random draw comes from --seed, so the result is deterministic.
"""

import signal
if __name__ == '__main__':  # a signal while the libraries load waits for exit_on_signals
  signal.pthread_sigmask(signal.SIG_BLOCK, (signal.SIGINT, signal.SIGTERM))

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from vae.training import interrupts  # pylint: disable=wrong-import-position

if __name__ == '__main__':  # SIGTERM / SIGINT from the first second on: one line, 143 / 130
  interrupts.exit_on_signals('evaluation', 'rerun the same command')

from vae.commands import cli
from vae.evaluation import report
from vae.sweeps import evaluate as sweep_evaluation


def print_table(result, header):
  print(header)
  rows = [('examples', result['num_examples'])]
  if 'log_likelihood' in result:
    rows += [(f'log p(x), k={result["num_samples"]}',
              f'{result["log_likelihood"]:.3f} +- {result["log_likelihood_se"]:.3f} nats'),
             ('NLL bits/dim', report.format_bpd(result['nll_bpd']))]
    rows += [(f'  k={k}', f'{v:.3f}') for k, v in result['convergence'].items()]
  rows += [('ELBO', f'{result["elbo"]:.3f} +- {result["elbo_se"]:.3f} nats'),
           ('reconstruction', f'{result["recon"]:.3f} nats'),
           ('KL', f'{result["kl"]:.3f} nats'), ('ELBO bits/dim', report.format_bpd(result['elbo_bpd'])),
           ('active units', result['active_units'])]
  if 'kl_z1' in result:  # two stochastic layers
    rows += [('  KL z1 / z2', f'{result["kl_z1"]:.3f} / {result["kl_z2"]:.3f} nats'),
             ('  active units z1 / z2',
              f'{result["active_units_z1"]} / {result["active_units_z2"]}')]
  rows += [(k, f'{v:.4g}') for k, v in result['latent'].items()]
  if 'per_example_file' in result:
    rows.append(('per-image log p(x)', result['per_example_file']))
  rows.append(('seconds', f'{result["seconds"]:.1f}'))
  for name, value in rows:
    print(f'  {name:<28} {value}')


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  where = parser.add_mutually_exclusive_group(required=True)
  where.add_argument('--workdir', help='a training workdir')
  where.add_argument('--sweep', help='a sweep root: every finished member (resumable)')
  parser.add_argument('--checkpoint', default='best', help='best, latest or a step')
  parser.add_argument('--accept_changed_data', action='store_true',
                      help='evaluate although the data differs from what the run recorded '
                           '(content hashes in its data.json); recorded in eval.json')
  parser.add_argument('--num_samples', type=cli.positive_int, default=5000,
                      help='importance samples k per image (the published protocol: 5000)')
  parser.add_argument('--split', default='test', choices=('test', 'val', 'train'),
                      help='which split is evaluated')
  parser.add_argument('--batch_size', type=cli.positive_int, default=500,
                      help='images per compiled evaluation call (memory, not results)')
  parser.add_argument('--chunk_size', type=cli.positive_int, default=100,
                      help='importance samples per chunk of a batch (memory, not results)')
  parser.add_argument('--max_examples', type=cli.non_negative_int, default=0,
                      help='evaluate only the first N images (0 = the whole split); a cheap estimate '
                           'for a sweep, with a standard error that grows as 1/sqrt(N)')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0,
                      help='seed of the importance samples')
  parser.add_argument('--out', default='', help='default: WORKDIR/eval.json')
  args = parser.parse_args(argv)
  options = dict(split=args.split, batch_size=args.batch_size, chunk_size=args.chunk_size,
                 max_examples=args.max_examples, seed=args.seed,
                 accept_changed_data=args.accept_changed_data)

  def work():
    if args.sweep:
      results = sweep_evaluation.evaluate_sweep(args.sweep, args.num_samples, args.checkpoint,
                                         **options)
      for name, r in results.items():
        print(f'{name:<48} log p(x) {r.get("log_likelihood", float("nan")):.3f} +- '
              f'{r.get("log_likelihood_se", float("nan")):.3f}  ELBO {r["elbo"]:.3f}')
      print(f'{len(results)} members evaluated; scripts/summarize.py {args.sweep} tabulates them')
      return
    result, out = report.evaluate_workdir(args.workdir, args.checkpoint,
                                             num_samples=args.num_samples, out=args.out or None,
                                             **options)
    print_table(result, f'{args.workdir} step {result["checkpoint_step"]}, {args.split} split '
                f'-> {out}')

  return cli.run(work, args.out or args.workdir or args.sweep)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
