"""Tables over runs: a sweep's summary (one row per member, then mean +- std over seeds) and
the comparison rows of scripts/compare_runs.py (`sweep_rows`, `compare_rows`).

Writes ROOT/summary.csv and ROOT/summary.md: each member's overrides; the test
figures at its best validation ELBO (the checkpoint `vae.load(member, 'best')`
returns; the last evaluation for a run without a validation split): test ELBO,
KL, reconstruction, active units, nats per example) and its final test ELBO, from its
metrics.jsonl; the importance-weighted test
log-likelihood where `scripts/evaluate.py` (or `--sweep`) wrote eval.json;
steps and the seconds spent training (sessions only, not the gaps between an
interrupted run and its resumption); then mean +- sample standard deviation
over the seeds of members that differ only in seed (n = 1: no spread).
"""

import csv
import json
import math
import pathlib

import numpy as np

from vae.sweeps import plan, record
from vae.training import metrics_io, run_dir, run_record


COLUMNS = ('best_val_step', 'test_elbo', 'test_kl', 'test_recon', 'test_active_units',
           'test_images', 'elbo_from', 'final_test_elbo', 'test_log_likelihood', 'iw_samples',
           'iw_images', 'steps', 'wall_time_s', 'trained_with')


def run_figures(workdir, group_size=None):
  """The figures of one run: the one path by which summarize.py and compare_runs.py read
  them, so both tables give a run the same numbers.

  From metrics.jsonl: the evaluation at the best validation ELBO (the checkpoint
  `vae.load(workdir, 'best')` returns; without a validation split the last one, never the
  maximum over test events), the last test ELBO, steps and epochs. Where scripts/evaluate.py
  wrote eval.json, the test ELBO, KL, reconstruction, active units and image count are that
  evaluation's (the images of its log p(x)); `elbo_from` says which. Training seconds are
  the run's sessions (not the gaps between them); a member of a vmap group (`group_size`,
  default: from its sweep's record) gets its share of the group's time.
  """
  workdir = pathlib.Path(workdir)
  size = _group_size_of(workdir) if group_size is None else group_size
  events = metrics_io.read_metrics(workdir / 'metrics.jsonl')
  evals = [e for e in events if 'test/elbo' in e]
  out = {}
  if evals:
    validated = [e for e in evals if 'val/elbo' in e]
    best = max(validated, key=lambda e: e['val/elbo']) if validated else evals[-1]
    out.update(best_val_step=best['step'] if validated else None,
               best_epoch=best['epoch'] if validated else None, test_elbo=best['test/elbo'],
               test_kl=best['test/kl'], test_recon=best['test/recon'],
               test_active_units=best.get('test/active_units'),
               test_images=best.get('test/count'), final_test_elbo=evals[-1]['test/elbo'],
               elbo_from='metrics.jsonl')
  if events:
    seconds = run_record.training_seconds(workdir)
    out.update(steps=events[-1]['step'], epochs=max(e['epoch'] for e in events),
               wall_time_s=(seconds if seconds is not None else (
                   events[-1]['wall_time'] - events[0]['wall_time'] + events[0]['elapsed_s']))
               / size,
               trained_with=f'a vmap group of {size} (time shared)' if size > 1 else 'alone')
  if (workdir / 'eval.json').exists():
    result = json.loads((workdir / 'eval.json').read_text())
    out.update(test_log_likelihood=result.get('log_likelihood'),
               iw_samples=result.get('num_samples'), iw_images=result.get('num_examples'))
    if 'elbo' in result:
      out.update(test_elbo=result['elbo'], test_kl=result.get('kl'),
                 test_recon=result.get('recon'), test_active_units=result.get('active_units'),
                 test_images=result.get('num_examples'), elbo_from='eval.json')
  return out


def member_row(name, overrides, workdir, group_size=1):
  """One member's row: its overrides and `run_figures`."""
  row = {'name': name, **{k.split('.')[-1]: v for k, v in overrides.items()}}
  row.update({k: v for k, v in run_figures(workdir, group_size).items()
              if k in COLUMNS})
  return row


