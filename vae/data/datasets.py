"""Datasets on the host: finding, reading and splitting images into uint8 arrays.

`load(config.data)` is the one entry point. It returns a `Dataset` of uint8
images [N, H, W, C] with int32 labels for train, validation and test, plus an
`info` dict naming the source actually used (files or TFDS version) and the
data protocol. Device placement, binarization and batching live in
`vae/data/input_pipeline.py`.

Sources (`data.source`):
  idx        MNIST-format IDX files (gzipped or raw) in a directory: the
             config's `data.path`, then $VAE_DATA_DIR (and $VAE_DATA_DIR/<name>),
             then ~/.cache/vae/<name> and the Debian dataset packages'
             /usr/share/datasets/<name with dashes> (never the working directory's
             ./data: what a run reads must not depend on where it is started).
  tfds       TensorFlow Datasets by name, read through `tfds.data_source`
             (array_record, no TensorFlow needed); downloads when online.
  npz        a NumPy .npz file at `data.path` with x_train, y_train, x_test,
             y_test (Keras' layout; x_valid / y_valid optional).
  synthetic  class-structured random images generated from `data.seed`.
  auto       idx files if found, else TFDS.

`python scripts/data_info.py NAME` prints what a name resolves to.
"""

import dataclasses
import hashlib
import logging
import os
import pathlib

import numpy as np

from vae import errors
from vae.config_lib import check
# The IDX reader (vae/data/idx.py), re-exported: datasets.read_idx and the others are its.
from vae.data.idx import IDX_FILES, find_idx_dir, find_idx_file, idx_search_dirs  # noqa: F401
from vae.data.idx import read_idx, read_idx_header  # noqa: F401

IDX_NAMES = ('mnist', 'fashion_mnist', 'kmnist')  # datasets distributed as IDX files
CLASS_NAMES = {
    'fashion_mnist': ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt',
                      'Sneaker', 'Bag', 'Ankle boot'),
    'mnist': tuple(str(i) for i in range(10)),
    'binarized_mnist': tuple(str(i) for i in range(10)),
    'kmnist': ('o', 'ki', 'su', 'tsu', 'na', 'ha', 'ma', 'ya', 're', 'wo'),
    'cifar10': ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                'truck'),
}


def class_names(name, num_classes):
  """Names of a dataset's classes (its label ids as strings when unknown)."""
  names = CLASS_NAMES.get(name)
  return names if names and len(names) >= num_classes else tuple(
      str(i) for i in range(num_classes))
SOURCES = ('auto', 'idx', 'tfds', 'npz', 'synthetic')
BINARIZE = ('none', 'dynamic', 'static')


RESIDENCY = ('auto', 'device', 'host')


def check_config(dc):
  """Checks the fields of `config.data` (ConfigError naming the field)."""
  check(dc.source in SOURCES, f'data.source={dc.source!r} is unknown; choose one of {SOURCES}')
  check(dc.binarize_bits in (16, 32),
        f'data.binarize_bits={dc.binarize_bits!r}; choose 16 or 32')
  check(dc.binarize in BINARIZE,
        f'data.binarize={dc.binarize!r} is unknown; choose one of {BINARIZE}')
  check(dc.residency in RESIDENCY,
        f'data.residency={dc.residency!r} is unknown; choose one of {RESIDENCY}')
  check(dc.val_size >= 0, f'data.val_size={dc.val_size} must be >= 0')
  check(dc.max_train_examples >= 0,
        f'data.max_train_examples={dc.max_train_examples} must be >= 0 (0: all)')
  for name in ('synthetic_train_size', 'synthetic_test_size'):
    check(dc[name] >= 1, f'data.{name}={dc[name]} must be >= 1 (an empty set trains or '
          'evaluates nothing)')
  check(len(dc.synthetic_shape) == 3 and all(d >= 1 for d in dc.synthetic_shape),
        f'data.synthetic_shape={tuple(dc.synthetic_shape)} must be (H, W, C), each >= 1')


