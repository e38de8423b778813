"""Tests of vae/data/datasets.py (host-side loading) and vae/data/input_pipeline.py (device-side batches)."""

import gzip
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from vae import config_lib
from vae.data import datasets, input_pipeline

FASHION_DIR = pathlib.Path('/usr/share/datasets/fashion-mnist')


def _idx_bytes(array):
  array = np.asarray(array, np.uint8)
  header = bytes([0, 0, 0x08, array.ndim]) + b''.join(
      int(d).to_bytes(4, 'big') for d in array.shape)
  return header + array.tobytes()


def _write_idx_dir(directory, n_train=30, n_test=12, gz=True, shape=(5, 4)):
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {
      'train-images-idx3-ubyte': rng.integers(0, 256, (n_train,) + shape),
      'train-labels-idx1-ubyte': rng.integers(0, 10, n_train),
      't10k-images-idx3-ubyte': rng.integers(0, 256, (n_test,) + shape),
      't10k-labels-idx1-ubyte': rng.integers(0, 10, n_test),
  }
  for name, arr in arrays.items():
    raw = _idx_bytes(arr)
    if gz:
      with gzip.open(directory / (name + '.gz'), 'wb') as f:
        f.write(raw)
    else:
      (directory / name).write_bytes(raw)
  return arrays


def _data_config(**overrides):
  dc = default.get_config().data
  dc = ml_collections.ConfigDict(dc.to_dict())
  for k, v in overrides.items():
    dc[k] = v
  return dc


@pytest.mark.parametrize('gz', [True, False])
def test_idx_directory_roundtrip(tmp_path, gz):
  arrays = _write_idx_dir(tmp_path / 'mnist', gz=gz)
  ds = datasets.load(_data_config(name='mnist', source='idx', path=str(tmp_path / 'mnist'),
                              val_size=10))
  assert ds.info['source'] == 'idx'
  assert len(ds.info['files']) == 4
  assert ds.image_shape == (5, 4, 1)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (20, 10, 12)
  np.testing.assert_array_equal(ds.test.images[..., 0], arrays['t10k-images-idx3-ubyte'])
  # Train and validation partition the original training set.
  together = np.concatenate([ds.train.images, ds.validation.images])[..., 0]
  original = arrays['train-images-idx3-ubyte']
  assert sorted(map(bytes, together)) == sorted(map(bytes, original.astype(np.uint8)))


def test_the_data_line_is_logged_once_per_dataset(tmp_path, caplog):
  """A sweep's members load the same data: its description is logged once per process."""
  _write_idx_dir(tmp_path / 'mnist')
  caplog.set_level('INFO')
  dc = _data_config(name='mnist', source='idx', path=str(tmp_path / 'mnist'), val_size=10)
  for _ in range(3):
    datasets.load(dc)
  assert sum(r.getMessage().startswith('data: ') for r in caplog.records) == 1


def test_vae_data_dir_environment_variable(tmp_path, monkeypatch):
  _write_idx_dir(tmp_path / 'kmnist')
  monkeypatch.setenv('VAE_DATA_DIR', str(tmp_path))
  ds = datasets.load(_data_config(name='kmnist', val_size=5))
  assert ds.info['source'] == 'idx' and str(tmp_path) in ds.info['files'][0]


def test_bad_magic_truncation_and_mismatch(tmp_path):
  bad = tmp_path / 'bad'
  bad.write_bytes(b'\x01\x02\x08\x03' + b'\x00' * 20)
  with pytest.raises(datasets.DataError, match='bad magic number'):
    datasets.read_idx(bad)
  good = _idx_bytes(np.zeros((4, 3, 3)))
  trunc = tmp_path / 'trunc'
  trunc.write_bytes(good[:-5])
  with pytest.raises(datasets.DataError, match='truncated or corrupt'):
    datasets.read_idx(trunc)
  broken_gz = tmp_path / 'broken.gz'
  broken_gz.write_bytes(gzip.compress(good)[:-10])
  with pytest.raises(datasets.DataError, match='cannot read IDX file'):
    datasets.read_idx(broken_gz)
  d = tmp_path / 'mnist'
  _write_idx_dir(d, gz=False)
  (d / 'train-labels-idx1-ubyte').write_bytes(_idx_bytes(np.zeros(7)))
  with pytest.raises(datasets.DataError, match='declares 30 images but the label file 7 labels'):
    datasets.load(_data_config(name='mnist', source='idx', path=str(d), val_size=2))