def _fmt(v):
  if v is None:
    return ''
  return f'{v:.3f}' if isinstance(v, float) else str(v)


def summarize(root):
  root = pathlib.Path(root)
  sizes = _group_sizes(root)
  rows = [member_row(*m, group_size=sizes.get(m[0], 1)) for m in record.members(root)]
  keys = ['name'] + sorted({k for r in rows for k in r} - set(COLUMNS) - {'name'}) + list(COLUMNS)
  with open(root / 'summary.csv', 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=keys)
    writer.writeheader()
    for r in rows:
      writer.writerow({k: r.get(k, '') for k in keys})
  groups = {}
  for r in rows:
    key = tuple((k, r[k]) for k in keys if k not in COLUMNS and k not in ('name', 'seed')
                and k in r)
    groups.setdefault(key, []).append(r)
  lines = ['| ' + ' | '.join(keys) + ' |', '|' + '---|' * len(keys)]
  lines += ['| ' + ' | '.join(_fmt(r.get(k)) for k in keys) + ' |' for r in rows]
  lines += ['', '## Mean +- std over seeds', '']
  gkeys = [k for k in keys if k not in COLUMNS and k not in ('name', 'seed')]
  means = ('test_elbo', 'test_kl', 'test_recon', 'test_log_likelihood')
  lines.append('| ' + ' | '.join(gkeys + ['seeds', *means]) + ' |')
  lines.append('|' + '---|' * (len(gkeys) + 1 + len(means)))
  for key, rs in groups.items():
    d = dict(key)
    cells = [_fmt(d.get(k)) for k in gkeys] + [str(len(rs))]
    for col in means:
      vals = [r[col] for r in rs if r.get(col) is not None]
      if len(vals) > 1:
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
        cells.append(f'{mean:.3f} +- {std:.3f} (n = {len(vals)})')
      elif vals:
        cells.append(f'{vals[0]:.3f} (n = 1)')
      else:
        cells.append('')
    lines.append('| ' + ' | '.join(cells) + ' |')
  text = (f'# Sweep summary: {root}\n\nnats per example; ELBO is a lower bound on log p(x). '
          'test_elbo, test_kl, test_recon: at the best validation ELBO, over test_images test '
          'images: from scripts/evaluate.py\'s evaluation where there is one (elbo_from '
          'eval.json: the images of test_log_likelihood, as compare_runs.py reports them), '
          'else from training\'s evaluation (metrics.jsonl); test_log_likelihood: over '
          'iw_images test images with iw_samples importance samples each. wall_time_s: '
          'training sessions only; for members trained in one vmap group, their share of the '
          'group\'s time (as compare_runs.py\'s minutes).\n\n')
  (root / 'summary.md').write_text(text + '\n'.join(lines) + '\n')
  return rows


def _group_size_of(workdir):
  """The members of the vmap group a sweep member trained in (1: alone, or not a member)."""
  workdir = pathlib.Path(workdir)
  return _group_sizes(workdir.parent).get(workdir.name, 1)


def _group_sizes(root):
  """{member name: members of the vmap group it trained in} from sweep.json (empty when
  the members trained alone or the sweep predates the record)."""
  path = pathlib.Path(root) / 'sweep.json'
  if not path.exists():
    return {}
  members = record.read_sweep_json(path)['members']
  groups = {}
  for m in members:
    group = (record.read_status(pathlib.Path(root) / m['name']) or {}).get('group',
                                                                          m.get('group'))
    if group is not None:
      groups.setdefault(group, []).append(m['name'])
  return {name: len(names) for names in groups.values() for name in names}


# ----------------------------------------------------------------------------- rows of a table


def sweep_rows(root):
  """The rows of a sweep for `compare_rows`: its members grouped by their overrides other
  than the seed, in sweep order, each row named by those overrides (`plan.member_name`)
  and holding the workdirs of its evaluated seeds (members without eval.json are left out).

  Returns:
    ([(row name, [workdir, ...])], [names of members not evaluated]).
  """
  rows, missing = {}, []
  for name, overrides, workdir in record.members(root):
    if not (workdir / 'eval.json').exists():
      missing.append(name)
      continue
    setting = {k: v for k, v in overrides.items() if k != 'seed'}
    rows.setdefault(plan.member_name(setting) or 'config', []).append(workdir)
  return list(rows.items()), missing


