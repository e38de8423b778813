"""ELBO curves and rate-distortion of a sweep: python scripts/plot_curves.py ROOT --out FILE.

FILE: lower bound per datapoint (nats) against training examples seen, on a
log axis (the layout of Kingma & Welling 2013, Figure 2), train (left) and
test (right), one line per setting (colour by latent size) with a band over
seeds (min to max, line at the mean). FILE's stem + '_rate_distortion' + suffix:
final test KL (rate) against -reconstruction (distortion), one point per
member, joined across beta for each latent size.
"""

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=g-import-not-at-top

from scripts.summarize import members  # pylint: disable=g-import-not-at-top
from vae import metrics_io


def _series(events, key):
  pts = [(e['examples_seen'], e[key]) for e in events if key in e]
  return np.array(pts, dtype=float).reshape(-1, 2)


def plot(root, out):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  groups = {}
  for name, overrides, workdir in members(root):
    events = metrics_io.read_metrics(workdir / 'metrics.jsonl')
    if not events:
      continue
    setting = tuple((k.split('.')[-1], v) for k, v in overrides.items() if k != 'seed')
    groups.setdefault(setting, []).append((overrides, events))
  latents = sorted({dict(s).get('latent_dim') for s in groups}, key=lambda v: (v is None, v))
  cmap = plt.get_cmap('viridis')
  colour = {d: cmap(i / max(1, len(latents) - 1)) for i, d in enumerate(latents)}
  fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True)
  for setting, runs in sorted(groups.items(), key=lambda kv: str(kv[0])):
    label = ', '.join(f'{k}={v}' for k, v in setting) or 'run'
    c = colour[dict(setting).get('latent_dim')]
    for ax, key in ((axes[0], 'train/elbo'), (axes[1], 'test/elbo')):
      curves = [_series(ev, key) for _, ev in runs]
      curves = [cv for cv in curves if len(cv)]
      if not curves:
        continue
      n = min(len(cv) for cv in curves)
      xs = curves[0][:n, 0]
      ys = np.stack([cv[:n, 1] for cv in curves])
      ax.plot(xs, ys.mean(0), color=c, label=f'{label} ({len(curves)} seed'
              f'{"s" if len(curves) > 1 else ""})', lw=1.4,
              ls='-' if dict(setting).get('beta', 1.0) in (1, 1.0) else '--')
      if len(curves) > 1:
        ax.fill_between(xs, ys.min(0), ys.max(0), color=c, alpha=0.2, lw=0)
  for ax, title in ((axes[0], 'train (mean over the steps since the last event)'),
                    (axes[1], 'test (fixed binarization)')):
    ax.set_xscale('log')
    ax.set_xlabel('training examples seen')
    ax.set_title(title)
    ax.grid(alpha=0.3, which='both')
  axes[0].set_ylabel('ELBO, lower bound on log p(x) (nats per example)')
  axes[1].legend(fontsize=7, loc='lower right')
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(6.5, 5))
  by_latent = {}
  for setting, runs in groups.items():
    s = dict(setting)
    for _, events in runs:
      ev = [e for e in events if 'test/kl' in e]
      if ev:
        by_latent.setdefault(s.get('latent_dim'), []).append(
            (s.get('beta', 1.0), ev[-1]['test/kl'], -ev[-1]['test/recon']))
  for d, pts in sorted(by_latent.items(), key=lambda kv: (kv[0] is None, kv[0])):
    pts.sort()
    rate, dist = [p[1] for p in pts], [p[2] for p in pts]
    ax.plot(rate, dist, 'o-', color=colour[d], label=f'latent_dim={d}')
    for beta, r, dd in pts:
      ax.annotate(f'beta={beta}', (r, dd), fontsize=7, xytext=(3, 3), textcoords='offset points')
  ax.set_xlabel('rate: test KL(q(z|x) || p(z)) (nats per example)')
  ax.set_ylabel('distortion: -E_q log p(x|z) (nats per example)')
  ax.set_title('rate-distortion across beta (final test values)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  rd = out.with_name(out.stem + '_rate_distortion' + out.suffix)
  fig.savefig(rd, dpi=110)
  plt.close(fig)
  return out, rd


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('root')
  parser.add_argument('--out', required=True)
  args = parser.parse_args(argv)
  for path in plot(args.root, args.out):
    print(path)
  return 0


if __name__ == '__main__':
  sys.exit(main())
