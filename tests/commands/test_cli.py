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


PLUGIN_FLAGS = ('--config.model.likelihood=laplace_pixels', '--config.data.binarize=none',
                '--config.model.prior=student_t', '--config.model.student_t_df=4.0',
                '--config.train.num_epochs=1')


def test_families_of_a_users_module_train_evaluate_visualize_sweep_and_load_with_import(
    tmp_path, monkeypatch):
  """`--import MODULE` on every command: a new likelihood and a new prior (with a declared
  field) defined in tests/user_families.py train, evaluate, visualize, sweep and load; the
  run records the module; without it a fresh process refuses in one line naming the family
  and the module (no code runs because a workdir names it)."""
  import json  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import vae  # pylint: disable=g-import-not-at-top
  from vae import config_lib  # pylint: disable=g-import-not-at-top
  from vae.sweeps import runner  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(config_lib, 'PLUGINS', [])  # this process's record, reset after
  monkeypatch.chdir(REPO)
  work = tmp_path / 'run'
  code, out, err = helpers.run_script('train', '--config', 'configs/default.py:smoke',
                                      '--workdir', work, '--import', 'tests.user_families',
                                      *PLUGIN_FLAGS)
  assert code == 0, err[-2000:]
  sessions = json.loads((work / 'run.json').read_text())['sessions']
  assert sessions[-1]['imports'] == ['tests.user_families']
  saved = json.loads((work / 'config.json').read_text())
  assert saved['model']['student_t_df'] == 4.0 and saved['model']['prior'] == 'student_t'
  # A fresh process that does not name the module: one line, exit 2, nothing imported.
  proc = subprocess.run([sys.executable, 'scripts/evaluate.py', '--workdir', str(work),
                         '--num_samples', '2', '--max_examples', '8'], cwd=REPO,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert len(proc.stderr.strip().splitlines()) == 1 and 'Traceback' not in proc.stderr
  assert 'student_t' in proc.stderr and '--import tests.user_families' in proc.stderr
  code, out, err = helpers.run_script('evaluate', '--workdir', work, '--num_samples', 2,
                                      '--max_examples', 8, '--import', 'tests.user_families')
  assert code == 0, err[-2000:]
  assert json.loads((work / 'eval.json').read_text())['environment']['imports'] == [
      'tests.user_families']
  code, out, err = helpers.run_script('visualize', '--workdir', work, '--what', 'samples',
                                      '--out', tmp_path / 'samples.png', '--import',
                                      'tests.user_families')
  assert code == 0, err[-2000:]
  assert (tmp_path / 'samples.png').stat().st_size > 1000
  model = vae.load(work, imports=['tests.user_families'])
  assert type(model.model.prior).__name__ == 'StudentTPrior' and model.model.prior.df == 4.0
  # A sweep: its members train in processes of their own, which import the module too.
  root = tmp_path / 'sweep'
  code, out, err = helpers.run_script('sweep', '--config', 'configs/default.py:smoke,sweep=tiny4',
                                      '--workdir', root, '--mode', 'processes',
                                      '--axis', 'model.latent_dim=3', '--axis',
                                      'objective.beta=0.5', '--import', 'tests.user_families',
                                      *PLUGIN_FLAGS)
  assert code == 0, (err + out)[-3000:]
  record = json.loads((root / 'sweep.json').read_text())
  assert record['imports'] == ['tests.user_families']
  assert [m['status'] for m in record['members'] if m.get('status')] == ['finished']
  script = runner.slurm_script('configs/default.py:smoke', root, 1, 'sequential', 'member')
  assert '--import=tests.user_families' in script
  code, _, err = helpers.run_script('train', '--config', 'configs/default.py:smoke',
                                    '--workdir', tmp_path / 'bad', '--import', 'no_such_module')
  assert code == 2 and err.strip().startswith('error: --import no_such_module: ')
