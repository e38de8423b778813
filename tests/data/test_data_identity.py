"""The data a run was trained on is checked on every resume, evaluation and load_split:
content hashes of each split as read (labels included) in data.json."""

import json

import numpy as np
import pytest

import vae
from tests.helpers import run_script, smoke_config
from vae.data import datasets
from vae.training import loop


def _npz(path, seed=0, flip_test=False):
  rng = np.random.default_rng(seed)
  arrays = {'x_train': rng.integers(0, 256, (448, 28, 28), dtype=np.uint8),
            'y_train': rng.integers(0, 10, 448), 'x_test': rng.integers(0, 256, (128, 28, 28),
                                                                        dtype=np.uint8),
            'y_test': rng.integers(0, 10, 128)}
  if flip_test:
    arrays['x_test'] = 255 - arrays['x_test']
  np.savez(path, **arrays)
  return path


def _config(path, **overrides):
  return smoke_config(**{'data.name': 'mine', 'data.source': 'npz', 'data.path': str(path),
                         'data.val_size': 64, 'train.num_epochs': 1.0, **overrides})


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp('identity')
  data = _npz(root / 'data.npz')
  loop.train_and_evaluate(_config(data), str(root / 'w'))
  return root, data


def test_data_json_records_a_content_hash_of_every_split_and_absolute_paths(trained):
  root, data = trained
  info = json.loads((root / 'w' / 'data.json').read_text())
  assert set(info['content_sha256']) == {'train', 'validation', 'test'}
  assert info['files'] == [str(data.resolve())]
  ds = datasets.load(_config(data).data)
  assert ds.info['content_sha256'] == info['content_sha256']


def test_a_resume_on_other_data_is_refused_before_anything_is_written(trained, tmp_path):
  root, _ = trained
  other = _npz(tmp_path / 'other.npz', flip_test=True)
  before = {p.name: p.read_bytes() for p in (root / 'w').iterdir() if p.is_file()}
  with pytest.raises(datasets.DataError, match=r'splits test differ.*data.accept_changed_data'):
    loop.train_and_evaluate(_config(other, **{'train.num_epochs': 2.0}), str(root / 'w'))
  after = {p.name: p.read_bytes() for p in (root / 'w').iterdir() if p.is_file()}
  assert after == before


def test_evaluation_and_load_split_refuse_other_data_unless_accepted(trained, tmp_path):
  root, data = trained
  backup = data.read_bytes()
  try:
    _npz(data, flip_test=True)  # the same path, other test images
    with pytest.raises(datasets.DataError, match='splits test differ'):
      vae.load(root / 'w').load_split('test')
    code, _, err = run_script('evaluate', '--workdir', root / 'w', '--num_samples', '5')
    assert code == 2 and 'splits test differ' in err and err.count('\n') == 1
    assert not (root / 'w' / 'eval.json').exists()
    images, _ = vae.load(root / 'w', accept_changed_data=True).load_split('test')
    assert images.shape[0] == 128
    code, _, err = run_script('evaluate', '--workdir', root / 'w', '--num_samples', '5',
                              '--accept_changed_data')
    assert code == 0, err
    report = json.loads((root / 'w' / 'eval.json').read_text())
    assert report['accepted_changed_data'] and report['environment']['versions']['jax']
  finally:
    data.write_bytes(backup)
    (root / 'w' / 'eval.json').unlink(missing_ok=True)


def test_an_accepted_change_on_resume_is_recorded(trained, tmp_path):
  root, data = trained
  work = tmp_path / 'w'
  loop.train_and_evaluate(_config(data), str(work))
  other = _npz(tmp_path / 'other.npz', flip_test=True)
  loop.train_and_evaluate(_config(other, **{'train.num_epochs': 2.0,
                                            'data.accept_changed_data': True}), str(work))
  sessions = json.loads((work / 'run.json').read_text())['sessions']
  assert 'splits test differ' in sessions[-1]['data_change']
  info = json.loads((work / 'data.json').read_text())
  assert info['files'] == [str(other.resolve())]  # what it reads from now on


def test_a_run_recorded_without_hashes_is_accepted_once_and_gets_them(trained, tmp_path, caplog):
  root, data = trained
  work = tmp_path / 'w'
  loop.train_and_evaluate(_config(data), str(work))
  info = json.loads((work / 'data.json').read_text())
  del info['content_sha256']
  (work / 'data.json').write_text(json.dumps(info))
  caplog.set_level('WARNING')
  loop.train_and_evaluate(_config(data, **{'train.num_epochs': 2.0}), str(work))
  assert any('recorded no content hash' in r.message for r in caplog.records)
  assert 'content_sha256' in json.loads((work / 'data.json').read_text())


def test_the_working_directory_is_not_searched_for_data():
  assert all(not str(d).startswith('data') for d in datasets.idx_search_dirs('fashion_mnist'))
