"""The rooms stay clear: the library stands on its own, and modules keep their private names."""

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAVES = ('config_lib',)  # modules that import nothing of ours


def _imports(path):
  tree = ast.parse(path.read_text())
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module:
      yield node.module
      yield from (f'{node.module}.{a.name}' for a in node.names)


def test_library_never_imports_configs_or_scripts():
  for path in sorted((REPO / 'vae').rglob('*.py')):
    bad = [m for m in _imports(path) if m.split('.')[0] in ('configs', 'scripts')]
    assert not bad, (path.name, bad)


def test_config_schema_is_a_leaf():
  for name in LEAVES:
    ours = [m for m in _imports(REPO / 'vae' / f'{name}.py') if m.split('.')[0] == 'vae']
    assert not ours, (name, ours)


def test_configs_import_only_the_config_schema():
  """A config file is data plus arithmetic: it imports `vae.config_lib` (and other configs),
  never the training loop."""
  for path in sorted((REPO / 'configs').glob('*.py')):
    ours = [m for m in _imports(path) if m.split('.')[0] == 'vae']
    assert set(ours) <= {'vae', 'vae.config_lib'}, (path.name, ours)


def test_no_library_module_locates_the_checkouts_commands():
  """The library starts its commands as modules of the package (`python -m vae.commands.*`,
  console scripts), never by a path to train.py or scripts/ in a checkout."""
  for path in sorted((REPO / 'vae').rglob('*.py')):
    code = re.sub(r'(?s)""".*?"""', '', path.read_text())  # docstrings may name them
    code = '\n'.join(line.split('#')[0] for line in code.splitlines())
    assert not re.search(r"""['"](train\.py|scripts|sweep\.py)['"]""", code), path.name


def test_tests_do_not_import_scripts():
  for path in sorted((REPO / 'tests').rglob('*.py')):
    bad = [m for m in _imports(path) if m.split('.')[0] == 'scripts']
    assert not bad, (path.name, bad)


def test_no_module_uses_another_modules_private_names():
  """`module._name` across files: a name another module needs is public where it lives."""
  modules = {p.stem for p in (REPO / 'vae').rglob('*.py')}
  offenders = []
  for path in sorted(list((REPO / 'vae').rglob('*.py')) + list((REPO / 'scripts').glob('*.py'))
                     + [REPO / 'train.py']):
    for node in ast.walk(ast.parse(path.read_text())):
      if (isinstance(node, ast.Attribute) and node.attr.startswith('_')
          and not node.attr.startswith('__') and isinstance(node.value, ast.Name)
          and node.value.id in modules | {'data_lib', 'ge'}):
        offenders.append(f'{path.name}: {node.value.id}.{node.attr}')
  assert not offenders, offenders


def test_every_planted_bug_of_the_mutation_script_still_finds_its_line():
  """scripts/mutation_test.py plants each bug by exact text: a refactor that moves a line
  must update its table (docs/mutation.md), or the script would stop testing that code."""
  from tests import helpers  # pylint: disable=g-import-not-at-top
  code, out, err = helpers.run_script('mutation_test', '--list')
  assert code == 0, err
  assert len(out.splitlines()) >= 20
  assert 'select_on_test' in out and 'iwae_loss_general' in out


def test_only_the_settings_module_reads_the_environment():
  """vae/settings.py reads every environment variable; the rest of the library asks it."""
  for path in sorted((REPO / 'vae').rglob('*.py')):
    if path.name != 'settings.py':
      text = path.read_text()
      assert 'os.environ' not in text and 'getenv' not in text, path.name


SUBPACKAGES = ('benchmarking', 'commands', 'data', 'evaluation', 'families', 'reporting',
               'sweeps', 'training')


def test_the_library_is_in_sub_packages_that_say_what_they_hold():
  """vae/ keeps at its top only the public API, the config schema and the environment; the
  rest lives in sub-packages, each with an `__init__` docstring, and tests/ mirrors them."""
  top = sorted(p.name for p in (REPO / 'vae').glob('*.py'))
  assert top == ['__init__.py', 'config_lib.py', 'settings.py'], top
  packages = sorted(p.parent.name for p in (REPO / 'vae').glob('*/__init__.py'))
  assert packages == sorted(SUBPACKAGES), packages
  for name in packages:
    doc = ast.get_docstring(ast.parse((REPO / 'vae' / name / '__init__.py').read_text()))
    assert doc and len(doc) > 40, name
  mirrored = sorted(p.parent.name for p in (REPO / 'tests').glob('*/__init__.py'))
  assert set(mirrored) <= set(SUBPACKAGES), mirrored
  shadowed = [name for name in mirrored if (REPO / 'tests' / f'{name}.py').exists()]
  assert not shadowed, shadowed  # a helper module of that name would be hidden by the package
  pyproject = (REPO / 'pyproject.toml').read_text()
  assert all(f'"vae.{name}"' in pyproject for name in packages)  # installed, not only editable


def test_the_public_api_stays_at_the_top(monkeypatch):
  import vae  # pylint: disable=g-import-not-at-top
  from vae.evaluation import trained  # pylint: disable=g-import-not-at-top
  from vae.families import objectives  # pylint: disable=g-import-not-at-top
  assert vae.reparameterize is objectives.reparameterize
  monkeypatch.setattr(trained, 'load', lambda workdir, checkpoint: (workdir, checkpoint))
  assert vae.load('runs/x') == ('runs/x', 'best')
