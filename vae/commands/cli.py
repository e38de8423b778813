"""What the command lines share: one-line errors and documented exit codes.

Exit codes (train.py and every script):
  0  done (also: stopped by SIGTERM/SIGINT after saving; rerun to resume)
  1  the command ran but its result is a failure (a sweep member failed, a
     fault-injection comparison differed)
  2  bad input: a config key or value, an argument, a missing or damaged
     dataset, workdir file or checkpoint; nothing was changed
  3  training diverged (NaN/Inf): the step is named, no checkpoint written after it
  4  the disk is full or a write failed: the workdir is named; what was
     already written is intact
  5  another process of a multi-process run died (the lost process is named); rerun the
     same command on every host, with any number of processes, to resume
  143, 130  SIGTERM, SIGINT before training installed its own handling (while the libraries
     load), or during a command that has nothing to save (evaluation, sampling, figures):
     one line, at once (vae/training/interrupts.py); rerun the same command

Every error is one line on stderr, `error: <what> ; <the fix>`.
"""

import argparse
import errno
import logging
import os
import re
import sys
import threading

from vae import config_lib, errors

BAD_INPUT = errors.BAD_INPUT
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO, EXIT_LOST_PROCESS = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130
# What a collective or the coordination service says when a peer process is gone.
_PEER_FAILURE = ('Gloo', 'Connection closed by peer', 'Connection reset by peer',
                 'heartbeat timeout', 'stopped sending heartbeats', 'DEADLINE_EXCEEDED',
                 'coordination service', 'Barrier failed', 'UNAVAILABLE')


class _DiskFullTracebacks(logging.Filter):
  """Drops log records that carry a full disk's exception (orbax's writer threads log one
  traceback each); the command's one `error:` line reports it (`run`)."""

  def filter(self, record):
    return not (record.exc_info and is_disk_full(record.exc_info[1]))


def _quiet_shutdown_noise(default_hook):
  """sys.unraisablehook that drops what orbax's asynchronous runner raises into a closed
  event loop while it shuts down (after a failed write, say: a dozen bare tracebacks of
  `RuntimeError: Event loop is closed` that say nothing) and a full disk's errors (the one
  `error:` line reports it); anything else goes to `default_hook`."""
  def hook(args):
    closed_loop = (isinstance(args.exc_value, RuntimeError)
                   and str(args.exc_value) == 'Event loop is closed')
    if not (closed_loop or is_disk_full(args.exc_value)):
      default_hook(args)
  return hook


def _quiet_disk_full_in_threads(default_hook):
  def hook(args):
    if not is_disk_full(args.exc_value):  # else the main thread reports it in one line
      default_hook(args)
  return hook


def setup_logging():
  """INFO lines from the library on stderr, absl's (orbax's) from WARNING up; a full disk's
  tracebacks from other threads are left to the one error line. For a command line's
  `__main__` only: it replaces the root logger's handlers and the threads' excepthook."""
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                      force=True)
  for handler in logging.getLogger().handlers:
    handler.addFilter(_DiskFullTracebacks())
  logging.getLogger('absl').setLevel(logging.WARNING)
  logging.getLogger('jax').setLevel(logging.WARNING)
  threading.excepthook = _quiet_disk_full_in_threads(threading.__excepthook__)
  sys.unraisablehook = _quiet_shutdown_noise(sys.__unraisablehook__)


IMPORT_HELP = ('a module of yours whose import registers families (priors, likelihoods, '
               'objectives, ...) and declares their fields; repeatable. A run records the '
               'modules it was trained with; loading it needs them named again')


def take_imports(argv):
  """(modules, argv without them): the `--import MODULE` / `--import=MODULE` flags of a
  command line parsed by absl (train.py), which must import them before its config loads."""
  modules, rest, i = [], [], 0
  while i < len(argv):
    arg = argv[i]
    if arg == '--import' and i + 1 < len(argv):
      modules.append(argv[i + 1])
      i += 2
      continue
    if arg.startswith('--import='):
      modules.append(arg.split('=', 1)[1])
    else:
      rest.append(arg)
    i += 1
  return modules, rest


def one_line(text):
  """The first non-empty line of `text`, stripped (a message for stderr)."""
  return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def fail(message, code):
  print(f'error: {one_line(message)}', file=sys.stderr)
  return code


def is_disk_full(error):
  return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
      'No space left on device' in str(error))


