"""IDX files (MNIST's format, gzipped or raw): the header checked before anything is
inflated, the arrays read whole, and the directories searched for a dataset's four files."""

import gzip
import math
import pathlib
import zlib
from typing import Optional

import numpy as np

from vae import errors
from vae import settings

DataError = errors.DataError

IDX_FILES = {
    'train_images': 'train-images-idx3-ubyte',
    'train_labels': 'train-labels-idx1-ubyte',
    'test_images': 't10k-images-idx3-ubyte',
    'test_labels': 't10k-labels-idx1-ubyte',
}
MAX_IDX_BYTES = 2 ** 34  # 16 GiB: far above any image set this reads; a larger header is damage


def _read_idx_header(f, path):
  """The dims of an open IDX file's header (the file positioned at its data)."""
  magic = f.read(4)
  if len(magic) < 4 or magic[0] != 0 or magic[1] != 0:
    raise DataError(f'{path} is not an IDX file (bad magic number '
                    f'{magic.hex() or "<empty>"}); expected 0x0000 08 NN')
  if magic[2] != 0x08:
    raise DataError(f'{path}: IDX type code 0x{magic[2]:02x} unsupported; only unsigned '
                    'bytes (0x08) are image data')
  ndim = magic[3]
  head = f.read(4 * ndim)
  if len(head) < 4 * ndim:
    raise DataError(f'{path} is truncated inside its header')
  return tuple(int.from_bytes(head[4 * i:4 * i + 4], 'big') for i in range(ndim))


def _open_idx(path):
  return (gzip.open if pathlib.Path(path).suffix == '.gz' else open)(path, 'rb')


def read_idx_header(path):
  """The dims an IDX file's header declares (a gzip file: only its first bytes inflated)."""
  try:
    with _open_idx(path) as f:
      return _read_idx_header(f, path)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot read IDX file {path}: {e}; re-download or reinstall it') from e


def read_idx(path) -> np.ndarray:
  """Reads one IDX file (MNIST's format), gzipped if the name ends in .gz.

  Memory stays bounded by what the header declares: the header is read first, a declared
  size above MAX_IDX_BYTES is refused, and no more than one byte past the declared data is
  ever inflated (a gzip file that inflates to gigabytes is refused after that byte).

  Raises:
    DataError: bad magic number, unsupported type, an impossible header, or a size that
      does not match the header (truncated or padded file).
  """
  path = pathlib.Path(path)
  try:
    with _open_idx(path) as f:
      dims = _read_idx_header(f, path)
      expected = math.prod(dims) if dims else 0
      if expected > MAX_IDX_BYTES:
        raise DataError(f'{path}: its header {dims} declares {expected:,} bytes, more than '
                        f'any dataset this reads ({MAX_IDX_BYTES:,}); the file is corrupt: '
                        're-download it')
      raw = f.read(expected + 1)
  except (OSError, EOFError, zlib.error) as e:
    raise DataError(f'cannot read IDX file {path}: {e}; re-download or reinstall it') from e
  if len(raw) != expected:
    held = f'more than {expected}' if len(raw) > expected else str(len(raw))
    raise DataError(f'{path} holds {held} data bytes but its header {dims} says {expected}: '
                    'the file is truncated or corrupt; re-download it')
  return np.frombuffer(raw, dtype=np.uint8).reshape(dims)


def find_idx_file(directory: pathlib.Path, stem: str) -> Optional[pathlib.Path]:
  for name in (stem + '.gz', stem, stem.replace('-idx', '.idx')):
    if (directory / name).is_file():
      return directory / name
  return None


def idx_search_dirs(name, path=''):
  """The directories searched for IDX files, in order."""
  dirs = []
  if path:
    dirs.append(pathlib.Path(path).expanduser())
  env = settings.data_dir()
  if env:
    dirs += [pathlib.Path(env) / name, pathlib.Path(env)]
  dirs += [pathlib.Path.home() / '.cache' / 'vae' / name,
           pathlib.Path('/usr/share/datasets') / name.replace('_', '-'),
           pathlib.Path('/usr/share/datasets') / name]
  return dirs


def find_idx_dir(name, path=''):
  """The first directory holding all four IDX files, or None."""
  for d in idx_search_dirs(name, path):
    if all(find_idx_file(d, stem) for stem in IDX_FILES.values()):
      return d
  return None
