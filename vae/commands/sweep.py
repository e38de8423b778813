"""`vae-sweep` / `python scripts/sweep.py` / `python -m vae.commands.sweep`: runs a config's sweep.

  vae-sweep --config configs/x.py[:arg] --workdir ROOT [--mode MODE] [--axis K=V1,V2] [--config.a.b=v]

  --mode auto        (default) sequential on a CPU, vmap on a GPU or TPU with >= 2 members
                     (the rule and its measurements: vae/sweeps/runner.py choose_mode,
                     docs/benchmarks.md); the choice is recorded in sweep.json and kept
                     when the sweep resumes or grows
  --mode sequential  members one after another in this process
  --mode processes   members as separate vae-train processes, --parallel at a time
  --mode vmap        members that differ only in beta, free bits, warm-up, lr,
                     seed or latent size train together in one compiled program
                     (vae/training/loop.py: train_members); others are grouped by what they share
  --mode slurm       write ROOT/sweep.sbatch, a SLURM array (one task per unit: a member,
                     or a vmap group with --unit group) and print the sbatch command;
                     resubmitting it skips finished members and resumes interrupted ones
  --task_index I --num_tasks N  run only the units of task I of N (unit k goes to task
                     k mod N; defaults from SLURM_ARRAY_TASK_ID/_MIN/_COUNT): tasks may
                     run at once on one shared file system
  --dry_run          print the members and their directories; run nothing
  --axis KEY=V1,V2   the preset's values cut it to those members; other values, or a KEY
                     it does not vary, set KEY for every setting (a config without
                     get_sweep: the grid is the --axis product); repeatable:
                     --axis model.latent_dim=2,8,32 --axis objective.beta=1,4 --axis seed=0
  --zip              pair the --axis lists element by element instead
  --random N --seed S  draw N members from --axis ranges: log:1e-4:1e-2, uniform:0.5:8,
                     choice:2,8,32 (the same seed draws the same members)
  --config.a.b=v     set a field for every member (recorded in sweep.json; a rerun with
                     other overrides is refused)

Each member runs into ROOT/<name>/ (name from its overrides, e.g.
`latent_dim=2,beta=0.5,seed=0`) with the files of a single run. Finished
members are skipped, interrupted ones resume, and ROOT/sweep.json records each
member's overrides and status (vae/sweeps/runner.py). Then: scripts/summarize.py ROOT
and scripts/plot_curves.py ROOT --out FILE.
"""

import pathlib
import sys

from vae import config_lib
from vae.commands import cli, compilation_cache
from vae.sweeps import grid, plan, runner
from vae.training import metrics_io


def _parser():
  parser = cli.ArgumentParser(description=__doc__, config_overrides=True)
  parser.add_argument('--config', required=True, help='configs/x.py[:arg] with get_sweep')
  parser.add_argument('--workdir', required=True, help='sweep root directory')
  parser.add_argument('--mode', default='auto',
                      choices=('auto', 'sequential', 'processes', 'vmap', 'slurm'),
                      help='how the members run (see above; auto: by the backend and the '
                      'member count, recorded in sweep.json)')
  parser.add_argument('--task_mode', choices=('sequential', 'vmap'), default=None,
                      help='slurm: how each array task runs its unit (default: vmap for '
                      'groups, sequential for members)')
  parser.add_argument('--partition', default='', help='slurm: partition')
  parser.add_argument('--gpus_per_task', type=cli.non_negative_int, default=1,
                      help='slurm: GPUs per array task')
  parser.add_argument('--time', default='24:00:00', help='slurm: time limit per task')
  parser.add_argument('--mem', default='32G', help='slurm: memory per task')
  parser.add_argument('--cpus_per_task', type=cli.positive_int, default=4,
                      help='slurm: CPU cores per task (the data pipeline and the host loop)')
  parser.add_argument('--gpu_directive', choices=('gpus-per-task', 'gres'),
                      default='gpus-per-task',
                      help='slurm: ask for GPUs by --gpus-per-task=N or --gres=gpu:N')
  parser.add_argument('--account', default='', help='slurm: account to charge')
  parser.add_argument('--qos', default='', help='slurm: quality of service')
  parser.add_argument('--sbatch', action='append', default=[], metavar='--NAME[=VALUE]',
                      help='slurm: one more #SBATCH directive (repeatable), e.g. '
                      '--sbatch=--constraint=a100')
  parser.add_argument('--setup', action='append', default=[], metavar='LINE',
                      help='slurm: a shell line run before the command (repeatable), e.g. '
                      '"module load cuda"')
  parser.add_argument('--parallel', type=cli.positive_int, default=2, help='processes at a time')
  parser.add_argument('--dry_run', action='store_true',
                      help='print the members and their directories; run nothing')
  parser.add_argument('--task_index', type=cli.non_negative_int, default=None,
                      help='run only the units of this task (default: from SLURM_ARRAY_*)')
  parser.add_argument('--num_tasks', type=cli.positive_int, default=None,
                      help='number of tasks the sweep is split into')
  parser.add_argument('--unit', choices=('member', 'group'), default=None,
                      help='what a task runs: members, or whole vmap groups (default in vmap)')
  parser.add_argument('--axis', action='append', default=[], metavar='KEY=V1,V2',
                      help='values of the preset cut it to those members; other values (or a '
                      'KEY it does not vary) set KEY for every setting; with --random a range '
                      '(log:LOW:HIGH, uniform:LOW:HIGH, choice:V1,V2); repeatable')
  parser.add_argument('--zip', action='store_true',
                      help='pair the --axis lists element by element instead of a product')
  parser.add_argument('--random', type=cli.non_negative_int, default=0, metavar='N',
                      help='draw N members from the --axis ranges (with --seed)')
  parser.add_argument('--seed', type=cli.non_negative_int, default=0,
                      help='seed of the --random draws (the same seed draws the same members)')
  return parser