def _row_run(workdir):
  """One evaluated run's figures: eval.json, its per-image log p(x) (eval.npz), epochs and
  training time."""
  workdir = pathlib.Path(workdir)
  path = workdir / 'eval.json'
  if not path.exists():
    raise FileNotFoundError(f'{workdir} has no eval.json; run scripts/evaluate.py --workdir '
                            f'{workdir} first')
  result = json.loads(path.read_text())
  npz = workdir / result.get('per_example_file', 'eval.npz')
  if not npz.exists():
    raise FileNotFoundError(f'{npz} (per-image log p(x)) is missing; rerun scripts/evaluate.py '
                            f'--workdir {workdir}')
  with np.load(npz) as z:
    ll = np.asarray(z['log_likelihood'], np.float64)
    # A file without image_index covers the first num_examples images of the split.
    index = (np.asarray(z['image_index'], np.int64) if 'image_index' in z.files
             else np.arange(len(ll), dtype=np.int64))
  config = run_dir.read_json(workdir / 'config.json')
  figures = run_figures(workdir)
  return {'result': result, 'll': ll, 'index': index, 'seed': config.get('seed'),
          'figures': figures, 'epochs': figures.get('epochs'),
          'best_epoch': figures.get('best_epoch'), 'seconds': figures.get('wall_time_s')}


def compare_rows(rows, reference=None):
  """A results table whose rows are runs (one or several seeds each) on the same test images.

  Args:
    rows: [(name, [workdir, ...])]: each workdir evaluated by scripts/evaluate.py (eval.json
      and eval.npz, the per-image log p(x)); a row's workdirs are its seeds.
    reference: the row the differences are taken against (default: the first).

  Returns:
    (markdown text, [row dict]). Per row: log p(x) mean over seeds, its sd over seeds (n > 1)
    and each seed's value; ELBO, KL (and per layer), active units, epochs (trained / best),
    training minutes. The difference to the reference is paired: per test image, the row's
    seed-mean log p(x) minus the reference's, mean +- standard error over images, so a gap
    larger than ~2 SE is real for these runs (seed-to-seed spread is the sd column). Runs
    evaluated on different numbers of images are paired on the images they all share
    (eval.npz's image_index); the footer says how many.

  Raises:
    ValueError: runs evaluated on another split, data or sample count, or sharing no image.
  """
  runs = {name: [_row_run(w) for w in dirs] for name, dirs in rows}
  first = next(iter(runs.values()))[0]['result']
  _check_comparable(runs, first)
  shared = _pair_on_shared_images(runs)
  ref = reference or rows[0][0]
  ref_ll = np.mean([r['ll_shared'] for r in runs[ref]], axis=0)
  table = [_compare_row(name, rs, ref_ll) for name, rs in runs.items()]
  return _compare_markdown(table, first, ref, shared), table


def _check_comparable(runs, first):
  for name, rs in runs.items():
    for r in rs:
      res = r['result']
      same = all(res.get(k) == first.get(k) for k in ('split', 'num_samples')) \
          and all((res.get('data') or {}).get(k) == (first.get('data') or {}).get(k)
                  for k in ('name', 'binarize', 'num_test', 'shape'))
      if not same:
        raise ValueError(f'row {name!r}: {res.get("workdir")} was evaluated on other images or '
                         f'with another sample count than {first.get("workdir")}; evaluate '
                         'every run with the same --split and --num_samples')


def _pair_on_shared_images(runs):
  """The images every run evaluated (eval.npz's image_index); each run gains 'll_shared',
  its per-image values on them in one order."""
  shared = np.asarray(sorted(set.intersection(*(set(r['index'].tolist())
                                                 for rs in runs.values() for r in rs))))
  if not len(shared):
    raise ValueError('the runs share no evaluated image; evaluate them on the same images')
  for rs in runs.values():
    for r in rs:
      position = {int(i): j for j, i in enumerate(r['index'])}
      r['ll_shared'] = r['ll'][[position[int(i)] for i in shared]]
  return shared