DataError = errors.DataError


@dataclasses.dataclass
class Split:
  images: np.ndarray  # [N, H, W, C] uint8
  labels: np.ndarray  # [N] int32

  def __len__(self):
    return len(self.images)


@dataclasses.dataclass
class Dataset:
  train: Split
  validation: Split
  test: Split
  info: dict

  @property
  def image_shape(self):
    return tuple(self.train.images.shape[1:])


# ----------------------------------------------------------------------------- IDX


def _check_pair(images, labels, what):
  if images.ndim != 3:
    raise DataError(f'{what} images have shape {images.shape}; expected [N, H, W]')
  if labels.ndim != 1:
    raise DataError(f'{what} labels have shape {labels.shape}; expected [N]')
  if len(images) != len(labels):
    raise DataError(f'{what}: {len(images)} images but {len(labels)} labels; the files '
                    'do not belong together')


def load_idx_dir(directory):
  """Reads the four IDX files of `directory`; returns (train, test, files)."""
  directory = pathlib.Path(directory)
  files, arrays = {}, {}
  for key, stem in IDX_FILES.items():
    f = find_idx_file(directory, stem)
    if f is None:
      raise DataError(f'{directory} lacks {stem}[.gz]; it needs all of '
                      f'{sorted(IDX_FILES.values())}')
    files[key] = str(f)
  # The counts the headers declare are compared before any data is inflated.
  for split in ('train', 'test'):
    images = read_idx_header(files[f'{split}_images'])
    labels = read_idx_header(files[f'{split}_labels'])
    count = lambda dims: dims[0] if dims else 0
    if count(images) != count(labels):
      raise DataError(f'{split}: the image file declares {count(images)} images but the '
                      f'label file {count(labels)} labels; the files do not belong together')
  for key, f in files.items():
    arrays[key] = read_idx(f)
  _check_pair(arrays['train_images'], arrays['train_labels'], 'train')
  _check_pair(arrays['test_images'], arrays['test_labels'], 'test')
  train = Split(arrays['train_images'][..., None], arrays['train_labels'].astype(np.int32))
  test = Split(arrays['test_images'][..., None], arrays['test_labels'].astype(np.int32))
  return train, test, files


# ----------------------------------------------------------------------------- NPZ