def test_idx_counts_are_compared_from_the_headers_before_any_data_is_inflated(tmp_path,
                                                                             monkeypatch):
  d = tmp_path / 'mnist'
  _write_idx_dir(d, gz=True)
  with gzip.open(d / 'train-labels-idx1-ubyte.gz', 'wb') as f:
    f.write(_idx_bytes(np.zeros(7)))

  def no_data(path):
    raise AssertionError(f'{path} was inflated before the counts were compared')

  monkeypatch.setattr(datasets, 'read_idx', no_data)
  with pytest.raises(datasets.DataError, match='declares 30 images but the label file 7 labels'):
    datasets.load(_data_config(name='mnist', source='idx', path=str(d), val_size=2))


def test_idx_sizes_are_checked_before_memory_is_taken(tmp_path):
  """A header declaring 2^31 x 2^31 x 4 bytes is refused from the header; a gzip file that
  inflates far past what its header declares is refused after one byte more, with memory
  bounded by the declared size; a padded plain file likewise."""
  huge = tmp_path / 'huge'
  huge.write_bytes(bytes([0, 0, 8, 3]) + b''.join(
      d.to_bytes(4, 'big') for d in (2 ** 31 - 1, 2 ** 31 - 1, 4)) + b'\0' * 64)
  with pytest.raises(datasets.DataError, match='declares .* bytes, more than any dataset'):
    datasets.read_idx(huge)
  bomb = tmp_path / 'bomb.gz'
  with gzip.open(bomb, 'wb') as f:
    f.write(_idx_bytes(np.zeros((10, 4, 4))))
    for _ in range(64):  # 64 MiB of zeros after the declared 160 bytes (~64 KiB on disk)
      f.write(b'\0' * (1 << 20))
  assert bomb.stat().st_size < 1 << 20
  with pytest.raises(datasets.DataError, match='holds more than 160 data bytes'):
    datasets.read_idx(bomb)
  padded = tmp_path / 'padded'
  padded.write_bytes(_idx_bytes(np.zeros((10, 4, 4))) + b'\0')
  with pytest.raises(datasets.DataError, match='holds more than 160'):
    datasets.read_idx(padded)


@pytest.mark.parametrize('field,value', [('synthetic_train_size', 0),
                                         ('synthetic_test_size', 0),
                                         ('synthetic_shape', (0, 28, 1))])
def test_empty_synthetic_sets_are_refused(field, value):
  with pytest.raises(config_lib.ConfigError, match=f'data.{field}'):
    datasets.check_config(_data_config(**{field: value}))


def test_missing_dataset_names_the_ways_to_get_it(tmp_path, monkeypatch):
  monkeypatch.setenv('VAE_DATA_DIR', str(tmp_path))
  with pytest.raises(datasets.DataError) as e:
    datasets.load(_data_config(name='kmnist', source='idx'))
  msg = str(e.value)
  assert '\n' not in msg
  for hint in ('VAE_DATA_DIR', 'TFDS', str(tmp_path), 'synthetic'):
    assert hint in msg
  assert 'apt-get install dataset-fashion-mnist' in datasets._not_found_message('fashion_mnist')


def _fifo_idx_dir(tmp_path):
  d = tmp_path / 'fifos'
  d.mkdir()
  for stem in datasets.IDX_FILES.values():
    os.mkfifo(d / stem)
  return d


@pytest.mark.parametrize('make_path,message', [
    (lambda t: (t / 'empty').mkdir() or t / 'empty', 'lacks'),
    (lambda t: pathlib.Path('/dev/zero'), 'is not a directory of IDX files'),
    (_fifo_idx_dir, 'lacks'),
    (lambda t: _write_idx_dir(t / 'half') and (t / 'half' / 't10k-images-idx3-ubyte.gz').unlink()
     or t / 'half', 'lacks t10k-images-idx3-ubyte'),
], ids=['empty directory', '/dev/zero', 'FIFOs', 'three of four files'])
def test_a_named_data_path_is_used_or_refused_never_substituted(tmp_path, monkeypatch,
                                                                make_path, message):
  """With data.path naming no dataset, the system's Fashion-MNIST (or $VAE_DATA_DIR's) is not
  read in its place: one line naming the path."""
  _write_idx_dir(tmp_path / 'env' / 'fashion_mnist')
  monkeypatch.setenv('VAE_DATA_DIR', str(tmp_path / 'env'))
  path = make_path(tmp_path)
  for source in ('auto', 'idx'):
    with pytest.raises(datasets.DataError, match=message) as e:
      datasets.load(_data_config(name='fashion_mnist', source=source, path=str(path)))
    assert '\n' not in str(e.value) and str(path) in str(e.value)


