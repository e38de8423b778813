"""Speed against the machine's limit: python scripts/benchmark.py [--quick] [--out FILE].

Measures, in one process (so all ratios share the machine's current load):
  - the fp32 matmul peak (2048^3 product, and the 128x784 @ 784x500 shape);
  - training examples/s and achieved FLOP/s of the default MLP and a conv
    config, as a share of that peak. Every share has the same formula:
      share = F x (units of work per second) / (the 2048^3 matmul rate),
    F = the FLOPs XLA's cost_analysis() counts in the compiled program of one
    unit of work (one training step; one chunk of importance samples for one
    batch); analytic matmul counts are listed beside them;
  - the default step against its matmul-only twin, the pytorch/examples model
    through train.py against a minimal plain-JAX loop, 8 members in one group
    program (sweep --mode vmap, with train.member_loop's default: map on one CPU device,
    vmap elsewhere; the "before" column: vmap) against one model;
  - where the step's and the importance sampler's time goes (vae/training/profiling.py:
    a profiler trace summed over matmul, rng, likelihood, optimizer, norms, ...);
  - the same MLP step without dynamic binarization (what the RNG costs);
  - seconds from launching `train.py` to its first finished step, with an empty and with
    a warm compilation cache;
  - evaluation and importance-sampling throughput;
  - peak host memory.
Writes runs/benchmarks.json (default; --out FILE) and prints a table. Timings are medians of
repeated runs after a warm-up; every ratio of two timings (step vs twin, train.py vs plain
JAX, 8 members vs one, before vs after) is the median over 3 interleaved rounds (1 with
--quick); every share is taken against the highest 2048^3 rate measured in the run (at its
start, before the conv and importance-sampling rows, and at its end). The figures belong
in docs/benchmarks.md.
"""

import contextlib
import json
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top

# pylint: disable=g-import-not-at-top
from configs import default, fashion_mnist_conv_hvae, fashion_mnist_gated
from configs import fashion_mnist_hvae, pytorch_example
from vae import settings
from vae.benchmarking import launches, suites, timing
from vae.commands import cli
from vae.data import datasets
from vae.sweeps import plan

REPO = pathlib.Path(__file__).resolve().parents[1]


def tiny_config(epochs):
  """The host-loop stand-in's model (launches.TINY): pytorch/examples with one hidden layer
  of 32 and 2 latents."""
  return plan.apply_overrides(pytorch_example.get_config(f'epochs={epochs}'),
                              {'model.hidden': (32,), 'model.latent_dim': 2})


def fashion_mnist_or_random(n):
  """(Fashion-MNIST's training images, the pytorch_example spec that trains on them), or
  random images and the smoke spec where the dataset is not installed."""
  try:
    return datasets.load(default.get_config().data).train.images, 'configs/pytorch_example.py'
  except datasets.DataError:
    images = np.random.default_rng(0).integers(0, 256, (n, 28, 28, 1)).astype(np.uint8)
    return images, 'configs/pytorch_example.py:smoke'


@contextlib.contextmanager
def checkout_trainer(ref):
  """The train.py of git commit `ref`, in a temporary worktree of this checkout (None
  without a ref)."""
  if not ref:
    yield None
    return
  with tempfile.TemporaryDirectory() as tmp:
    base = pathlib.Path(tmp) / 'base'
    subprocess.run(['git', 'worktree', 'add', '--detach', str(base), ref], cwd=REPO,
                   check=True, capture_output=True)
    try:
      yield launches.Trainer([sys.executable, str(base / 'train.py')],
                             dict(settings.environ(), PYTHONPATH=str(base)), str(base))
    finally:
      subprocess.run(['git', 'worktree', 'remove', '--force', str(base)], cwd=REPO,
                     capture_output=True)


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--quick', action='store_true', help='fewer steps and repeats')
  parser.add_argument('--host_loop', action='store_true',
                      help='only the host-loop stand-in: the tiny model through train.py '
                           'against a minimal scan loop (and --base)')
  parser.add_argument('--lean_step', action='store_true',
                      help='only the compiled step against a minimal loop: the tiny model\'s '
                           'chunk rate, what each per-step extra costs, the default model')
  parser.add_argument('--families', action='store_true',
                      help='only what each Fashion-MNIST protocol family costs: training '
                           'examples/s, FLOPs per step, importance-sampling rate (the gated '
                           'MLP baseline, HVAE, ConvHVAE)')
  parser.add_argument('--base', default='',
                      help='with --host_loop: a git commit whose train.py is measured too; '
                           'with --lean_step: whose chunk and minimal loop are')
  parser.add_argument('--epochs', type=int, default=20, help='with --host_loop')
  parser.add_argument('--rounds', type=int, default=3,
                      help='with --host_loop or --lean_step')
  parser.add_argument('--no_before', action='store_true',
                      help='skip the before/after rows (the older behaviour, measured again)')
  parser.add_argument('--out', default='runs/benchmarks.json',
                      help='the JSON figures (default: runs/benchmarks.json, ignored by git)')
  args = parser.parse_args(argv)
  return cli.run(lambda: run(args), args.out)


def run(args):
  """The suite the flags name, its JSON written to --out and its figures printed."""
  trainer = launches.package_trainer()
  if args.host_loop:
    images, _ = fashion_mnist_or_random(50000)
    with checkout_trainer(args.base) as base:
      result = suites.host_loop(tiny_config(args.epochs), images, args.epochs, args.rounds,
                                trainer, base, args.base or None)
  elif args.lean_step:
    with checkout_trainer(args.base) as base:
      result = suites.lean_step(tiny_config(20), default.get_config(), args.rounds, base=base,
                                base_name=args.base or None)
  elif args.families:
    result = suites.family_costs({'gated_mlp': fashion_mnist_gated.get_config(),
                                  'hvae': fashion_mnist_hvae.get_config(),
                                  'conv_hvae': fashion_mnist_conv_hvae.get_config()},
                                 (28, 28, 1))
  else:
    images, spec = fashion_mnist_or_random(4096)
    result = suites.full(default.get_config(), default.get_config('arch=conv'),
                         fashion_mnist_gated.get_config('layers=2,prior=vamp,posterior=iaf'),
                         images, spec, trainer, args.quick, args.no_before)
  stand_in = args.host_loop or args.lean_step or args.families
  if stand_in:
    result.update(timing.machine())
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=1 if stand_in else 2) + '\n')
  if stand_in:
    print(json.dumps({k: v for k, v in result.items() if k != 'rounds'}, indent=1))
  else:
    suites.print_table(result)


if __name__ == '__main__':
  cli.setup_logging()
  sys.exit(main())
