"""Pictures written during training: image grids of samples and reconstructions."""

import pathlib

import numpy as np


def tile(images, ncols=8, pad=1):
  """[N, H, W, C] floats in [0, 1] -> one [rows*(H+pad), cols*(W+pad), C] mosaic."""
  images = np.asarray(images, np.float32)
  n, h, w, c = images.shape
  ncols = min(ncols, n)
  nrows = -(-n // ncols)
  out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
  for i in range(n):
    r, col = divmod(i, ncols)
    out[pad + r * (h + pad): pad + r * (h + pad) + h,
        pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
  return out


def save_grid(images, path, ncols=8):
  """Writes images [N, H, W, C] in [0, 1] as one PNG grid."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = np.clip(tile(images, ncols), 0.0, 1.0)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  if grid.shape[-1] == 1:
    plt.imsave(path, grid[..., 0], cmap='gray', vmin=0.0, vmax=1.0)
  else:
    plt.imsave(path, grid)
  return path


def interleave(inputs, reconstructions):
  """Alternating rows of 8 inputs and their 8 reconstructions: [2N, H, W, C]."""
  inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
  rows = []
  for start in range(0, len(inputs), 8):
    rows += [inputs[start:start + 8], reconstructions[start:start + 8]]
  return np.concatenate(rows)