def load_npz(path):
  """Reads x_train/y_train/x_test/y_test (+ optional x_valid/y_valid) from an .npz."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f'npz file {path} not found; set data.path to an existing .npz')
  try:
    with np.load(path, allow_pickle=False) as z:
      if not hasattr(z, 'keys'):
        raise ValueError('a single array, not an archive of named arrays')
      missing = [k for k in ('x_train', 'y_train', 'x_test', 'y_test') if k not in z]
      if missing:
        raise DataError(f'{path} lacks arrays {missing}; it needs x_train, y_train, x_test, '
                        f'y_test (has {sorted(z.keys())})')
      out = {k: np.asarray(z[k]) for k in z.keys()}
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (not a zip, damaged, pickled ...)
    raise DataError(f'{path} is not a readable .npz archive ({type(e).__name__}: '
                    f'{str(e).splitlines()[0][:120] if str(e) else ""}); write it with '
                    'np.savez(x_train=..., y_train=..., x_test=..., y_test=...)') from None
  splits = {}
  for split in ('train', 'test', 'valid'):
    if f'x_{split}' not in out:
      continue
    images, labels = out[f'x_{split}'], out[f'y_{split}']
    if images.ndim == 3:
      images = images[..., None]
    if images.ndim != 4:
      raise DataError(f'{path}: x_{split} has shape {images.shape}; expected [N, H, W] '
                      'or [N, H, W, C]')
    if images.dtype != np.uint8:
      if not np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_:
        raise DataError(f'{path}: x_{split} has dtype {images.dtype}; expected numbers '
                        '(uint8 0..255 or floats in [0, 1] or [0, 255])')
      finite = np.isfinite(images)
      if not finite.all():
        raise DataError(f'{path}: x_{split} has {int(np.size(finite) - finite.sum())} NaN or '
                        'infinite pixel values; clean the data before training')
      if images.size and (images.min() < 0 or images.max() > 255):
        raise DataError(f'{path}: x_{split} values span [{images.min()}, {images.max()}]; '
                        'expected uint8 pixel values 0..255')
      if images.max() <= 1.0:
        images = images * 255.0
      images = np.round(images).astype(np.uint8)
    _check_pair(images[..., 0], labels.reshape(-1), split)
    splits[split] = Split(images, labels.reshape(-1).astype(np.int32))
  return splits


# ----------------------------------------------------------------------------- TFDS


def _read_data_source(source):
  n = len(source)
  images, labels = [], []
  step = 4096
  for start in range(0, n, step):
    keys = list(range(start, min(n, start + step)))
    try:
      records = source.__getitems__(keys)
    except TypeError:  # mocked sources only support single indexing
      records = [source[k] for k in keys]
    for r in records:
      images.append(np.asarray(r['image']))
      labels.append(np.asarray(r.get('label', -1)))
  return np.stack(images), np.asarray(labels, np.int32)


def load_tfds(name, data_dir='', download=True):
  """Reads a TFDS image dataset through array_record data sources, without TensorFlow.

  Returns:
    (splits dict of Split, version string).
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError('tensorflow-datasets is not installed; pip install -r requirements.txt') from e
  kwargs = {'data_dir': data_dir or None, 'download': download}
  splits = {}
  try:
    builder = tfds.builder(name, data_dir=data_dir or None)
    available = list(builder.info.splits.keys()) or ['train', 'test']
    version = str(builder.info.version)
    for split in ('train', 'validation', 'test'):
      if split == 'validation' and split not in available:
        continue
      images, labels = _read_data_source(tfds.data_source(name, split=split, **kwargs))
      if images.ndim == 3:
        images = images[..., None]
      if images.dtype != np.uint8:
        images = images.astype(np.uint8)
      if images.max() <= 1:  # binarized_mnist stores 0/1
        images = images * np.uint8(255)
      splits[split] = Split(images, labels)
  except DataError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(_not_found_message(name, f'TFDS failed ({type(e).__name__}: '
                                             f'{str(e).splitlines()[0][:200]})')) from e
  return splits, version


# ----------------------------------------------------------------------------- synthetic


def make_synthetic(seed, num_train, num_test, shape=(28, 28, 1), num_classes=10):
  """Class-structured images: each class is a smooth random blob pattern, each
  example a randomly shifted, scaled and noised copy. Learnable in seconds."""
  rng = np.random.default_rng(seed)
  h, w, c = shape
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  protos = []
  for _ in range(num_classes):
    img = np.zeros((h, w, c))
    for _ in range(3):
      cy, cx = rng.uniform(0.2, 0.8, 2)
      s = rng.uniform(0.05, 0.15)
      colour = rng.uniform(0.5, 1.0, c)
      img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))[..., None] * colour
    protos.append(np.clip(img, 0, 1))
  protos = np.stack(protos)

  def draw(n):
    labels = rng.integers(0, num_classes, n).astype(np.int32)
    imgs = protos[labels]
    shifts = rng.integers(-2, 3, (n, 2))
    imgs = np.stack([np.roll(im, tuple(s), axis=(0, 1)) for im, s in zip(imgs, shifts)])
    imgs = imgs * rng.uniform(0.7, 1.0, (n, 1, 1, 1)) + rng.normal(0, 0.05, imgs.shape)
    return Split(np.round(np.clip(imgs, 0, 1) * 255).astype(np.uint8), labels)

  return draw(num_train), draw(num_test)


# ----------------------------------------------------------------------------- entry