def test_npz_source(tmp_path):
  rng = np.random.default_rng(1)
  path = tmp_path / 'd.npz'
  np.savez(path, x_train=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8),
           y_train=rng.integers(0, 10, 40), x_test=rng.random((9, 8, 8, 3)),
           y_test=rng.integers(0, 10, 9))
  ds = datasets.load(_data_config(name='mine', source='npz', path=str(path), val_size=8))
  assert ds.image_shape == (8, 8, 3)
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (32, 8, 9)
  assert ds.test.images.dtype == np.uint8 and ds.test.images.max() > 200  # [0,1] rescaled
  np.savez(tmp_path / 'bad.npz', x_train=np.zeros((3, 4, 4)), y_train=np.zeros(3))
  with pytest.raises(datasets.DataError, match="lacks arrays"):
    datasets.load(_data_config(name='mine', source='npz', path=str(tmp_path / 'bad.npz')))


def test_tfds_path_with_mock_data():
  tfds = pytest.importorskip('tensorflow_datasets')
  with tfds.testing.mock_data(num_examples=24):
    ds = datasets.load(_data_config(name='mnist', source='tfds', val_size=4))
  assert ds.info['source'] == 'tfds' and ds.info['tfds_version']
  assert ds.image_shape == (28, 28, 1)
  assert ds.train.images.dtype == np.uint8
  assert (len(ds.train), len(ds.validation), len(ds.test)) == (20, 4, 24)


def test_synthetic_is_reproducible():
  a = datasets.load(_data_config(name='synthetic', synthetic_train_size=50, val_size=10))
  b = datasets.load(_data_config(name='synthetic', synthetic_train_size=50, val_size=10))
  np.testing.assert_array_equal(a.train.images, b.train.images)
  assert a.info['source'] == 'synthetic' and a.train.images.std() > 20


@pytest.mark.skipif(not FASHION_DIR.exists(),
                    reason='Debian package dataset-fashion-mnist not installed '
                           '(apt-get install dataset-fashion-mnist)')
def test_real_fashion_mnist():
  ds = datasets.load(_data_config(name='fashion_mnist', source='idx', val_size=0))
  assert ds.info['source'] == 'idx'
  assert ds.train.images.shape == (60000, 28, 28, 1)
  assert ds.test.images.shape == (10000, 28, 28, 1)
  assert set(np.unique(ds.train.labels)) == set(range(10))
  assert np.all(np.bincount(ds.train.labels) == 6000)
  # Known mean pixel intensity of Fashion-MNIST's training set: 72.94 / 255 = 0.2860.
  assert ds.train.images.mean() / 255.0 == pytest.approx(0.2860, abs=5e-4)
  full = datasets.load(_data_config(name='fashion_mnist', source='idx'))
  assert (len(full.train), len(full.validation)) == (50000, 10000)


# ----------------------------------------------------------------------------- device side


def test_dynamic_binarization_mean_and_keys():
  images = jnp.asarray(np.linspace(0, 255, 64).astype(np.uint8).reshape(1, 8, 8, 1))
  draws = jax.vmap(lambda k: input_pipeline.to_float(images, input_pipeline.BERNOULLI, k))(
      jax.random.split(jax.random.key(0), 4000))
  assert set(np.unique(draws)) <= {0.0, 1.0}
  np.testing.assert_allclose(draws.mean(0), images / 255.0, atol=0.03)
  # The extremes are exact: a black pixel is never 1 and a white one (255) always is.
  assert np.all(draws[:, 0, 0, 0, 0] == 0.0) and np.all(draws[:, 0, 7, 7, 0] == 1.0)
  a = input_pipeline.to_float(images, input_pipeline.BERNOULLI, jax.random.key(1))
  b = input_pipeline.to_float(images, input_pipeline.BERNOULLI, jax.random.key(2))
  assert not np.array_equal(a, b)