def _compare_row(name, rs, ref_ll):
  mean = lambda v: float(np.mean(v)) if v else None
  res = [r['result'] for r in rs]
  lls = [r['result']['log_likelihood'] for r in rs]
  diff = np.mean([r['ll_shared'] for r in rs], axis=0) - ref_ll
  row = {'name': name, 'seeds': [r['seed'] for r in rs], 'log_likelihood': mean(lls),
         'log_likelihood_per_seed': lls, 'images': [x.get('num_examples') for x in res],
         'log_likelihood_sd_over_seeds': float(np.std(lls, ddof=1)) if len(lls) > 1 else None,
         'elbo': mean([r['figures']['test_elbo'] for r in rs]),
         'kl': mean([r['figures']['test_kl'] for r in rs]),
         'active_units': mean([r['figures']['test_active_units'] for r in rs]),
         'epochs': mean([r['epochs'] for r in rs if r['epochs'] is not None]),
         'best_epoch': mean([r['best_epoch'] for r in rs if r['best_epoch'] is not None]),
         'minutes': mean([r['seconds'] / 60 for r in rs if r['seconds'] is not None]),
         'diff_vs_reference': float(diff.mean()),
         'diff_se': float(diff.std(ddof=1) / math.sqrt(len(diff)))}
  for layer in ('kl_z1', 'kl_z2', 'active_units_z1', 'active_units_z2'):
    if all(layer in x for x in res):
      row[layer] = mean([x[layer] for x in res])
  return row


def _compare_markdown(table, first, ref, shared):
  k = first.get('num_samples')
  lines = [f'| row | test log p(x), k = {k} | sd over seeds | ELBO | KL (z1 / z2) | active units '
           f'(z1 / z2) | epochs (best) | minutes | seeds | vs {ref} (paired, +- SE) |',
           '|---|---|---|---|---|---|---|---|---|---|']
  f2 = lambda v: '' if v is None else f'{v:.2f}'
  for r in table:
    kl = f2(r['kl']) + (f' ({f2(r["kl_z1"])} / {f2(r["kl_z2"])})' if 'kl_z1' in r else '')
    au = f'{r["active_units"]:.0f}' + (f' ({r["active_units_z1"]:.0f} / '
                                         f'{r["active_units_z2"]:.0f})' if 'kl_z1' in r else '')
    epochs = '' if r['epochs'] is None else f'{r["epochs"]:.0f} ({r["best_epoch"]:.0f})'
    vs = '–' if r['name'] == ref else f'{r["diff_vs_reference"]:+.2f} ± {r["diff_se"]:.2f}'
    lines.append(f'| {r["name"]} | {f2(r["log_likelihood"])} | '
                 f'{f2(r["log_likelihood_sd_over_seeds"]) or "n = 1"} | {f2(r["elbo"])} | {kl} | '
                 f'{au} | {epochs} | {f2(r["minutes"])} | '
                 f'{",".join(str(s) for s in r["seeds"])} | {vs} |')
  data_name = (first.get('data') or {}).get('name', '')
  counts = sorted({n for r in table for n in r['images']})
  split = first.get('split', 'test')
  of = f' of {data_name}' if data_name else ''
  if len(counts) == 1:
    where = f'the same {counts[0]} {split} images{of}'
  else:
    where = (f'each row\'s own {split} images{of} ({", ".join(map(str, counts))} images); the '
             f'paired differences over the {len(shared)} images every run shares')
  lines += ['', f'Every figure: {where} (scripts/evaluate.py), log p(x) '
                f'with k = {k} importance samples each, ELBO and KL on those images too '
                '(nats per example; summarize.py reads them by the same path, '
                '`summaries.run_figures`); minutes: training sessions of each run (a member of '
                f'a vmap group: its share of the group\'s time). Paired over {len(shared)} '
                'images.']
  return '\n'.join(lines) + '\n'
