"""Pictures of a trained model's latent space: python scripts/visualize.py --workdir DIR --what W --out FILE.

  manifold        an n x n grid of decoded latent points over prior quantiles
                  Phi^-1(0.05 .. 0.95) (Kingma & Welling, Figure 4); for more than
                  2 latents, the plane of the test posterior means' first two
                  principal axes
  scatter         test posterior means coloured by label (first two principal
                  axes above 2 latents), over the prior's 1-3 sigma circles
  interpolation   decoded paths between pairs of test images, linear and spherical
  traversal       one latent dimension at a time (the most informative ones by
                  KL) from -3 to 3 around a test image's posterior mean
  samples         prior samples at temperatures 0.5, 0.75, 1.0, 1.25
  reconstructions test images beside their reconstructions
  all             every figure above, OUT's stem + '_' + name + suffix
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np

import vae  # pylint: disable=g-import-not-at-top
from scripts.compare_ae_vae import project_2d
from vae import checkpointing, data as data_lib, objectives, plots

WHAT = ('manifold', 'scatter', 'interpolation', 'traversal', 'samples', 'reconstructions')


def _figure(plt, nrows=1, ncols=1, size=(7, 7)):
  return plt.subplots(nrows, ncols, figsize=size, squeeze=False)


def draw(what, model, images, labels, out, n=15, seed=0):
  """Draws one figure into `out`; returns what was decoded (for tests)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  key = jax.random.key(seed)
  x = model.to_float(images)
  mean, logvar = (np.asarray(a) for a in model.encode(x))
  d = model.latent_dim
  decoded = None
  if what == 'manifold':
    basis = None if d <= 2 else project_2d(mean)[1]
    z = plots.manifold_latents(d, n, basis)
    decoded = np.asarray(model.decode(z))
    fig, ax = _figure(plt, size=(9, 9))
    plane = 'z1, z2' if d <= 2 else 'the plane of the first two principal axes'
    plots.show_grid(ax[0, 0], decoded, n, f'decoded {n}x{n} grid over prior quantiles '
                    f'Phi^-1(0.05..0.95) in {plane}')
  elif what == 'scatter':
    xy, _ = project_2d(mean)
    fig, ax = _figure(plt, size=(8, 7))
    sc = ax[0, 0].scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10', s=4, alpha=0.6)
    for r in (1, 2, 3):
      ax[0, 0].add_patch(plt.Circle((0, 0), r, fill=False, ls='--', color='k', lw=0.8))
    ax[0, 0].set_aspect('equal')
    ax[0, 0].set_xlabel('z1' if d <= 2 else 'PC1')
    ax[0, 0].set_ylabel('z2' if d <= 2 else 'PC2')
    ax[0, 0].set_title('test posterior means over the prior (1-3 sigma)')
    fig.colorbar(sc, ax=ax[0, 0], label='label')
    decoded = xy
  elif what == 'interpolation':
    t = np.linspace(0, 1, 10)
    rows = []
    for i in range(4):
      a, b = mean[2 * i], mean[2 * i + 1]
      rows += [plots.lerp(a, b, t), plots.slerp(a, b, t)]
    decoded = np.asarray(model.decode(np.concatenate(rows)))
    fig, ax = _figure(plt, size=(10, 8))
    plots.show_grid(ax[0, 0], decoded, 10, 'pairs of test images: linear (odd rows) and '
                    'spherical (even rows) interpolation of posterior means')
  elif what == 'traversal':
    kl = np.mean(np.asarray(objectives.gaussian_kl_per_dim(mean, logvar)), axis=0)
    dims = np.argsort(-kl)[:min(d, 10)]
    values = np.linspace(-3, 3, 11)
    z = np.repeat(mean[:1], len(dims) * len(values), axis=0)
    for r, dim in enumerate(dims):
      z[r * len(values):(r + 1) * len(values), dim] = values
    decoded = np.asarray(model.decode(z))
    fig, ax = _figure(plt, size=(9, 0.9 * len(dims) + 1))
    plots.show_grid(ax[0, 0], decoded, len(values), 'one latent per row (most KL first: dims '
                    f'{dims.tolist()}), from -3 to 3 around a test image')
  elif what == 'samples':
    temps = (0.5, 0.75, 1.0, 1.25)
    decoded = np.concatenate([np.asarray(model.sample(jax.random.fold_in(key, 0), 16, t))
                              for t in temps])
    fig, ax = _figure(plt, size=(10, 3.2))
    plots.show_grid(ax[0, 0], decoded, 16, f'prior samples, one row per temperature {temps}')
  elif what == 'reconstructions':
    decoded = np.asarray(model.reconstruct(x[:32]))
    fig, ax = _figure(plt, size=(8, 8))
    plots.show_grid(ax[0, 0], plots.interleave(np.asarray(x[:32]), decoded), 8,
                    'test images (odd rows) and their reconstructions (even rows)')
  else:
    raise ValueError(f'unknown --what {what!r}; choose from {WHAT} or all')
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  plt.close(fig)
  return decoded


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--what', required=True, choices=WHAT + ('all',))
  parser.add_argument('--out', required=True)
  parser.add_argument('--checkpoint', default='best')
  parser.add_argument('--num_examples', type=int, default=5000)
  parser.add_argument('--grid', type=int, default=15)
  args = parser.parse_args(argv)
  try:
    model = vae.load(args.workdir, args.checkpoint)
    images, labels = model.load_split('test')
  except (checkpointing.CheckpointError, data_lib.DataError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  images, labels = images[:args.num_examples], labels[:args.num_examples]
  out = pathlib.Path(args.out)
  for what in (WHAT if args.what == 'all' else (args.what,)):
    path = out if args.what != 'all' else out.with_name(f'{out.stem}_{what}{out.suffix}')
    draw(what, model, images, labels, path, args.grid)
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
