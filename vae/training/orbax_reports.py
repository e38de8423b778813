"""orbax's "Exception ignored" reports, one warning line instead of ~220-line blocks.

orbax finishes some work on background threads and an event loop of its own; when a step
it reads is rotated away by a run still saving, or a reader closes, those report errors
through `sys.unraisablehook` as tracebacks that change no file and no result.
`quiet_orbax_reports` (installed when checkpointing is imported) turns the first into one
warning line and drops the rest; every other report goes to the hook that was there.
"""

import logging
import os
import sys

log = logging.getLogger('vae')


def _orbax_noise(unraisable):
  """Whether an "Exception ignored" report comes from orbax's background machinery: a
  callback handed to its event loop after the loop closed, or a cleanup inside orbax (a step
  rotated away while a reader held it). Such a report changes no file and no result."""
  exc = unraisable.exc_value
  if isinstance(exc, RuntimeError) and 'Event loop is closed' in str(exc):
    return True
  tb = unraisable.exc_traceback
  while tb is not None:
    if f'{os.sep}orbax{os.sep}' in tb.tb_frame.f_code.co_filename:
      return True
    tb = tb.tb_next
  return False


def quiet_orbax_reports():
  """Replaces orbax's "Exception ignored" blocks (about 220 lines each) with one warning
  line per process; every other unraisable report goes to the hook that was there."""
  previous = sys.unraisablehook
  if getattr(previous, 'vae_quiet_orbax', False):
    return
  seen = []

  def hook(unraisable):
    if not _orbax_noise(unraisable):
      previous(unraisable)
      return
    if not seen:
      log.warning('orbax reported an error in its background cleanup (%s: %s), e.g. a '
                  'checkpoint rotated away while it was read; no file or result is affected; '
                  'further such reports are not shown', type(unraisable.exc_value).__name__,
                  str(unraisable.exc_value).splitlines()[0][:120] if str(
                      unraisable.exc_value) else '')
    seen.append(1)

  hook.vae_quiet_orbax = True
  sys.unraisablehook = hook