def test_16_bit_dynamic_binarization_has_the_intensity_as_its_probability():
  values = np.array([0, 1, 64, 128, 200, 254, 255], np.uint8)
  images = jnp.asarray(np.broadcast_to(values[:, None, None, None], (7, 200, 200, 1)))
  x = input_pipeline.to_float(images, input_pipeline.BERNOULLI16, jax.random.key(0))
  assert x.dtype == jnp.float32 and set(np.unique(np.asarray(x))) <= {0.0, 1.0}
  freq = np.asarray(x).reshape(7, -1).mean(axis=1)
  p = values / 255.0
  sigma = np.sqrt(p * (1 - p) / 40000)
  assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), (freq, p)
  assert freq[0] == 0.0 and freq[-1] == 1.0  # exact at the ends
  # Same key, same draw; another key, another; an odd pixel count works.
  again = input_pipeline.to_float(images, input_pipeline.BERNOULLI16, jax.random.key(0))
  np.testing.assert_array_equal(x, again)
  other = input_pipeline.to_float(images, input_pipeline.BERNOULLI16, jax.random.key(1))
  assert np.any(np.asarray(other) != np.asarray(x))
  u = input_pipeline.random_uint16_like(jax.random.key(2), jnp.zeros((3, 5, 5, 1), jnp.uint8))
  assert u.shape == (3, 5, 5, 1) and u.dtype == jnp.uint16
  big = np.asarray(input_pipeline.random_uint16_like(jax.random.key(3),
                                                     jnp.zeros((4, 100, 100, 1), jnp.uint8)))
  assert abs(big.mean() - 32767.5) < 5 * 18918 / np.sqrt(big.size)  # sd of U{0..65535}
  assert big.min() < 100 and big.max() > 65435
  # The protocol field picks the mode: 16 bits by default, 32 for older runs.
  c = default.get_config()
  assert input_pipeline.conversion_modes(c.data)[0] == input_pipeline.BERNOULLI16
  with c.unlocked():
    c.data.binarize_bits = 32
  assert input_pipeline.conversion_modes(c.data)[0] == input_pipeline.BERNOULLI


def test_static_and_eval_binarization_are_fixed():
  images = np.random.default_rng(0).integers(0, 256, (50, 6, 6, 1)).astype(np.uint8)
  a = input_pipeline.binarize_fixed(images, [0, 1])
  np.testing.assert_array_equal(a, input_pipeline.binarize_fixed(images, [0, 1]))
  assert set(np.unique(a)) <= {0, 255}
  assert not np.array_equal(a, input_pipeline.binarize_fixed(images, [0, 2]))
  ds = datasets.Dataset(datasets.Split(images, np.zeros(50, np.int32)),
                    datasets.Split(images[:10], np.zeros(10, np.int32)),
                    datasets.Split(images[10:20], np.zeros(10, np.int32)), {})
  for protocol in ('dynamic', 'static'):
    tr, va, te = input_pipeline.prepare_host_splits(ds, _data_config(binarize=protocol))
    assert set(np.unique(va)) <= {0, 255} and set(np.unique(te)) <= {0, 255}
    assert (set(np.unique(tr)) <= {0, 255}) == (protocol == 'static')
  tr, va, _ = input_pipeline.prepare_host_splits(ds, _data_config(binarize='none'))
  np.testing.assert_array_equal(va, images[:10])


def test_eval_padding_counts_every_example_once():
  images = np.arange(23, dtype=np.uint8).reshape(23, 1, 1, 1)
  batches, mask = input_pipeline.pad_to_batches(images, 5)
  assert batches.shape == (5, 5, 1, 1, 1) and mask.sum() == 23
  np.testing.assert_array_equal(np.sort(batches[mask].ravel()), np.arange(23))


def test_epoch_permutations_differ_by_epoch_and_reproduce():
  key = jax.random.PRNGKey(7)
  p0 = input_pipeline.epoch_permutation(key, 0, 100)
  p1 = input_pipeline.epoch_permutation(key, 1, 100)
  np.testing.assert_array_equal(p0, input_pipeline.epoch_permutation(key, 0, 100))
  assert not np.array_equal(p0, p1)
  assert sorted(np.asarray(p1).tolist()) == list(range(100))
  images = jnp.arange(100, dtype=jnp.uint8)[:, None, None, None]
  batch = input_pipeline.gather_batch(images, p0, 3, 10)
  np.testing.assert_array_equal(batch.ravel(), np.asarray(p0[30:40]))


def test_dequantization_stays_in_bin():
  images = jnp.full((4, 3, 3, 1), 17, jnp.uint8)
  x = input_pipeline.to_float(images, input_pipeline.DEQUANTIZE, jax.random.key(0))
  assert float(x.min()) >= 17 / 256 and float(x.max()) < 18 / 256


def test_get_data_script_finds_idx_files_where_the_library_looks(tmp_path):
  """scripts/get_data.sh (`make train`'s data step) asks the library whether Fashion-MNIST
  is already there: with the four IDX files under $VAE_DATA_DIR it says so and installs
  nothing."""
  import subprocess, sys  # pylint: disable=g-import-not-at-top,multiple-imports
  repo = pathlib.Path(__file__).resolve().parents[2]
  for stem in datasets.IDX_FILES.values():
    (tmp_path / f'{stem}.gz').write_bytes(b'')
  env = dict(os.environ, VAE_DATA_DIR=str(tmp_path), PATH=str(tmp_path))  # no apt-get
  out = subprocess.run(['/bin/bash', str(repo / 'scripts' / 'get_data.sh'), sys.executable],
                       cwd=repo, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == 'Fashion-MNIST IDX files found.', (
      out.stdout + out.stderr)