def lost_process_message(error):
  """One line naming the lost process, when `error` is a failed collective of a
  multi-process run (None otherwise)."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_count() < 2 or not any(s in str(error) for s in _PEER_FAILURE):
    return None
  me, n = jax.process_index(), jax.process_count()
  peer = re.search(r'\[?(\d+\.\d+\.\d+\.\d+|[\w.-]+)\]?:(\d+)', str(error))
  task = re.search(r'[Tt]ask (\d+)', str(error))
  if task:
    lost = f'process {task.group(1)}'
  elif n == 2:
    lost = f'process {1 - me}'
  else:
    lost = f'a peer process ({peer.group(0)})' if peer else 'another process'
  return (f'lost {lost} of {n} (this is process {me}): {one_line(error)[:160]}; rerun the '
          'same command on every host (any number of processes) to resume from the last '
          'checkpoint')


def exit_now(code):
  """Exits at once: after a peer is lost, JAX's shutdown barrier at interpreter exit would
  wait for the dead process and then abort with a core-dump text."""
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def run(fn, where=''):
  """Calls fn() and turns the library's errors into (one line on stderr, exit code).

  Args:
    fn: the command's work; returns an exit code (or None for 0).
    where: the directory being written, named in an I/O error.
  """
  try:
    code = fn()
    return EXIT_OK if code is None else code
  except BAD_INPUT as e:
    return fail(e, EXIT_BAD_INPUT)
  except errors.NonFiniteError as e:
    return fail(e, EXIT_DIVERGED)
  except KeyboardInterrupt:
    return fail('interrupted before training started; nothing was changed', EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except
    lost = lost_process_message(e)
    if lost is not None:
      fail(lost, EXIT_LOST_PROCESS)
      exit_now(EXIT_LOST_PROCESS)
    if is_disk_full(e):
      return fail(f'no space left on the device while writing {where or "the output"}; free '
                  'space or choose another directory, then rerun to resume', EXIT_IO)
    if isinstance(e, OSError) and e.errno == errno.ENAMETOOLONG:  # bad input, not a failed write
      return fail(f'{e.filename or where}: a path too long for the file system; choose a '
                  'shorter --workdir (or --out)', EXIT_BAD_INPUT)
    if isinstance(e, OSError):
      return fail(f'cannot write {e.filename or where} ({e.strerror or e}); check the '
                  'directory and its permissions', EXIT_IO)
    raise


def exit_codes_help():
  """The exit-code table of this module's docstring (the epilog of every --help)."""
  table = __doc__.split('Exit codes (train.py and every script):\n', 1)[1]
  return 'exit codes:\n' + table.split('\n\n', 1)[0]


CONFIG_OVERRIDES_HELP = """config overrides:
  --config.a.b=value  set one field of the config (repeatable), e.g.
                      --config.model.latent_dim=20 --config.objective.beta=4
                      --config.model.hidden="(400,)"; an unknown field is refused, naming
                      the closest one. configs/x.py:arg hands `arg` to its get_config, e.g.
                      configs/fashion_mnist_gated.py:layers=2,prior=vamp. Every field with
                      its meaning: train.py --config configs/default.py --show_config"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Keeps the description's layout and appends each flag's default."""

  def _get_help_string(self, action):
    text = action.help or ''
    if ('%(default)' not in text and action.option_strings and action.nargs != 0
        and action.default not in (None, '', False, [], argparse.SUPPRESS)):
      text += ' (default: %(default)s)'
    return text


class ArgumentParser(argparse.ArgumentParser):
  """argparse for the scripts: every flag explained, with defaults and exit codes.

  `--help` prints the script's docstring, every flag with its meaning and
  default, and the exit codes (with `config_overrides=True` also the
  --config.a.b=value syntax). A flag without help text is a programming error,
  raised when the command line is parsed. An error is one line with exit code 2.
  """

  def __init__(self, *args, config_overrides=False, **kwargs):
    kwargs.setdefault('formatter_class', _HelpFormatter)
    epilog = ([CONFIG_OVERRIDES_HELP] if config_overrides else []) + [exit_codes_help()]
    kwargs.setdefault('epilog', '\n\n'.join(epilog))
    super().__init__(*args, **kwargs)
    self.add_argument('--import', action='append', default=[], dest='imports',
                      metavar='MODULE', help=IMPORT_HELP)

  def parse_known_args(self, args=None, namespace=None):
    undocumented = [a.dest for a in self._actions if not a.help]
    if undocumented:
      raise ValueError(f'flags without help text: {", ".join(undocumented)}')
    namespace, rest = super().parse_known_args(args, namespace)
    try:  # the user's families, before anything reads a config
      config_lib.import_plugins(namespace.imports)
    except config_lib.ConfigError as e:
      self.error(str(e))
    return namespace, rest

  def error(self, message):
    print(f'error: {one_line(message)} (see --help)', file=sys.stderr)
    sys.exit(EXIT_BAD_INPUT)


def _int_at_least(text, low):
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
  if value < low:
    raise argparse.ArgumentTypeError(f'{value} must be >= {low}')
  return value


def positive_int(text):
  """argparse type: an integer >= 1."""
  return _int_at_least(text, 1)


def int_between(low, high):
  """argparse type: an integer in [low, high] (a size beyond `high` would not fit)."""
  def parse(text):
    value = _int_at_least(text, low)
    if value > high:
      raise argparse.ArgumentTypeError(f'{value} must be <= {high}')
    return value
  return parse


def non_negative_int(text):
  """argparse type: an integer >= 0."""
  return _int_at_least(text, 0)
