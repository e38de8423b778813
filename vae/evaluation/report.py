"""The offline evaluation report of scripts/evaluate.py: one trained model on a split
(`evaluate_model`), a workdir into its eval.json (`evaluate_workdir`); a sweep's members
through `vae.sweeps.evaluate`. Each batch goes through `estimates.example_terms`, the same
computation as training's evaluation; figures in nats per example."""

import functools
import hashlib
import io
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae import config_lib
from vae.evaluation import latent_space, trained
from vae.training.estimates import EVAL_SUMS, active_units, example_terms
from vae.families.likelihoods import NO_BPD, bits_per_dim, bpd_offset
from vae.training import checkpointing, memory, metrics_io, run_record
from vae.training.progress import Progress


def _check_evaluation_size(model, num_samples, batch_size, chunk_size):
  """Refuses, before any work, a sample count past int32 and a batch x chunk of draws past
  the device's memory, naming the flags to lower (`memory.check_draws`)."""
  if num_samples > config_lib.INT32_MAX:
    raise config_lib.ConfigError(f'--num_samples {num_samples:,} is past {config_lib.INT32_MAX:,}'
                                 ' (samples are counted in int32); a few thousand suffice')
  chunk = min(chunk_size, num_samples)
  memory.check_draws(batch_size * chunk,
                     memory.floats_per_example(model.config.model, model.image_shape),
                     f'--batch_size {batch_size} x --chunk_size {chunk} draws',
                     'lower --batch_size or --chunk_size')


def evaluate_model(model, images, num_samples, batch_size=500, chunk_size=100, seed=0,
                   split='test'):
  """scripts/evaluate.py's report of a `vae.load` TrainedModel on uint8 `images`.

  Returns:
    dict: the importance-weighted log p(x) with S = `num_samples` (nats per
    example) and its standard error, the nested estimates at k = 1, 10, ...
    < S, ELBO / recon / KL (analytic or single-draw, as in `per_example_objective`),
    with two layers kl_z1 / kl_z2 and active units per layer, bits/dim, active
    units, KL per dimension (analytic family only), the registered evaluation sums'
    metrics (named for `split`), the latent diagnostics, and log_likelihood_per_example (a
    numpy array [N]); every draw comes from `seed`. Each batch goes through
    `example_terms`, the computation training's evaluation sums.
  """
  _check_evaluation_size(model, num_samples, batch_size, chunk_size)
  ks = [k for k in (1, 10, 100, 1000, 5000, 10000) if k < num_samples]
  key = jax.random.key(seed)
  iw = 0 if model.model.deterministic else num_samples
  terms_fn = functools.partial(batch_terms, model.model, iw=iw, chunk=chunk_size,
                               ks=tuple(ks))
  per_batch = []
  t0 = time.time()
  num_batches = -(-len(images) // batch_size)
  progress = Progress(num_batches, f'evaluation batch (of {batch_size} examples x '
                      f'{num_samples} samples)', (batch_size, 'ex'))
  for b, start in enumerate(range(0, len(images), batch_size)):
    kb = jax.random.fold_in(key, b)
    x = model.to_float(images[start:start + batch_size], jax.random.fold_in(kb, 0))
    per_batch.append(jax.device_get(terms_fn(model.variables, x, jax.random.fold_in(kb, 2),
                                             jax.random.fold_in(kb, 1))))
    progress.update(b + 1)
  progress.close()
  seconds = time.time() - t0
  n = len(images)
  num_dims = int(np.prod(model.image_shape))
  offset = bpd_offset(model.config.model.likelihood, model.config.data.dequantize)
  bpd = lambda nats: bits_per_dim(float(nats), num_dims, offset)
  t = {k: np.concatenate([np.asarray(b[k]) for b in per_batch], axis=-1 if k == 'iw' else 0)
       for k in per_batch[0]}
  elbo, recon, kl, mean, logvar = t['elbo'], t['recon'], t['kl'], t['mean'], t['logvar']
  se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))
  out = {'num_examples': n, 'num_samples': num_samples, 'seconds': seconds,
         'elbo': float(elbo.mean()), 'elbo_se': se(elbo), 'recon': float(recon.mean()),
         'kl': float(kl.mean()), 'elbo_bpd': bpd(-elbo.mean())}
  layer_kl = [k for k in ('kl_z1', 'kl_z2') if k in t]
  for name in layer_kl:
    out[name] = float(t[name].mean())
  if 'iw' in t:
    est = t['iw']  # [len(ks) + 1, N]
    ll = est[-1]
    out.update(log_likelihood=float(ll.mean()), log_likelihood_se=se(ll),
               nll=float(-ll.mean()), nll_bpd=bpd(-ll.mean()),
               convergence={str(k): float(est[i].mean()) for i, k in enumerate(ks + [num_samples])})
    # Per test image, in the images' order: rows evaluated on the same images can be
    # compared with paired standard errors (scripts/evaluate.py saves it beside the JSON).
    out['log_likelihood_per_example'] = ll
  for name, extra in EVAL_SUMS.items():  # the registered sums, as training's evaluation
    if name in t and extra.summarize is not None:
      out.update(extra.summarize(t[name].sum(axis=0), float(n), split))
  d = model.config.train.active_unit_threshold
  num_active, var = active_units(mean.sum(0), (mean ** 2).sum(0), n, d)
  out['active_units'] = num_active
  if layer_kl:
    half = model.model.latent_dim
    out['active_units_z1'] = int(np.sum(var[:half] > d))
    out['active_units_z2'] = int(np.sum(var[half:] > d))
  out['posterior_mean_variance_per_dim'] = var.tolist()
  if 'kl_dim' in t and not model.model.deterministic:  # the analytic family's registered sum
    out['kl_per_dim'] = t['kl_dim'].mean(axis=0).tolist()
  out['latent'] = latent_space.model_latent_diagnostics(
      model, jnp.asarray(mean), jnp.asarray(logvar), jax.random.fold_in(key, 10 ** 6))
  return out


