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
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import vae  # pylint: disable=g-import-not-at-top
from vae import checkpointing, data as data_lib, evaluation


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
  result = evaluation.evaluate_model(model, images, args.num_samples, args.batch_size, args.chunk_size, args.seed)
  result.update(workdir=str(args.workdir), checkpoint_step=model.step, split=args.split,
                data=model.data_info, seed=args.seed)
  out = pathlib.Path(args.out or pathlib.Path(args.workdir) / 'eval.json')
  out.write_text(json.dumps(result, indent=2) + '\n')
  print_table(result, f'{args.workdir} step {model.step}, {args.split} split -> {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
