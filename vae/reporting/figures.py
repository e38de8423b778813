"""Figures: a trained model's latent space, sweep curves, AE vs VAE, gradient estimators.

Every function draws with matplotlib (Agg) into a PNG file and returns what a
caller or test needs to check it. The latent-space pictures (`draw`, one of
`WHAT`):

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
"""

import logging
import math
import pathlib

import jax
import numpy as np

from vae.data import datasets
from vae.evaluation import latent_space
from vae.families import objectives
from vae.training import plots
from vae.reporting import summaries
from vae.sweeps import record
from vae.training import metrics_io

log = logging.getLogger('vae')


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


WHAT = ('manifold', 'scatter', 'interpolation', 'traversal', 'samples', 'reconstructions')


def _save(plt, fig, out, dpi=110):
  """Lays out, writes and closes a figure; returns the path."""
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=dpi)
  plt.close(fig)
  return out


def _figure(plt, nrows=1, ncols=1, size=(7, 7)):
  return plt.subplots(nrows, ncols, figsize=size, squeeze=False)


def _draw_manifold(plt, model, x, mean, logvar, labels, key, n):
  del x, logvar, labels, key
  d = model.latent_dim
  basis = None if d <= 2 else latent_space.project_2d(mean)[1]
  decoded = np.asarray(model.decode(plots.manifold_latents(d, n, basis)))
  fig, ax = _figure(plt, size=(9, 9.4))
  plane = 'z1, z2' if d <= 2 else 'the plane of the first two principal axes'
  plots.show_grid(ax[0, 0], decoded, n, f'decoded {n}x{n} grid over prior quantiles '
                  f'Phi^-1(0.05..0.95) in {plane}')
  # Axis values: the latent coordinate at each cell's centre (z2 grows upwards).
  h, w = model.image_shape[:2]
  q = plots.prior_quantile_grid(n)
  every = max(1, n // 8)
  ax[0, 0].axis('on')
  ax[0, 0].set_xticks([1 + j * (w + 1) + w / 2 for j in range(0, n, every)],
                      [f'{q[j]:.2f}' for j in range(0, n, every)], fontsize=7)
  ax[0, 0].set_yticks([1 + i * (h + 1) + h / 2 for i in range(0, n, every)],
                      [f'{q[::-1][i]:.2f}' for i in range(0, n, every)], fontsize=7)
  ax[0, 0].set_xlabel('z1' if d <= 2 else 'coordinate along PC1 (prior sd units)')
  ax[0, 0].set_ylabel('z2' if d <= 2 else 'coordinate along PC2 (prior sd units)')
  return fig, decoded


def _draw_scatter(plt, model, x, mean, logvar, labels, key, n):
  del x, logvar, key, n
  d = model.latent_dim
  xy, _ = latent_space.project_2d(mean)
  fig, ax = _figure(plt, size=(8, 7))
  num_classes = int(np.max(labels)) + 1 if len(labels) else 1
  names = datasets.class_names(model.config.data.name, num_classes)
  sc = ax[0, 0].scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10', s=4, alpha=0.6,
                        vmin=-0.5, vmax=num_classes - 0.5)
  for r in (1, 2, 3):
    ax[0, 0].add_patch(plt.Circle((0, 0), r, fill=False, ls='--', color='k', lw=0.8))
  ax[0, 0].set_aspect('equal')
  ax[0, 0].set_xlabel('z1' if d <= 2 else 'PC1')
  ax[0, 0].set_ylabel('z2' if d <= 2 else 'PC2')
  ax[0, 0].set_title('test posterior means over the prior (1-3 sigma)')
  bar = fig.colorbar(sc, ax=ax[0, 0], ticks=range(num_classes))
  bar.ax.set_yticklabels(names[:num_classes], fontsize=8)
  bar.set_label('class')
  return fig, xy


def _draw_interpolation(plt, model, x, mean, logvar, labels, key, n):
  del x, logvar, labels, key, n
  t = np.linspace(0, 1, 10)
  rows = []
  for i in range(4):
    a, b = mean[2 * i], mean[2 * i + 1]
    rows += [plots.lerp(a, b, t), plots.slerp(a, b, t)]
  decoded = np.asarray(model.decode(np.concatenate(rows)))
  fig, ax = _figure(plt, size=(10, 8))
  plots.show_grid(ax[0, 0], decoded, 10, 'pairs of test images: linear (odd rows) and '
                  'spherical (even rows) interpolation of posterior means')
  return fig, decoded


