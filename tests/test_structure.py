"""The rooms stay clear: the library stands on its own, and modules keep their private names."""

import ast
import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
LEAVES = ('errors', 'settings')  # modules that import nothing of ours


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


def test_errors_and_settings_are_leaves_and_the_config_schema_imports_only_errors():
  for name in LEAVES:
    ours = [m for m in _imports(REPO / 'vae' / f'{name}.py') if m.split('.')[0] == 'vae']
    assert not ours, (name, ours)
  ours = {m for m in _imports(REPO / 'vae' / 'config_lib.py') if m.split('.')[0] == 'vae'}
  assert ours <= {'vae', 'vae.errors'}, ours


def test_errors_are_defined_in_one_module():
  """Every exception class of the library is in vae/errors.py (modules keep their old names
  for them as aliases)."""
  defined = []
  for path in sorted((REPO / 'vae').rglob('*.py')):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.ClassDef) and any(
          isinstance(b, (ast.Name, ast.Attribute)) and
          (getattr(b, 'id', None) or getattr(b, 'attr', '')).endswith(('Error', 'Exception'))
          for b in node.bases):
        defined.append(f'{path.relative_to(REPO)}:{node.name}')
  assert all(d.startswith('vae/errors.py:') for d in defined), defined


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
  """vae/ keeps at its top only the public API, the config schema, its frozen specs, the
  errors and the environment; the rest lives in sub-packages, each with an `__init__` docstring, and tests/ mirrors them."""
  top = sorted(p.name for p in (REPO / 'vae').glob('*.py'))
  assert top == ['__init__.py', 'config_lib.py', 'errors.py', 'settings.py', 'specs.py'], top
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


# The library's layers, lowest first (docs/extending.md "Library layout" says the same): a module may
# import its own layer and the ones below, never one above. `vae/__init__.py` (the public
# API, `vae.load`) stands above them all.
LAYERS = (('errors', 'config_lib', 'specs', 'settings'), ('families',), ('data',), ('training',), ('evaluation',),
          ('sweeps',), ('reporting',), ('commands',), ('benchmarking',))


def _layer(name):
  return next(i for i, names in enumerate(LAYERS) if name in names)


def _vae_imports(path):
  """The vae rooms (`families`, `config_lib`, ...) a file imports, at any depth (imports
  inside functions included), with the line of each."""
  for node in ast.walk(ast.parse(path.read_text())):
    names = []
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module:
      names = ([f'vae.{a.name}' for a in node.names] if node.module == 'vae'
               else [node.module])
    for name in names:
      parts = name.split('.')
      if parts[0] == 'vae':
        yield (parts[1] if len(parts) > 1 else 'vae'), node.lineno


def test_imports_only_point_down_the_layers():
  offenders = []
  for path in sorted((REPO / 'vae').rglob('*.py')):
    rel = path.relative_to(REPO / 'vae')
    if rel == pathlib.Path('__init__.py'):
      continue  # the public API on top
    own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    for room, line in _vae_imports(path):
      if room == 'vae' or _layer(room) > _layer(own):
        offenders.append(f'vae/{rel}:{line} ({own}) imports {room}')
  assert not offenders, offenders


def test_the_layers_name_every_room_once():
  rooms = [name for names in LAYERS for name in names]
  assert len(rooms) == len(set(rooms))
  assert set(rooms) == set(SUBPACKAGES) | {'errors', 'config_lib', 'specs', 'settings'}


# Where a ConfigDict may exist: the schema (config_lib builds one from a config file) and the
# entry commands (flags). Everything below the entry takes frozen specs (vae/specs.py).
CONFIGDICT_MODULES = ('config_lib.py', 'commands/')


