"""Sweep summaries: one row per member, then mean +- std over seeds.

Writes ROOT/summary.csv and ROOT/summary.md: each member's overrides, final and
best test ELBO (nats per example, from its metrics.jsonl), test KL and
reconstruction, active units, the importance-weighted NLL where
scripts/evaluate.py wrote eval.json, steps and wall time; then mean +- std over
seeds for members that differ only in seed.
"""

import csv
import json
import math
import pathlib

from vae import metrics_io, sweeps


COLUMNS = ('final_test_elbo', 'best_test_elbo', 'final_test_kl', 'final_test_recon',
           'final_test_active_units', 'test_nll', 'steps', 'wall_time_s')


def member_row(name, overrides, workdir):
  events = metrics_io.read_metrics(workdir / 'metrics.jsonl')
  evals = [e for e in events if 'test/elbo' in e]
  row = {'name': name, **{k.split('.')[-1]: v for k, v in overrides.items()}}
  if evals:
    row.update(final_test_elbo=evals[-1]['test/elbo'],
               best_test_elbo=max(e['test/elbo'] for e in evals),
               final_test_kl=evals[-1]['test/kl'], final_test_recon=evals[-1]['test/recon'],
               final_test_active_units=evals[-1].get('test/active_units'))
  if events:
    row['steps'] = events[-1]['step']
    row['wall_time_s'] = events[-1]['wall_time'] - events[0]['wall_time'] + events[0]['elapsed_s']
  if (workdir / 'eval.json').exists():
    row['test_nll'] = json.loads((workdir / 'eval.json').read_text()).get('nll')
  return row


def _fmt(v):
  if v is None:
    return ''
  return f'{v:.3f}' if isinstance(v, float) else str(v)


def summarize(root):
  root = pathlib.Path(root)
  rows = [member_row(*m) for m in sweeps.members(root)]
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
  lines.append('| ' + ' | '.join(gkeys + ['seeds', 'final_test_elbo', 'final_test_kl',
                                          'test_nll']) + ' |')
  lines.append('|' + '---|' * (len(gkeys) + 4))
  for key, rs in groups.items():
    d = dict(key)
    cells = [_fmt(d.get(k)) for k in gkeys] + [str(len(rs))]
    for col in ('final_test_elbo', 'final_test_kl', 'test_nll'):
      vals = [r[col] for r in rs if r.get(col) is not None]
      if vals:
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        cells.append(f'{mean:.3f} +- {std:.3f}')
      else:
        cells.append('')
    lines.append('| ' + ' | '.join(cells) + ' |')
  text = f'# Sweep summary: {root}\n\nnats per example; ELBO is a lower bound on log p(x).\n\n'
  (root / 'summary.md').write_text(text + '\n'.join(lines) + '\n')
  return rows