def _draw_traversal(plt, model, x, mean, logvar, labels, key, n):
  del x, labels, key, n
  if model.model.analytic_kl:
    score, rank = np.mean(np.asarray(objectives.gaussian_kl_per_dim(mean, logvar)), 0), 'KL'
  else:  # no per-dimension KL: rank by how much the posterior mean moves over the data
    score, rank = np.var(mean, axis=0), 'variance of the posterior mean'
  dims = np.argsort(-score)[:min(model.latent_dim, 10)]
  values = np.linspace(-3, 3, 11)
  z = np.repeat(mean[:1], len(dims) * len(values), axis=0)
  for r, dim in enumerate(dims):
    z[r * len(values):(r + 1) * len(values), dim] = values
  decoded = np.asarray(model.decode(z))
  fig, ax = _figure(plt, size=(9, 0.9 * len(dims) + 1))
  plots.show_grid(ax[0, 0], decoded, len(values), f'one latent per row (most {rank} first: dims '
                  f'{dims.tolist()}), from -3 to 3 around a test image')
  return fig, decoded


def _draw_samples(plt, model, x, mean, logvar, labels, key, n):
  del x, mean, logvar, labels, n
  temps = (0.5, 0.75, 1.0, 1.25)
  decoded = np.concatenate([np.asarray(model.sample(jax.random.fold_in(key, 0), 16, t))
                            for t in temps])
  fig, ax = _figure(plt, size=(10, 3.2))
  plots.show_grid(ax[0, 0], decoded, 16, f'prior samples, one row per temperature {temps}')
  return fig, decoded


def _draw_reconstructions(plt, model, x, mean, logvar, labels, key, n):
  del mean, logvar, labels, key, n
  decoded = np.asarray(model.reconstruct(x[:32]))
  fig, ax = _figure(plt, size=(8, 8))
  plots.show_grid(ax[0, 0], plots.interleave(np.asarray(x[:32]), decoded), 8,
                  'test images (odd rows) and their reconstructions (even rows)')
  return fig, decoded


_DRAWERS = {'manifold': _draw_manifold, 'scatter': _draw_scatter,
            'interpolation': _draw_interpolation, 'traversal': _draw_traversal,
            'samples': _draw_samples, 'reconstructions': _draw_reconstructions}


def draw(what, model, images, labels, out, n=15, seed=0, keep_figure=False):
  """Draws one figure into `out`; returns what was decoded (and, with `keep_figure`, the
  open matplotlib Figure, for a caller that inspects or extends it)."""
  if what not in _DRAWERS:
    raise ValueError(f'unknown --what {what!r}; choose from {WHAT} or all')
  plt = _pyplot()
  x = model.to_float(images)
  mean, logvar = (np.asarray(a) for a in model.encode(x))
  fig, decoded = _DRAWERS[what](plt, model, x, mean, logvar, labels, jax.random.key(seed), n)
  fig.tight_layout()
  out = pathlib.Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(out, dpi=100)
  if keep_figure:
    return decoded, fig
  plt.close(fig)
  return decoded


def _series(events, key):
  """[(examples seen, value)] of `key`; the train metrics as one mean per epoch (each train
  event is the mean over its log window, which zigzags where an epoch's order restarts)."""
  pts = [(e['examples_seen'], e[key], e.get('epoch', 0.0)) for e in events if key in e]
  if not key.startswith('train/'):
    return np.array([p[:2] for p in pts], dtype=float).reshape(-1, 2)
  epochs = {}
  for x, y, epoch in pts:
    epochs.setdefault(math.ceil(epoch - 1e-9), []).append((x, y))
  return np.array([(max(x for x, _ in v), float(np.mean([y for _, y in v])))
                   for _, v in sorted(epochs.items())], dtype=float).reshape(-1, 2)


LINE_STYLES = ('-', '--', ':', '-.', (0, (5, 1, 1, 1)), (0, (1, 3)))
MARKERS = ('o', 's', '^', 'D', 'v', 'P', 'X', '*')