def test_below_the_entry_no_module_imports_ml_collections():
  offenders = []
  for path in sorted((REPO / 'vae').rglob('*.py')):
    rel = path.relative_to(REPO / 'vae').as_posix()
    if rel.startswith(CONFIGDICT_MODULES):
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
               [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
      offenders += [f'vae/{rel}:{node.lineno}' for n in names if n.startswith('ml_collections')]
  assert not offenders, offenders


def test_the_public_api_stays_at_the_top(monkeypatch):
  import vae  # pylint: disable=g-import-not-at-top
  from vae.evaluation import trained  # pylint: disable=g-import-not-at-top
  from vae.families import objectives  # pylint: disable=g-import-not-at-top
  assert vae.reparameterize is objectives.reparameterize
  monkeypatch.setattr(trained, 'load', lambda *args: args)
  assert vae.load('runs/x') == ('runs/x', 'best', False, ())


FAMILY_FIELDS = ('prior', 'posterior', 'arch', 'likelihood', 'type', 'stochastic_layers')
FAMILY_MODULES = ('priors', 'likelihoods', 'flows', 'models', 'exemplar', 'gated_conv',
                  'objective_families')


def _family_field(node):
  """Whether `node` reads a field that names a family: mc.prior, config.model.arch,
  model['posterior'], config.objective.name."""
  if isinstance(node, ast.Attribute):
    return node.attr in FAMILY_FIELDS or (
        node.attr == 'name' and isinstance(node.value, ast.Attribute)
        and node.value.attr == 'objective')
  if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
    return node.slice.value in FAMILY_FIELDS
  return False


def _names_a_family(node):
  strings = lambda n: isinstance(n, ast.Constant) and isinstance(n.value, (str, int))
  return strings(node) or (isinstance(node, (ast.Tuple, ast.List, ast.Set))
                           and all(strings(e) for e in node.elts))


def test_no_code_outside_the_families_branches_on_a_familys_name_or_class():
  """A family's name or class is the families' business: the rest of the library asks
  them (`models.cpu_chunk_loop`, `models.activation_floats`, `models.vmappable_fields`,
  the priors' and objectives' protocols) instead of comparing names."""
  offenders = []
  for path in sorted((REPO / 'vae').rglob('*.py')):
    if path.parent.name == 'families':
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Compare):
        sides = [node.left] + list(node.comparators)
        if any(_family_field(s) for s in sides) and any(_names_a_family(s) for s in sides):
          offenders.append(f'{path.relative_to(REPO)}:{node.lineno}')
      elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ('isinstance', 'issubclass') and len(node.args) == 2):
        classes = [n for n in ast.walk(node.args[1]) if isinstance(n, ast.Attribute)
                   and isinstance(n.value, ast.Name) and n.value.id in FAMILY_MODULES]
        if classes:
          offenders.append(f'{path.relative_to(REPO)}:{node.lineno}')
  assert not offenders, offenders


def test_the_family_branch_finder_finds_a_branch():
  """The check above is not vacuous: it flags the forms it looks for."""
  code = ("if mc.prior == 'vamp': pass\nif config.objective.name in ('a', 'b'): pass\n"
          "if model['arch'] != 'conv': pass\nif isinstance(p, priors.VampPrior): pass\n")
  tree = ast.parse(code)
  compares = [n for n in ast.walk(tree) if isinstance(n, ast.Compare)]
  assert all(any(_family_field(s) for s in [c.left] + c.comparators) for c in compares)
  assert len(compares) == 3


def test_the_exemplar_prior_lives_in_one_module():
  """Every line about exemplars is in vae/families/exemplar.py (`grep -ril exemplar vae/`)."""
  mentions = sorted(str(p.relative_to(REPO)) for p in (REPO / 'vae').rglob('*.py')
                    if 'exemplar' in p.read_text().lower())
  assert mentions == ['vae/families/exemplar.py'], mentions


MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 500


def test_no_function_over_80_lines_and_no_module_over_500():
  """Every def under vae/ (docstring and nested defs included: end_lineno - lineno + 1) fits
  in 80 lines and every module in 500: a piece that grows past them is split."""
  long_functions, long_modules = [], []
  for path in sorted((REPO / 'vae').rglob('*.py')):
    text = path.read_text()
    if len(text.splitlines()) > MAX_MODULE_LINES:
      long_modules.append(f'{path.relative_to(REPO)}: {len(text.splitlines())}')
    for node in ast.walk(ast.parse(text)):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long_functions.append(f'{path.relative_to(REPO)}:{node.lineno} {node.name} {length}')
  assert not long_functions, long_functions
  assert not long_modules, long_modules
