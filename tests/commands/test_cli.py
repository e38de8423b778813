"""The command lines explain themselves: --help of train.py and every script."""

import re

import pytest

from tests import helpers
from tests.helpers import REPO

SCRIPTS = sorted(p.stem for p in (REPO / 'scripts').glob('*.py') if p.stem != '__init__')


@pytest.mark.parametrize('name', ['train'] + SCRIPTS)
def test_help_exits_0_and_explains_every_flag(name):
  code, out, err = helpers.run_script(name, '--help')
  assert code == 0, err
  assert 'exit codes:' in out and '2  bad input' in out
  if name == 'train':
    flags = re.findall(r'^  --(?:\[no\])?(\w+): (\S.*)$', out, re.MULTILINE)
    assert {f for f, _ in flags} >= {'config', 'workdir', 'show_config', 'distributed'}
    assert '--config.a.b=value' in out
    for alias in ('-h', '--helpshort'):
      assert helpers.run_script(name, alias)[:2] == (0, out)
    return
  # argparse: every option has a meaning, on its own line or the next ones (the parser
  # refuses a flag without help before parsing; this checks that the scripts use it).
  options = out.split('options:', 1)[1].split('\n\n', 1)[0]
  entries = re.split(r'\n(?=  -)', options.strip('\n'))
  assert entries[0].lstrip().startswith('-h, --help'), name
  for entry in entries:
    first, *rest = entry.split('\n')
    assert re.search(r'\S\s{2,}\S', first.strip()) or rest, (name, first)


def test_a_flag_without_help_text_is_refused():
  from vae.commands import cli  # pylint: disable=g-import-not-at-top
  parser = cli.ArgumentParser(description='x')
  parser.add_argument('--documented', default=1, help='has a meaning')
  parser.add_argument('--bare', default=2)
  with pytest.raises(ValueError, match='bare'):
    parser.parse_args([])


@pytest.mark.parametrize('name', ['train', 'sweep'])
@pytest.mark.parametrize('twice', [
    ('--config.model.hidden=(8,)', '--config.model.hidden=(16,)'),
    ('--config.objective.beta=2.0', '--config.objective.beta=4.0')])
def test_a_field_given_twice_is_refused_naming_both_values(name, twice, tmp_path):
  """absl appends a repeated tuple field (hidden (8, 16)) and keeps the last scalar; a
  sweep kept the last: each silently trained something nobody asked for."""
  work = tmp_path / 'w'
  code, _, err = helpers.run_script(name, '--config', 'configs/default.py:smoke', '--workdir',
                                    work, *twice)
  field = twice[0].split('=')[0]
  first, second = (t.split('=', 1)[1] for t in twice)
  assert code == 2, err
  assert err.strip().count('\n') == 0, err  # one line
  assert f'{field} is given twice ({first} and {second})' in err
  assert not work.exists()  # refused before anything is written