def focus_ylim(bands, skip_fraction=0.01, pad=0.05):
  """(low, high) y-limits that hold every curve and band from `skip_fraction` of the largest
  x on (a log x axis: the first 1 % of training, whose ELBOs are hundreds of nats lower,
  would otherwise squash the rest into a flat line), padded by `pad` of the range.

  Args:
    bands: [(xs, low ys, high ys)], one per curve (a mean line is a band with low = high).
  """
  x_max = max((float(np.max(xs)) for xs, _, _ in bands if len(xs)), default=None)
  if x_max is None:
    return None
  keep = [(lo[xs >= skip_fraction * x_max], hi[xs >= skip_fraction * x_max])
          for xs, lo, hi in bands]
  lows = [float(np.min(lo)) for lo, _ in keep if len(lo)]
  highs = [float(np.max(hi)) for _, hi in keep if len(hi)]
  low, high = min(lows), max(highs)
  margin = pad * (high - low) or 1.0
  return low - margin, high + margin


def _setting_order(v):
  return (v is None, v if not isinstance(v, str) else 0, str(v))


def sweep_curves(root, out):
  """ELBO curves of a sweep (train and validation/test against examples seen, log axis; a
  band over seeds) and the rate-distortion picture. One colour per latent size, one line
  style and marker per beta, named in the legend.

  Returns:
    (curves path, rate-distortion path, {setting label: (colour, line style, marker)}).
  """
  plt = _pyplot()
  groups = {}
  for name, overrides, workdir in record.members(root):
    events = metrics_io.read_metrics(workdir / 'metrics.jsonl')
    if not events:
      continue
    setting = tuple((k.split('.')[-1], v) for k, v in overrides.items() if k != 'seed')
    groups.setdefault(setting, []).append((overrides, events))
  latents = sorted({dict(s).get('latent_dim') for s in groups}, key=_setting_order)
  betas = sorted({dict(s).get('beta') for s in groups}, key=_setting_order)
  palette = plt.get_cmap('tab10').colors  # dark enough on white; no yellow
  colour = {d: palette[i % len(palette)] for i, d in enumerate(latents)}
  dash = {b: LINE_STYLES[i % len(LINE_STYLES)] for i, b in enumerate(betas)}
  marker = {b: MARKERS[i % len(MARKERS)] for i, b in enumerate(betas)}
  out, styles = _curve_panels(plt, groups, colour, dash, marker, len(betas) > 1, out)
  rd = _rate_distortion(plt, groups, colour, out.with_name(
      out.stem + '_rate_distortion' + out.suffix))
  return out, rd, styles


def _plot_setting(ax, key, runs, style, label, sparse, bands):
  """One setting's mean curve of `key` over its seeds (a band where there are several)."""
  c, ls, mk = style
  curves = [cv for cv in (_series(ev, key) for _, ev in runs) if len(cv)]
  if not curves:
    return
  n = min(len(cv) for cv in curves)
  if key == 'test/elbo' and n < 3:
    sparse.append(label)
  xs = curves[0][:n, 0]
  ys = np.stack([cv[:n, 1] for cv in curves])
  is_val = key == 'val/elbo'
  bands.append((xs, ys.min(0), ys.max(0)))
  ax.plot(xs, ys.mean(0), color=c, ls=ls, marker=mk, markersize=4 if is_val else 6,
          markevery=max(1, len(xs) // 12) if len(xs) > 24 or is_val else 1,
          alpha=0.45 if is_val else 1.0, lw=1.4,
          label=None if is_val else f'{label} ({len(curves)} seed'
          f'{"s" if len(curves) > 1 else ""})')
  if len(curves) > 1:
    ax.fill_between(xs, ys.min(0), ys.max(0), color=c, alpha=0.2, lw=0)


def _curve_panels(plt, groups, colour, dash, marker, several_betas, out):
  """The train and validation/test ELBO panels; (saved path, {label: style})."""
  styles, bands, sparse = {}, [], []
  fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))  # each panel its own y range
  panel_bands = ([], [])
  for setting, runs in sorted(groups.items(),
                              key=lambda kv: [_setting_order(v) for _, v in kv[0]]):
    label = ', '.join(f'{k}={v}' for k, v in setting) or 'run'
    s = dict(setting)
    styles[label] = (colour[s.get('latent_dim')], dash[s.get('beta')], marker[s.get('beta')])
    for i, key in ((0, 'train/elbo'), (1, 'val/elbo'), (1, 'test/elbo')):
      _plot_setting(axes[i], key, runs, styles[label], label, sparse, panel_bands[i])
  bands.extend(panel_bands[0] + panel_bands[1])
  for ax, title in ((axes[0], 'train (mean over each epoch)'),
                    (axes[1], 'test (markers, fixed binarization); validation (faint)')):
    ax.set_xscale('log')
    ax.set_xlabel('training examples seen')
    ax.set_title(title)
    ax.grid(alpha=0.3, which='both')
  if sparse:  # a curve of one or two points is no curve
    log.warning('the test panel has fewer than 3 evaluations for %d settings (e.g. %s): evaluate '
                'more often (train.eval_every_epochs) to see curves', len(sparse), sparse[0])
  for ax, panel in zip(axes, panel_bands):
    ylim = focus_ylim(panel)
    if ylim:
      ax.set_ylim(*ylim)
    ax.set_ylabel('ELBO, lower bound on log p(x) (nats per example)\n'
                  '(y range: from 1 % of training on)')
  axes[1].legend(fontsize=7, loc='lower right', title='colour: latent_dim' + (
      ', style: beta' if several_betas else ''), title_fontsize=7)
  return _save(plt, fig, out), styles