def _slurm(args, axes, overrides):
  """--mode slurm: writes the array job's script and says how to submit it."""
  unit = args.unit or ('group' if args.task_mode == 'vmap' else 'member')
  task_mode = args.task_mode or ('vmap' if unit == 'group' else 'sequential')
  _, configs, _, _, _ = plan.expand(args.config, axes, overrides, args.zip, args.random,
                                    args.seed)
  count = len(plan.units_of(configs, unit))
  options = runner.SlurmOptions(
      partition=args.partition, gpus_per_task=args.gpus_per_task,
      gpu_directive=args.gpu_directive, time_limit=args.time, mem=args.mem,
      cpus_per_task=args.cpus_per_task, account=args.account, qos=args.qos,
      extra=tuple(args.sbatch), setup=tuple(args.setup))
  text = runner.slurm_script(args.config, args.workdir, count, task_mode, unit, axes,
                             overrides, options, grid.flags(args.zip, args.random, args.seed))
  if count == 1 and len(configs) > 1:
    print(f'warning: all {len(configs)} members form one {unit}: the array has one task '
          '(one job, no parallelism); use --unit member to spread them over tasks',
          file=sys.stderr)
  path = pathlib.Path(args.workdir) / 'sweep.sbatch'
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  print(f'{count} array tasks ({unit}s, each run with --mode {task_mode}); submit with:')
  print(f'sbatch {path}')
  return cli.EXIT_OK


def _report(args, record):
  """One line per member (its status and newest test ELBO, nats/example), then the sweep's."""
  members = record.data['members']
  width = max(len(m['name']) for m in members)
  for m in members:  # one line per member: its status and newest test ELBO (nats/example)
    elbo = metrics_io.last_metrics(m['workdir']).get('test/elbo') if pathlib.Path(
        m['workdir'], 'metrics.jsonl').is_file() else None
    shown = f'test ELBO {elbo:.3f}' if elbo is not None else 'no test ELBO yet'
    print(f'  {m["name"]:<{width}}  {m["status"]:<12} {shown}')
  failed = [m['name'] for m in members if m['status'] == 'failed']
  interrupted = [m['name'] for m in members if m['status'] == 'interrupted']
  print(f'sweep {args.workdir}: {len(members)} members, failed: {failed or "none"}, '
        f'interrupted: {interrupted or "none"}')
  return cli.EXIT_FAILED if failed else cli.EXIT_OK


def main(argv=None):
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  args.config = plan.resolve_config_spec(args.config)
  for item in rest:  # --config.a.b=value: the same for every member
    key, eq, _ = item.partition('=')
    if not key.startswith('--config.') or not eq:
      parser.error(f'unrecognized argument {item!r} (overrides are --config.a.b=value)')
  try:
    overrides = plan.parse_config_overrides(rest)
  except config_lib.ConfigError as e:
    return cli.fail(str(e), cli.EXIT_BAD_INPUT)
  axes = {}
  for item in args.axis:
    key, eq, values = item.partition('=')
    if not eq or not values:
      parser.error(f'--axis {item!r}: write --axis KEY=V1,V2')
    axes[key] = values.split(',')

  def work():
    if args.mode == 'slurm':
      return _slurm(args, axes, overrides)
    if args.mode in ('auto', 'sequential', 'vmap'):  # in this process: later members reuse programs
      compilation_cache.enable()
    record = runner.run_sweep(args.config, args.workdir, args.mode, args.parallel, args.dry_run,
                              axes=axes, config_overrides=overrides, task_index=args.task_index,
                              num_tasks=args.num_tasks, unit=args.unit, zipped=args.zip,
                              random=args.random, seed=args.seed)
    return cli.EXIT_OK if args.dry_run else _report(args, record)

  return cli.run(work, args.workdir)


def run():
  """The console script: logging set up, the exit code returned to the shell."""
  cli.setup_logging()
  sys.exit(main())


if __name__ == '__main__':
  run()