def _not_found_message(name, detail=''):
  looked = ', '.join(str(d) for d in idx_search_dirs(name))
  how = [f'set VAE_DATA_DIR or data.path to a directory with its IDX files '
         f'(looked in {looked})']
  if name == 'fashion_mnist':
    how.insert(0, 'apt-get install dataset-fashion-mnist')
  how.append(f'let TFDS download {name!r} on a machine with internet (data.source=tfds)')
  how.append('or use data.name=synthetic')
  return (f'dataset {name!r} not found offline{": " + detail if detail else ""}; to get '
          f'it: {"; ".join(how)}')


def check_splits(train, validation, test, name):
  """Every split has images of one shape; train and test are not empty."""
  for split, s in (('train', train), ('test', test)):
    if not len(s):
      raise DataError(f'dataset {name!r} has an empty {split} split; check the files or '
                      'data.val_size')
  shapes = {split: tuple(s.images.shape[1:]) for split, s in
            (('train', train), ('validation', validation), ('test', test)) if len(s)}
  if len(set(shapes.values())) > 1:
    raise DataError(f'dataset {name!r} has images of different shapes across splits '
                    f'({shapes}); every split needs the same [H, W, C]')


def carve_validation(train: Split, val_size: int, seed: int):
  """Splits `val_size` examples off `train` with a fixed permutation."""
  if val_size <= 0:
    return train, Split(train.images[:0], train.labels[:0])
  if val_size >= len(train):
    raise DataError(f'data.val_size={val_size} leaves no training data out of {len(train)} '
                    'examples; lower data.val_size')
  perm = np.random.default_rng(seed).permutation(len(train))
  val, rest = perm[:val_size], np.sort(perm[val_size:])
  val = np.sort(val)
  return (Split(train.images[rest], train.labels[rest]),
          Split(train.images[val], train.labels[val]))


def load(data_config) -> Dataset:
  """Loads train / validation / test images as the data config describes.

  Args:
    data_config: `config.data` (name, source, path, tfds_data_dir, download,
      val_size, split_seed, binarize, synthetic_* fields).

  Returns:
    A `Dataset`; `info` records name, source, files or TFDS version, shapes and
    the binarization protocol.

  Raises:
    DataError: the dataset cannot be found or read (one line naming the fix).
  """
  dc = data_config
  name, source = dc.name, dc.source
  if dc.path and not pathlib.Path(dc.path).is_absolute():  # recorded absolute (data.json)
    logging.info('data.path=%s is relative: read from %s', dc.path,
                 pathlib.Path(dc.path).expanduser().resolve())
  if dc.path and not pathlib.Path(dc.path).expanduser().exists():
    raise DataError(f'data.path={dc.path!r} does not exist; point it at an IDX directory or an '
                    '.npz file, or set data.path= (empty) to search the usual places')
  if source not in SOURCES:
    raise DataError(f'unknown data.source {source!r}; choose one of {SOURCES}')
  if name == 'synthetic' and source == 'auto':
    source = 'synthetic'
  info = {'name': name, 'binarize': dc.binarize, 'dequantize': bool(dc.dequantize)}
  validation = None
  if source == 'synthetic':
    train, test = make_synthetic(dc.seed, dc.synthetic_train_size, dc.synthetic_test_size,
                                 tuple(dc.synthetic_shape))
    info.update(source='synthetic', seed=dc.seed)
  elif source == 'npz':
    splits = load_npz(dc.path)
    train, test, validation = splits['train'], splits['test'], splits.get('valid')
    info.update(source='npz', files=[str(pathlib.Path(dc.path).resolve())])
  else:
    directory = None
    if dc.path and source in ('auto', 'idx'):
      # A named path is used or refused, never passed over for the usual places.
      directory = pathlib.Path(dc.path).expanduser()
      if not directory.is_dir():
        raise DataError(f'data.path={dc.path!r} is not a directory of IDX files; for an .npz '
                        'set data.source=npz, or set data.path= (empty) to search the usual '
                        'places')
    elif source in ('auto', 'idx'):
      directory = find_idx_dir(name)
    if directory is not None:
      train, test, files = load_idx_dir(directory)
      info.update(source='idx', files=sorted(str(pathlib.Path(f).resolve())
                                             for f in files.values()))
    elif source == 'idx':
      raise DataError(_not_found_message(name, 'no IDX files'))
    else:
      splits, version = load_tfds(name, dc.tfds_data_dir, dc.download)
      train, test, validation = splits['train'], splits['test'], splits.get('validation')
      info.update(source='tfds', tfds_version=version)
  if validation is None:
    train, validation = carve_validation(train, dc.val_size, dc.split_seed)
    info['validation'] = f'{dc.val_size} examples carved from train with seed {dc.split_seed}'
  else:
    info['validation'] = 'the source\'s own validation split'
  if dc.max_train_examples and dc.max_train_examples < len(train):
    train = Split(train.images[:dc.max_train_examples], train.labels[:dc.max_train_examples])
    info['max_train_examples'] = dc.max_train_examples
  check_splits(train, validation, test, name)
  info.update(shape=list(train.images.shape[1:]), num_train=len(train),
              num_validation=len(validation), num_test=len(test),
              content_sha256={'train': content_hash(train), 'validation': content_hash(validation),
                              'test': content_hash(test)})
  text = str(info)
  if text not in _DESCRIBED:  # once per process: a sweep's members share their data
    _DESCRIBED.add(text)
    logging.info('data: %s', text)
  return Dataset(train, validation, test, info)


