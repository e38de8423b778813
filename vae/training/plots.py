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


def save_grid(images, path, ncols=8, title=None, scale=3):
  """Writes images [N, H, W, C] in [0, 1] as one PNG grid, each pixel `scale` x `scale`
  screen pixels (a 28x28 image is 84 pixels wide), with `title` above it."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  grid = np.clip(tile(images, ncols), 0.0, 1.0)
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  dpi, top = 100, 0.35 if title else 0.0
  height, width = grid.shape[0] * scale / dpi, grid.shape[1] * scale / dpi
  fig = plt.figure(figsize=(width, height + top), dpi=dpi)
  ax = fig.add_axes((0, 0, 1, height / (height + top)))
  if grid.shape[-1] == 1:
    ax.imshow(grid[..., 0], cmap='gray', vmin=0.0, vmax=1.0, interpolation='nearest')
  else:
    ax.imshow(grid, interpolation='nearest')
  ax.axis('off')
  if title:
    fig.text(0.5, 1 - 0.5 * top / (height + top), title, ha='center', va='center', fontsize=9)
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


def interleave(inputs, reconstructions):
  """Alternating rows of 8 inputs and their 8 reconstructions: [2N, H, W, C]."""
  inputs, reconstructions = np.asarray(inputs), np.asarray(reconstructions)
  rows = []
  for start in range(0, len(inputs), 8):
    rows += [inputs[start:start + 8], reconstructions[start:start + 8]]
  return np.concatenate(rows)


# ----------------------------------------------------------------------------- latent-space pictures


def prior_quantile_grid(n, low=0.05, high=0.95):
  """n values z_i = Phi^-1(p_i), p evenly spaced in [low, high] (Kingma & Welling, Fig. 4)."""
  from jax.scipy.special import ndtri  # pylint: disable=g-import-not-at-top
  return np.asarray(ndtri(np.linspace(low, high, n)), np.float32)


def manifold_latents(latent_dim, n, basis=None):
  """Latent points of an n x n grid over prior quantiles: [n * n, D], row-major (z2 down).

  For D = 2 the grid is the latent space itself; for D > 2 it lies in the plane
  spanned by the two orthonormal columns of `basis` [D, 2] (default: the
  first two axes), through the origin.
  """
  q = prior_quantile_grid(n)
  z1, z2 = np.meshgrid(q, q[::-1])
  plane = np.stack([z1.ravel(), z2.ravel()], axis=1)               # [n*n, 2]
  if basis is None:
    basis = np.eye(latent_dim, 2, dtype=np.float32)
  return (plane @ np.asarray(basis, np.float32).T).astype(np.float32)


def slerp(a, b, t):
  """Spherical interpolation between latent vectors a and b at fractions t: [T, D]."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  t = np.asarray(t, np.float64)[:, None]
  cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
  omega = np.arccos(np.clip(cos, -1.0, 1.0))
  if omega < 1e-6:
    return ((1 - t) * a + t * b).astype(np.float32)
  return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(
      np.float32)


def lerp(a, b, t):
  t = np.asarray(t, np.float32)[:, None]
  return ((1 - t) * np.asarray(a) + t * np.asarray(b)).astype(np.float32)


def show_grid(ax, images, ncols, title):
  grid = tile(images, ncols)
  ax.imshow(grid[..., 0] if grid.shape[-1] == 1 else np.clip(grid, 0, 1), cmap='gray',
            vmin=0, vmax=1)
  ax.set_title(title, fontsize=9)
  ax.axis('off')
