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
  130  interrupted (Ctrl-C) before training installed its signal handler

Every error is one line on stderr, `error: <what> ; <the fix>`.
"""

import argparse
import errno
import logging
import pathlib
import sys

from vae import checkpointing, config_lib, data, step

BAD_INPUT = (config_lib.ConfigError, data.DataError, checkpointing.CheckpointError)
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_IO, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def setup_logging():
  """INFO lines from the library on stderr, absl's (orbax's) from WARNING up. For a command
  line's `__main__` only: it replaces the root logger's handlers."""
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s',
                      force=True)
  logging.getLogger('absl').setLevel(logging.WARNING)


def one_line(text):
  """The first non-empty line of `text`, stripped (a message for stderr)."""
  return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def fail(message, code):
  print(f'error: {one_line(message)}', file=sys.stderr)
  return code


def is_disk_full(error):
  return (isinstance(error, OSError) and error.errno == errno.ENOSPC) or (
      'No space left on device' in str(error))


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
  except step.NonFiniteError as e:
    return fail(e, EXIT_DIVERGED)
  except KeyboardInterrupt:
    return fail('interrupted before training started; nothing was changed', EXIT_INTERRUPTED)
  except Exception as e:  # pylint: disable=broad-except
    if is_disk_full(e):
      return fail(f'no space left on the device while writing {where or "the output"}; free '
                  'space or choose another directory, then rerun to resume', EXIT_IO)
    if isinstance(e, OSError):
      return fail(f'cannot write {e.filename or where} ({e.strerror or e}); check the '
                  'directory and its permissions', EXIT_IO)
    raise


def check_writable(path):
  """Raises ConfigError unless a file can be written at `path` (probed, then removed)."""
  path = pathlib.Path(path)
  probe = path.with_name(f'.{path.name}.write-probe')
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text('')
    probe.unlink()
  except OSError as e:
    raise config_lib.ConfigError(f'cannot write {path} ({e.strerror}); give a writable '
                                 'path') from None


class ArgumentParser(argparse.ArgumentParser):
  """argparse with a one-line error and exit code 2 (no usage block)."""

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


def non_negative_int(text):
  """argparse type: an integer >= 0."""
  return _int_at_least(text, 0)