def _rate_distortion(plt, groups, colour, rd):
  """Final test rate against distortion across beta, one line per latent size through the
  seed means (error bars: sd over seeds), each beta labelled once; dashed iso-ELBO lines
  (rate + distortion = -ELBO) for reference; saved at rd."""
  fig, ax = plt.subplots(figsize=(6.5, 5))
  by_latent = {}
  for setting, runs in groups.items():
    s = dict(setting)
    finals = [[e for e in events if 'test/kl' in e][-1] for _, events in runs
              if any('test/kl' in e for e in events)]
    if finals:
      rates = [e['test/kl'] for e in finals]
      dists = [-e['test/recon'] for e in finals]
      by_latent.setdefault(s.get('latent_dim'), []).append(
          (s.get('beta', 1.0), rates, dists))
  ordered = sorted(by_latent.items(), key=lambda kv: _setting_order(kv[0]))
  points = []
  for d, pts in ordered:
    pts.sort(key=lambda p: _setting_order(p[0]))
    xs = [float(np.mean(r)) for _, r, _ in pts]
    ys = [float(np.mean(dd)) for _, _, dd in pts]
    sd = lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    seeds = max(len(r) for _, r, _ in pts)
    ax.errorbar(xs, ys, xerr=[sd(r) for _, r, _ in pts], yerr=[sd(dd) for _, _, dd in pts],
                fmt='o-', color=colour[d], capsize=2,
                label=f'latent_dim={d} (mean of {seeds} seed{"s" if seeds > 1 else ""})')
    points += [(f'beta={beta}', (x, y)) for (beta, _, _), x, y in zip(pts, xs, ys)]
  if points:
    xs, ys = zip(*(p for _, p in points))
    lo, hi = min(xs) + min(ys), max(xs) + max(ys)
    x0, x1 = ax.get_xlim()
    for level in np.linspace(lo, hi, 4):
      ax.plot([x0, x1], [level - x0, level - x1], ls='--', color='0.7', lw=0.8, zorder=0)
      ax.annotate(f'-ELBO {level:.0f}', (x1, level - x1), fontsize=6, color='0.5',
                  ha='right', va='bottom')
    ax.set_xlim(x0, x1)
  ax.set_xlabel('rate: test KL(q(z|x) || p(z)) (nats per example)')
  ax.set_ylabel('distortion: -E_q log p(x|z) (nats per example)')
  ax.set_title('rate-distortion across beta (final test values)')
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  place_labels(fig, ax, points)
  fig.savefig(rd, dpi=110)
  plt.close(fig)
  return rd


