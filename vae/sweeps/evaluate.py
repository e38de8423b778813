"""A sweep's evaluation: every finished member's eval.json (scripts/evaluate.py --sweep),
resumable, with progress."""

import json

from vae.evaluation.report import evaluate_workdir
from vae.sweeps import record
from vae.training import run_dir
from vae.training.progress import Progress


def evaluate_sweep(root, num_samples=5000, checkpoint='best', **kwargs):
  """Evaluates every finished member of a sweep into its eval.json (skipping members whose
  eval.json already holds this evaluation: rerunning resumes), with progress.

  Returns:
    {member name: result}, for the members evaluated or already evaluated.
  """
  todo = [(n, w) for n, _, w in record.members(root) if run_dir.read_done(w) is not None]
  progress = Progress(len(todo), 'sweep member evaluated', min_interval_s=0.0)
  results = {}
  for i, (name, workdir) in enumerate(todo):
    path = workdir / 'eval.json'
    if path.exists():
      old = json.loads(path.read_text())
      if (old.get('num_samples'), old.get('checkpoint'), old.get('seed')) == (
          num_samples, str(checkpoint), kwargs.get('seed', 0)):
        results[name] = old
        progress.update(i + 1, last=f'{name} (done before)')
        continue
    results[name] = evaluate_workdir(workdir, checkpoint, num_samples=num_samples, **kwargs)[0]
    progress.update(i + 1, last=name)
  progress.close()
  return results
