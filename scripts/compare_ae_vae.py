"""AE vs VAE: one figure and the latent diagnostics side by side, in nats.

  python scripts/compare_ae_vae.py --vae runs/pair_vae --ae runs/pair_ae --out runs/ae_vs_vae.png

The figure has, for each model, prior samples z ~ N(0, I) decoded to images,
and the test-set posterior means (first two principal axes when D > 2) drawn
over the prior's 1, 2 and 3 sigma circles, coloured by label. The diagnostics
(vae/evaluation.py: latent_diagnostics) go to OUT with the suffix .json and
are printed as a table.
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np

import vae  # pylint: disable=g-import-not-at-top
from vae import checkpointing, evaluation, plots


def project_2d(points):
  """First two principal axes (orthonormal, so N(0, I) stays N(0, I) in the plane)."""
  if points.shape[1] <= 2:
    return points, np.eye(points.shape[1])
  centred = points - points.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  basis = vt[:2].T
  return points @ basis, basis


def analyse(model, images, labels, key, num_samples=64):
  x = model.to_float(images)
  mean, logvar = model.encode(x)
  diag = evaluation.latent_diagnostics(mean, logvar, key, deterministic=model.model.deterministic)
  # For the autoencoder the per-example objective's "elbo" is its reconstruction term.
  score = float(np.mean(np.asarray(model.elbo(x))))
  diag['test_recon' if model.model.deterministic else 'test_elbo'] = score
  samples = np.asarray(model.sample(jax.random.fold_in(key, 1), num_samples))
  return diag, np.asarray(mean), samples


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--vae', required=True, help='workdir of the VAE')
  parser.add_argument('--ae', required=True, help='workdir of the autoencoder')
  parser.add_argument('--out', required=True, help='figure path (.png)')
  parser.add_argument('--checkpoint', default='best')
  parser.add_argument('--max_examples', type=int, default=5000)
  parser.add_argument('--seed', type=int, default=0)
  args = parser.parse_args(argv)
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  results, panels = {}, []
  for name, workdir in (('VAE', args.vae), ('AE', args.ae)):
    try:
      model = vae.load(workdir, args.checkpoint)
    except checkpointing.CheckpointError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    expected = name == 'AE'
    if model.model.deterministic != expected:
      print(f'error: --{name.lower()} {workdir} holds a model.type={model.config.model.type} run',
            file=sys.stderr)
      return 2
    images, labels = model.load_split('test')
    images, labels = images[:args.max_examples], labels[:args.max_examples]
    diag, means, samples = analyse(model, images, labels, jax.random.key(args.seed))
    results[name] = diag
    panels.append((name, means, labels, samples))

  fig, axes = plt.subplots(2, 2, figsize=(11, 11))
  for col, (name, means, labels, samples) in enumerate(panels):
    axes[0, col].imshow(plots.tile(samples, 8)[..., 0] if samples.shape[-1] == 1 else
                        plots.tile(samples, 8), cmap='gray', vmin=0, vmax=1)
    axes[0, col].set_title(f'{name}: 64 prior samples z ~ N(0, I), decoded')
    axes[0, col].axis('off')
    xy, _ = project_2d(means)
    ax = axes[1, col]
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10', s=3, alpha=0.6)
    for r in (1, 2, 3):
      ax.add_patch(plt.Circle((0, 0), r, fill=False, ls='--', color='k', lw=0.8))
    lim = max(3.5, float(np.percentile(np.abs(xy), 99.5)))
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect('equal')
    axis = 'z' if means.shape[1] <= 2 else 'PC'
    ax.set_xlabel(f'{axis}1')
    ax.set_ylabel(f'{axis}2')
    ax.set_title(f'{name}: test posterior means over the prior (1-3 sigma)')
    fig.colorbar(sc, ax=ax, label='label', fraction=0.046)
  fig.tight_layout()
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  out.with_suffix('.json').write_text(json.dumps(results, indent=2) + '\n')
  keys = sorted(set(results['VAE']) | set(results['AE']))
  print(f'{"diagnostic":<28} {"VAE":>12} {"AE":>12}')
  for k in keys:
    fmt = lambda v: f'{v:12.4g}' if isinstance(v, float) else f'{"-":>12}'
    print(f'{k:<28} {fmt(results["VAE"].get(k))} {fmt(results["AE"].get(k))}')
  print(f'figure: {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