def metric_against_values(root, out, metric='test_elbo'):
  """For each field a sweep varies (the seed aside): the final `metric` of
  `summaries.run_figures` against that field's values, mean +- sd over seeds, one line per
  setting of the other fields. Files OUT_STEM_<metric>_vs_<field>.png; returns their paths."""
  plt = _pyplot()
  out = pathlib.Path(out)
  members = [(o, summaries.run_figures(w)) for _, o, w in record.members(root)]
  members = [(o, f) for o, f in members if f.get(metric) is not None]
  fields = [k for k in dict.fromkeys(k for o, _ in members for k in o) if k != 'seed']
  paths = []
  for field in fields:
    lines = {}
    for o, f in members:
      others = tuple((k.split('.')[-1], v) for k, v in o.items() if k not in (field, 'seed'))
      lines.setdefault(others, {}).setdefault(o.get(field), []).append(f[metric])
    fig, axes = _figure(plt, size=(6.5, 4.5))
    ax = axes[0][0]
    for others, values in sorted(lines.items(), key=lambda kv: [_setting_order(v)
                                                                for _, v in kv[0]]):
      xs = sorted(values, key=_setting_order)
      means = [float(np.mean(values[x])) for x in xs]
      sds = [float(np.std(values[x], ddof=1)) if len(values[x]) > 1 else 0.0 for x in xs]
      seeds = max(len(v) for v in values.values())
      label = (', '.join(f'{k}={v}' for k, v in others) or 'all') + f' ({seeds} seed' + (
          's)' if seeds > 1 else ')')
      ax.errorbar(range(len(xs)) if any(isinstance(x, str) for x in xs) else xs, means,
                  yerr=sds, fmt='o-', capsize=3, label=label)
    short = field.split('.')[-1]
    ax.set_xlabel(short)
    if all(isinstance(x, (int, float)) and x > 0 for v in lines.values() for x in v) and len(
        {x for v in lines.values() for x in v}) > 2:
      ax.set_xscale('log')
    ax.set_ylabel(f'{metric} (nats per example; mean +- sd over seeds)')
    ax.set_title(f'{metric} against {short}')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(_save(plt, fig, out.with_name(f'{out.stem}_{metric}_vs_{short}{out.suffix}')))
  return paths


# Offsets (points) tried in turn for a point's label: right-up first, then around it, farther.
_LABEL_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4)
                  for dx, dy in ((3, 3), (3, -9), (-30, 3), (-30, -9), (3, 10), (3, -16))]


def place_labels(fig, ax, labels, fontsize=7):
  """Annotates each (text, (x, y)) at the first offset whose box meets no box placed
  before it (nor the axes' edge); returns the boxes, in display pixels, of the labels."""
  renderer = fig.canvas.get_renderer()
  frame = ax.get_window_extent(renderer)
  placed = []
  for text, xy in labels:
    note = None
    for offset in _LABEL_OFFSETS:
      if note is not None:
        note.remove()
      note = ax.annotate(text, xy, fontsize=fontsize, xytext=offset,
                         textcoords='offset points')
      box = note.get_window_extent(renderer)
      inside = (frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0
                and box.y1 <= frame.y1)
      if inside and not any(box.overlaps(b) for b in placed):
        break
    placed.append(note.get_window_extent(renderer))
  return placed


def ae_vs_vae(panels, out):
  """The AE-vs-VAE figure: per model, decoded prior samples and test posterior means
  (first two principal axes above 2 latents) over the prior's 1-3 sigma circles.

  Args:
    panels: [(name, posterior means [N, D], labels [N], samples [S, H, W, C])].
    out: PNG path.
  """
  plt = _pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(11, 11))
  for col, (name, means, labels, samples) in enumerate(panels):
    axes[0, col].imshow(plots.tile(samples, 8)[..., 0] if samples.shape[-1] == 1 else
                        plots.tile(samples, 8), cmap='gray', vmin=0, vmax=1)
    axes[0, col].set_title(f'{name}: 64 prior samples z ~ N(0, I), decoded')
    axes[0, col].axis('off')
    xy, _ = latent_space.project_2d(means)
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
  return _save(plt, fig, out)


def gradient_variance(results, out, title):
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
  names = {'pathwise': 'reparameterization (pathwise)', 'score': 'score function (REINFORCE)',
           'score_loo': 'score function + leave-one-out baseline'}
  for est, rows in results['estimators'].items():
    s = [r['samples'] for r in rows]
    axes[0].plot(s, [r['total_variance'] for r in rows], 'o-', label=names[est])
    axes[1].plot(s, [r['cosine'] for r in rows], 'o-', label=names[est])
  axes[0].set_yscale('log')
  axes[0].set_ylabel('total variance of the estimate (sum over encoder parameters)')
  axes[1].set_ylabel('cosine similarity to the many-sample reference')
  lowest = min(r['cosine'] for rows in results['estimators'].values() for r in rows)
  axes[1].set_ylim(min(-0.05, lowest - 0.05), 1.05)  # every point inside the axes
  for ax in axes:
    ax.set_xscale('log')
    ax.set_xlabel('samples per example (S)')
    ax.grid(alpha=0.3, which='both')
    ax.legend(fontsize=8)
  fig.suptitle(f'd/d(encoder) E_q[log p(x|z)], {title}; z drawn without reparameterization: '
               f'gradient norm {results["sampled_without_reparameterization_grad_norm"]:.1f}',
               fontsize=9)
  out = _save(plt, fig, out)