_DESCRIBED = set()


def content_hash(split):
  """sha256 of a split as read: its images' shape and bytes, then its labels' (hex)."""
  h = hashlib.sha256()
  for a in (split.images, split.labels):
    a = np.ascontiguousarray(a)
    h.update(f'{a.dtype.str}{a.shape}'.encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _where(info):
  """Where a dataset came from, in a few words (files, TFDS version or generator)."""
  files = info.get('files')
  if files:
    return f'{info.get("source")} {os.path.commonpath(files) if len(files) > 1 else files[0]}'
  if info.get('tfds_version'):
    return f'tfds {info.get("name")} {info["tfds_version"]}'
  return f'{info.get("source")} {info.get("name")}'


def check_same_data(recorded, current, what, accept=False):
  """Compares the content hashes of a run's recorded data (its data.json) with the data read
  now. Returns None when they agree, or a warning line: the record predates the hashes
  (nothing to compare), or they differ and `accept` is set. Raises DataError, one line
  naming both datasets and the splits that differ, when they differ and `accept` is not set.
  """
  old, new = recorded.get('content_sha256'), current.get('content_sha256')
  if not old:
    return (f'{what} recorded no content hash of its data (an older run): the data read now '
            f'({_where(current)}) is taken as its own and recorded')
  changed = [s for s in ('train', 'validation', 'test') if old.get(s) != new.get(s)]
  if not changed:
    return None
  line = (f'{what} was trained on other data than {_where(current)} holds now (splits '
          f'{", ".join(changed)} differ from what it recorded, read from {_where(recorded)})')
  if accept:
    return line + '; accepted (data.accept_changed_data), the change recorded'
  raise DataError(line + '; point data.path or VAE_DATA_DIR at the data it was trained on, '
                  'or set data.accept_changed_data=True to accept the change')


def describe(dataset):
  """Lines describing a loaded dataset: its info, then each split's counts and statistics."""
  lines = [f'{k:>15}: {v}' for k, v in dataset.info.items()]
  for split in ('train', 'validation', 'test'):
    s = getattr(dataset, split)
    x = s.images.astype(np.float64) / 255.0
    lines.append(f'{split:>15}: {len(s):6d} images {s.images.shape[1:]} uint8, mean intensity '
                 f'{x.mean():.4f}, std {x.std():.4f}, labels '
                 f'{np.bincount(s.labels, minlength=1).tolist()}')
  return lines
