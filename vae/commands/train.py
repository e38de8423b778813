"""`vae-train` / `python -m vae.commands.train` / `python train.py`: trains a VAE.

Trains the config's model into WORKDIR (checkpoints, metrics.jsonl, TensorBoard
events, images, run.json) and evaluates it; rerunning the same command resumes
an interrupted run exactly, and a finished one is left as it is. A thin entry
point: flags in, `vae.training.loop.train_and_evaluate(config, workdir)` out. Every error
is one line on stderr with a documented exit code (below). A relative config path
that does not exist from the working directory is looked up in the installed
configs package, so the command runs from any directory.
"""

import difflib
import re
import sys

from absl import flags
from ml_collections import config_flags

from vae import config_lib, settings
from vae.commands import cli, compilation_cache, supervisor
from vae.families import flows, likelihoods, objective_families, priors
from vae.sweeps import plan
from vae.training import interrupts, loop, validation


def define_flags():
  """A fresh FlagValues (not absl's global), so that `main(argv)` can run more than once in
  one process (the tests call it in-process) without one call's flags leaking into the next."""
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'Experiment config file (configs/*.py[:arg]).',
                                  lock_config=True, flag_values=fv)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and images.',
                      flag_values=fv)
  flags.DEFINE_string('coordinator_address', None,
                      'Multi-host: host:port of process 0 (omit on TPU/SLURM: auto-detected).',
                      flag_values=fv)
  flags.DEFINE_integer('num_processes', None, 'Multi-host: number of processes.',
                       flag_values=fv)
  flags.DEFINE_integer('process_id', None, 'Multi-host: this process\'s index.', flag_values=fv)
  flags.DEFINE_bool('distributed', False, 'Call jax.distributed.initialize() before training.',
                    flag_values=fv)
  flags.DEFINE_integer('heartbeat_timeout_s', 60, 'Multi-host: seconds without a heartbeat '
                       'before the runtime declares a process dead.', flag_values=fv)
  flags.DEFINE_integer('shutdown_timeout_s', 30, 'Multi-host: seconds the processes wait for '
                       'each other when they exit.', flag_values=fv)
  flags.DEFINE_bool('show_config', False, 'Print every config field with its value and '
                    'meaning (after --config.* overrides) and exit; nothing is trained.',
                    flag_values=fv)
  return fv


def _flag_error(error, argv):
  """One line for a flag or config-file error, naming the field and a likely fix."""
  known = config_lib.flatten(config_lib.config_json(config_lib.base_config()))
  if isinstance(error, config_lib.ConfigError):
    return cli.one_line(error)
  for arg in argv[1:]:
    if arg.startswith('--config.'):
      key = arg[len('--config.'):].split('=', 1)[0]
      if key not in known:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f'did you mean {close[0]}?' if close else 'see vae/config_lib.py for the fields'
        return f'--config.{key} is not a config field; {hint}'
  text = cli.one_line(error)
  if isinstance(error, FileNotFoundError) or 'No such file or directory' in str(error):
    spec = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
    if spec is None and '--config' in argv[:-1]:
      spec = argv[argv.index('--config') + 1]
    return f'config file {spec or "?"} not found; give an existing configs/*.py'
  # config_flags nests the real reason (an exception line of an embedded traceback).
  reasons = [m.group(1) for m in re.finditer(r'^[\w.]*(?:Error|Exception): (.+)$', str(error),
                                            re.MULTILINE)]
  return reasons[-1] if reasons else text


def families_lines():
  """--show_config's list of the registered families (the library's and --import's)."""
  return ['', 'registered families (docs/families.md; your own with --import MODULE):'] + [
      f'  {field:<18} {", ".join(sorted(registry))}'
      for field, registry in (('model.prior', priors.REGISTRY),
                              ('model.likelihood', likelihoods.REGISTRY),
                              ('model.posterior', flows.REGISTRY),
                              ('objective.name', objective_families.REGISTRY))]


HELP_FLAGS = ('--help', '-h', '--helpshort', '--helpfull', '-help')


def help_text():
  """--help: what the command does, every flag with its default, overrides and exit codes."""
  flags_help = define_flags().get_help().split('\nabsl.flags:', 1)[0].strip()
  flags_help = flags_help.split(':\n', 1)[1] if not flags_help.startswith('--') else flags_help
  return '\n\n'.join([__doc__.strip(), 'usage: python train.py --config configs/x.py[:arg] '
                      '--workdir DIR [--config.a.b=value ...] [--import MODULE ...]',
                      'flags:\n' + flags_help + '\n  --import: ' + cli.IMPORT_HELP,
                      cli.CONFIG_OVERRIDES_HELP, cli.exit_codes_help()])


def main(argv=None, as_command=False):
  """Runs the command for `argv` (argv[0] the program); returns the exit code.
  `as_command`: started as a process of its own (a multi-process run then supervises its
  training in a child process); False in-process (the tests)."""
  argv = list(sys.argv if argv is None else argv)
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text())
    return cli.EXIT_OK
  imports, argv = cli.take_imports(argv)
  argv = plan.resolve_config_argv(argv)
  fv = define_flags()
  try:
    config_lib.import_plugins(imports)  # the user's families, before the config loads
    plan.parse_config_overrides(argv[1:])  # a field given twice is refused here
    fv(argv)
    config = fv.config
    if config is None:
      raise flags.IllegalFlagValueError('--config is required')
    config.keys()  # a config file that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except  (flag parsing or loading the config)
    return cli.fail(_flag_error(e, argv), cli.EXIT_BAD_INPUT)
  if fv.show_config:
    try:  # the values shown are the ones a run would accept
      validation.validate(config)
    except config_lib.ConfigError as e:
      return cli.fail(e, cli.EXIT_BAD_INPUT)
    print('\n'.join(config_lib.describe(config) + families_lines()))
    return cli.EXIT_OK
  if not fv.workdir:
    return cli.fail('--workdir is missing or empty; give the directory of the run',
                    cli.EXIT_BAD_INPUT)
  distributed = fv.distributed or fv.coordinator_address
  if distributed and not settings.supervised() and as_command:
    # The training process runs as a child, so that a lost peer ends it with one line.
    return supervisor.supervise([sys.executable, '-m', 'vae.commands.train'] + argv[1:],
                         fv.process_id or 0)

  def work():
    if not distributed:  # one process: relaunches reuse compiled programs
      compilation_cache.enable()
    if distributed:
      import jax  # pylint: disable=g-import-not-at-top
      jax.distributed.initialize(coordinator_address=fv.coordinator_address,
                                 num_processes=fv.num_processes, process_id=fv.process_id,
                                 heartbeat_timeout_seconds=fv.heartbeat_timeout_s,
                                 shutdown_timeout_seconds=fv.shutdown_timeout_s)
    result = loop.train_and_evaluate(config, fv.workdir)
    summary = {k: v for k, v in result.items() if k.startswith(('test/', 'val/'))}
    print(f'{result["status"]} at step {result["step"]}: ' +
          ', '.join(f'{k}={v:.3f}' if isinstance(v, float) else f'{k}={v}'
                    for k, v in sorted(summary.items())))

  return cli.run(work, fv.workdir)


def run():
  """The console script: logging set up, the exit code returned to the shell."""
  cli.setup_logging()
  sys.exit(main(as_command=True))


if __name__ == '__main__':
  interrupts.exit_on_signals('training', 'no step had been taken yet: rerun the same command '
                             'to start')
  run()
