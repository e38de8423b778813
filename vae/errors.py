"""The library's errors, in one place: what each means and which exit code the commands give
it (vae/commands/cli.py). Modules raise them under the names they always had
(`config_lib.ConfigError`, `datasets.DataError`, `checkpointing.CheckpointError`,
`step.NonFiniteError`): those are these classes.
"""


class ConfigError(ValueError):
  """An invalid config value; the message names the field and the fix. Exit 2."""


class DataError(ValueError):
  """A dataset that cannot be found or read; the message says how to fix it. Exit 2."""


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used for this run; the message says why and what to do.
  Exit 2."""


class ChecksumError(ValueError):
  """A restored array differs from what was saved (a damaged file): the step is set aside."""


class NonFiniteError(FloatingPointError):
  """The loss or gradient became NaN or Inf; the message names the step. Exit 3."""


class MembersDiverged(Exception):
  """Some (not all) training members of a vmapped group went NaN/Inf at `step`: they are
  frozen and the others go on (never reaches a command)."""

  def __init__(self, members, step):
    super().__init__(f'members {members} diverged at step {step}')
    self.members, self.step = members, step


BAD_INPUT = (ConfigError, DataError, CheckpointError)