@functools.partial(jax.jit, static_argnames=('model', 'iw', 'chunk', 'ks'))
def batch_terms(model, variables, x, k_z, k_iw, iw, chunk, ks):
  """`example_terms` of one batch, compiled once per model (modules compare by their
  structure: the members of a sweep that share a shape share it), sample count and chunk."""
  return example_terms(model, variables, x, k_z, k_iw, iw, chunk, ks)


def format_bpd(value):
  """Bits/dim as a report prints it: 4 decimals, or why there is none."""
  return NO_BPD if value is None else f'{value:.4f}'


def evaluate_workdir(workdir, checkpoint='best', split='test', num_samples=5000, batch_size=500,
                     chunk_size=100, max_examples=0, seed=0, out=None,
                     accept_changed_data=False):
  """scripts/evaluate.py on one workdir: writes and returns the report (see
  `evaluate_model`); `out` defaults to WORKDIR/eval.json and is checked to be
  writable before the evaluation starts, so a long result is never computed and lost."""
  workdir = pathlib.Path(workdir)
  out = pathlib.Path(out or workdir / 'eval.json')
  if out.suffix == '.npz':  # the per-image file takes OUT's name with .npz
    raise config_lib.ConfigError(f'--out {out} ends in .npz, the name of the per-image file written '
                     f'beside the report; give a .json name (e.g. {out.with_suffix(".json")})')
  model = trained.load(workdir, checkpoint, accept_changed_data)
  metrics_io.check_writable(out)
  images, _ = model.load_split(split)
  if max_examples:
    images = images[:max_examples]
  result = evaluate_model(model, images, num_samples, batch_size, chunk_size, seed,
                                     split)
  if checkpoint == 'best':  # a run without a validation split has no best: its latest
    has_best = checkpointing.CheckpointReader(workdir / 'checkpoints').best_step() is not None
    result['checkpoint_chosen_by'] = ('validation ELBO' if has_best else
                                      'latest (no validation split; never chosen on test)')
  # What the figures depend on besides the run: the code (commit), packages and machine.
  result['environment'] = run_record.environment()
  if accept_changed_data:
    result['accepted_changed_data'] = True
  result.update(workdir=str(workdir), checkpoint=str(checkpoint), checkpoint_step=model.step,
                split=split, data=model.data_info, seed=seed)
  per_example = result.pop('log_likelihood_per_example', None)
  if per_example is not None:  # OUT with .npz: per-image log p(x), for paired comparisons
    # Both files are written under temporary names and renamed, the JSON last, carrying the
    # npz's sha256: a kill between the two leaves the older JSON, which names another hash.
    buffer = io.BytesIO()
    # image_index: which images of the split each value is (the first num_examples).
    np.savez(buffer, log_likelihood=np.asarray(per_example, np.float64),
             image_index=np.arange(len(per_example), dtype=np.int64))
    data = buffer.getvalue()
    metrics_io.write_bytes(out.with_suffix('.npz'), data)
    result['per_example_file'] = out.with_suffix('.npz').name
    result['per_example_sha256'] = hashlib.sha256(data).hexdigest()
  metrics_io.write_json(out, result)
  return result, out
