"""Mutation testing: plants one realistic single-line bug at a time and checks that the tests
named for that code fail.

Each mutant replaces one exact snippet of a library file (the n-th occurrence where a line
repeats) in a fresh copy of the working tree and runs the tests that guard that code; the
mutant is *killed* when they fail and *survives* when they pass. The score is killed / all.
Survivors either get a test or are listed as equivalent (the change cannot alter any result)
in docs/mutation.md. Run on demand, not in CI (about 8 minutes on two cores):

  python scripts/mutation_test.py                     # every mutant
  python scripts/mutation_test.py --only iwae_loss    # names containing a string
  python scripts/mutation_test.py --list              # the table, without running it

Exit code 0 when every non-equivalent mutant is killed, 1 otherwise, 2 on bad arguments, a
mutant whose snippet is no longer in its file (the table needs updating), or tests that could
not run at all (pytest's exit code other than 0 or 1).
"""

import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vae.commands import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

IGNORE = shutil.ignore_patterns('.git', '.venv', '.dev', 'runs', 'workdirs', '__pycache__',
                                '.pytest_cache', '*.egg-info')


@dataclasses.dataclass(frozen=True)
class Mutant:
  """One planted bug: `old` -> `new` at occurrence `nth` of `old` in `path`."""
  name: str
  path: str
  old: str
  new: str
  tests: tuple
  nth: int = 0
  equivalent: str = ''  # why no test can tell it apart (then it is expected to survive)


OBJ = 'vae/families/objectives.py'
SELECTION = ('tests/training/test_run.py', 'tests/training/test_loop.py::'
             'test_early_stopping_and_the_best_checkpoint_follow_validation_not_test')
MUTANTS = (
    Mutant('iwae_loss_analytic', OBJ, 'else log_mean_exp(log_w, axis=0))',
           'else jnp.mean(log_w, axis=0))', ('tests/families/test_objectives.py',), nth=0),
    Mutant('iwae_loss_general', OBJ, 'else log_mean_exp(log_w, axis=0))',
           'else jnp.mean(log_w, axis=0))', ('tests/families/test_objectives.py',), nth=1),
    Mutant('iwae_bound_reported', OBJ, 'iwae = log_mean_exp(log_px + log_ratio, axis=0)',
           'iwae = jnp.mean(log_px + log_ratio, axis=0)', ('tests/families/test_objectives.py',)),
    Mutant('log_mean_exp_normalizer', OBJ, 'jax.nn.logsumexp(x, axis=axis) - math.log(',
           'jax.nn.logsumexp(x, axis=axis) - 0 * math.log(', ('tests/families/test_objectives.py',)),
    Mutant('reparameterize_scale', OBJ, 'return mean + jnp.exp(0.5 * logvar) * eps',
           'return mean + jnp.exp(logvar) * eps', ('tests/families/test_objectives.py',)),
    Mutant('kl_standard_logvar_sign', OBJ, 'jnp.square(mean) - 1.0 - logvar)',
           'jnp.square(mean) - 1.0 + logvar)', ('tests/families/test_objectives.py',)),
    Mutant('kl_pair_logvar_ratio_sign', OBJ, 'jnp.sum(prior_logvar - logvar - 1.0',
           'jnp.sum(logvar - prior_logvar - 1.0',
           ('tests/families/test_models.py::test_two_level_elbo_equals_a_hand_computed_value',)),
    Mutant('kl_warmup_not_capped', OBJ,
           'jnp.minimum(jnp.asarray(step, jnp.float32) / jnp.maximum(warmup, 1.0), 1.0)',
           'jnp.asarray(step, jnp.float32) / jnp.maximum(warmup, 1.0)',
           ('tests/families/test_objectives.py',)),
    Mutant('free_bits_floor_direction', OBJ, 'batch_mean[None, :] < free_bits',
           'batch_mean[None, :] > free_bits', ('tests/families/test_objectives.py',)),
    Mutant('flow_log_det_zero', 'vae/families/flows.py', 'jnp.sum(jax.nn.log_sigmoid(s), axis=-1)',
           '0.0 * jnp.sum(jax.nn.log_sigmoid(s), axis=-1)', ('tests/families/test_flows.py',)),
    Mutant('flow_gate_mix', 'vae/families/flows.py', 'sigma * z + (1.0 - sigma) * m',
           'sigma * z + sigma * m', ('tests/families/test_flows.py',)),
    Mutant('mixture_weights_unnormalized', 'vae/families/priors.py',
           'return jax.nn.log_softmax(self.logits), self.means',
           'return self.logits, self.means',
           ('tests/families/test_priors.py::test_mixture_weights_are_normalized_whatever_the_logits',)),
    Mutant('vamp_weights_unnormalized', 'vae/families/priors.py', 'jnp.full((k,), -math.log(k))',
           'jnp.full((k,), 0.0)', ('tests/families/test_priors.py',)),
    Mutant('bernoulli_sign', 'vae/families/likelihoods.py',
           "(softplus if impl == 'fused' else jax.nn.softplus)(logits)",
           "(softplus if impl == 'fused' else jax.nn.softplus)(-logits)",
           ('tests/families/test_likelihoods.py',)),
    Mutant('fused_bernoulli_derivative', 'vae/families/likelihoods.py',
           'grad_l = flat_x - jnp.where(flat_l >= 0, 1.0, e) / (1.0 + e)',
           'grad_l = flat_x - jnp.where(flat_l >= 0, e, 1.0) / (1.0 + e)',
           ('tests/families/test_likelihoods.py',)),
    Mutant('softplus_derivative', 'vae/families/likelihoods.py',
           'return out, t * (jnp.where(l >= 0, 1.0, e) / (1.0 + e))',
           'return out, t * (jnp.where(l >= 0, e, 1.0) / (1.0 + e))',
           ('tests/families/test_likelihoods.py',)),
    Mutant('iw_eval_normalizer', 'vae/training/estimates.py',
           'return acc - jnp.log(ks.astype(jnp.float32))[:, None]',
           'return acc - 0 * jnp.log(ks.astype(jnp.float32))[:, None]',
           ('tests/evaluation/test_estimates.py::test_iw_estimate_converges_to_log_px_with_honest_error_bars',)),
    Mutant('dynamic_binarization_threshold', 'vae/data/input_pipeline.py',
           'return jax.random.bernoulli(key, x / 255.0)',
           'return jax.random.bernoulli(key, x / 256.0)',
           ('tests/data/test_datasets.py::test_dynamic_binarization_mean_and_keys',)),
    Mutant('step_key_ignores_step', 'vae/training/step.py', 'jax.random.fold_in(state.rng, state.step)',
           'jax.random.fold_in(state.rng, 0)', ('tests/training/test_step.py',)),
    Mutant('resume_from_oldest_common_step', 'vae/training/checkpointing.py', 'step = max(common)',
           'step = min(common)', ('tests/training/test_step.py',)),
    Mutant('select_on_test', 'vae/training/run.py', "return eval_metrics.get('val/elbo')",
           "return eval_metrics.get('test/elbo', eval_metrics.get('val/elbo'))", SELECTION),
    Mutant('patience_off_by_one', 'vae/training/run.py', 'step - self.best[1] >= patience_steps',
           'step - self.best[1] > patience_steps', SELECTION),
    Mutant('replayed_best_ignores_resume_step', 'vae/training/run.py',
           "(upto is not None and e['step'] > upto)", '(upto is None)', ('tests/training/test_run.py',)),
    Mutant('best_on_ties', 'vae/training/run.py', 'value is not None and value > self.best[0]',
           'value is not None and value >= self.best[0]', SELECTION,
           equivalent='differs only when two evaluations give the same validation ELBO to the '
           'last bit, where either checkpoint is an equally good choice'),
    Mutant('best_checkpoint_lowest', 'vae/training/checkpointing.py', 'return max(scored)[1] if scored',
           'return min(scored)[1] if scored', ('tests/training/test_run.py',)),
    # The prior protocol and the Exemplar prior's state (vae/families/priors.py, exemplar.py).
    Mutant('kl_table_ignored', 'vae/families/priors.py', '      return KL_TABLE[cls]',
           '      return None', ('tests/families/test_objectives.py',)),
    Mutant('exemplar_no_leave_one_out', 'vae/families/exemplar.py',
           'valid = valid & (ids[None, :] != batch_ids[:, None])', 'valid = valid',
           ('tests/families/test_priors.py',)),
    Mutant('exemplar_cache_not_updated', 'vae/families/exemplar.py',
           'cache = cache.at[ids].set(means)', 'cache = cache',
           ('tests/training/test_loop.py::test_smoke_run_matches_the_recorded_fixture',)),
    Mutant('exemplar_retrieval_weights_dropped', 'vae/families/exemplar.py',
           'return exemplar_variables(images=images, log_weights=log_w), {',
           'return exemplar_variables(images=images), {',
           ('tests/training/test_loop.py::test_smoke_run_matches_the_recorded_fixture',)),
    Mutant('prior_state_not_evaluated', 'vae/training/members.py',
           'None, data, state.prior_state))', 'None, data, None))',
           ('tests/test_extensions.py',)),
    Mutant('memory_ignores_the_prior', 'vae/families/priors.py',
           'return MEMORY.get(mc.prior, _no_memory)(', 'return _no_memory(',
           ('tests/training/test_memory.py',)),
    # One per module of vae/families and vae/evaluation: each architecture's wiring, the
    # objective protocol, the report's error bars, the loaded model's prior state.
    Mutant('gated_layer_gates_on_its_value', 'vae/families/layers.py',
           'return h * nn.sigmoid(g)', 'return h * nn.sigmoid(h)',
           ('tests/families/test_models.py',)),
    Mutant('logvar_clamp_loses_its_ceiling', 'vae/families/layers.py',
           'logvar = jnp.clip(logvar, logvar_min, logvar_max)',
           'logvar = jnp.clip(logvar, logvar_min, None)', ('tests/families/test_models.py',)),
    Mutant('pixel_shuffle_order', 'vae/families/networks.py', '.transpose(0, 1, 3, 2, 4, 5)',
           '.transpose(0, 1, 2, 3, 4, 5)', ('tests/families/test_models.py',)),
    Mutant('two_level_kl_against_the_posterior_mean', 'vae/families/models.py',
           'kl1 = gaussian_kl_pair(m1, lv1, pm, plv)', 'kl1 = gaussian_kl_pair(m1, lv1, m1, plv)',
           ('tests/families/test_models.py::test_two_level_elbo_equals_a_hand_computed_value',)),
    Mutant('gated_conv_gate_on_its_value', 'vae/families/gated_conv.py',
           "return conv('value')(x) * nn.sigmoid(conv('gate')(x))",
           "return conv('value')(x) * nn.sigmoid(conv('value')(x))",
           ('tests/families/test_gated_conv.py',)),
    Mutant('elbo_objective_sums_the_batch', 'vae/families/objective_families.py',
           'return StepLoss(jnp.mean(loss), terms)', 'return StepLoss(jnp.sum(loss), terms)',
           ('tests/training/test_loop.py::test_smoke_run_matches_the_recorded_fixture',)),
    Mutant('unknown_objective_accepted', 'vae/families/objective_families.py',
           'config_lib.check(oc.name in REGISTRY,', 'config_lib.check(True,',
           ('tests/test_extensions.py::test_an_unregistered_objective_is_refused_in_one_line',)),
    Mutant('sampled_estimator_reparameterized', 'vae/evaluation/gradient_estimators.py',
           'z = jax.lax.stop_gradient(objectives.reparameterize(key, mean, logvar, num_samples))',
           'z = objectives.reparameterize(key, mean, logvar, num_samples)',
           ('tests/evaluation/test_latent_tools.py::'
            'test_sampling_without_reparameterization_gives_zero_encoder_gradient',)),
    Mutant('aggregate_posterior_unnormalized', 'vae/evaluation/latent_space.py',
           'return jax.nn.logsumexp(lp, axis=1) - jnp.log(n)',
           'return jax.nn.logsumexp(lp, axis=1)', ('tests/evaluation/test_latent_space.py',)),
    Mutant('report_error_bar_not_over_root_n', 'vae/evaluation/report.py',
           'se = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v)))',
           'se = lambda v: float(np.std(v, ddof=1))',
           ('tests/evaluation/test_estimates.py::test_evaluate_script_writes_eval_json',)),
    Mutant('loaded_model_drops_the_prior_state', 'vae/evaluation/trained.py',
           'self.model, p, s, d, 0 if d is None else d.shape[0]))(self.params, self.prior_state,',
           'self.model, p, s, d, 0 if d is None else d.shape[0]))(self.params, {},',
           ('tests/test_extensions.py::'
            'test_a_prior_with_state_keeps_its_bank_in_the_train_state_and_vae_load',)),
)


def apply(mutant, root):
  """Writes the mutant into the tree at `root` (ValueError if its snippet is missing)."""
  path = pathlib.Path(root) / mutant.path
  text = path.read_text()
  start = -1
  for _ in range(mutant.nth + 1):
    start = text.find(mutant.old, start + 1)
    if start < 0:
      raise ValueError(f'{mutant.name}: occurrence {mutant.nth} of {mutant.old!r} is not in '
                       f'{mutant.path}; update MUTANTS in scripts/mutation_test.py')
  path.write_text(text[:start] + mutant.new + text[start + len(mutant.old):])


def run(mutant, timeout_s):
  """Runs the mutant's tests in a fresh copy of the tree: (status, seconds)."""
  t0 = time.time()
  with tempfile.TemporaryDirectory(prefix=f'mutant_{mutant.name}_') as tmp:
    root = pathlib.Path(tmp) / 'repo'
    shutil.copytree(REPO, root, ignore=IGNORE)
    apply(mutant, root)
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE='1')
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *mutant.tests]
    try:
      proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True,
                            timeout=timeout_s)
      # pytest's 1: tests failed. Anything else (2-5: collection error, interrupted, usage,
      # no tests) says the run itself broke, which is no evidence that the tests caught it.
      status = {0: 'survived', 1: 'killed'}.get(proc.returncode,
                                                 f'error (pytest exit {proc.returncode})')
    except subprocess.TimeoutExpired:
      status = 'killed (timeout)'
  return status, time.time() - t0


def main(argv=None):
  p = cli.ArgumentParser(description=__doc__)
  p.add_argument('--only', default='', help='run the mutants whose name contains this string')
  p.add_argument('--list', action='store_true', help='print the mutants and exit')
  p.add_argument('--timeout_s', type=float, default=600.0, help='per mutant')
  p.add_argument('--out', default='', help='also write the results as JSON to this file')
  args = p.parse_args(argv)
  chosen = [m for m in MUTANTS if args.only in m.name]
  if not chosen:
    print(f'error: no mutant name contains {args.only!r}; see --list', file=sys.stderr)
    return 2
  try:
    with tempfile.TemporaryDirectory() as tmp:  # every snippet is still where it was
      for m in chosen:
        (pathlib.Path(tmp) / m.path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / m.path, pathlib.Path(tmp) / m.path)
        apply(m, tmp)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  if args.list:
    for m in chosen:
      print(f'{m.name:34s} {m.path:24s} {m.old!r} -> {m.new!r}')
    return 0
  results = []
  for m in chosen:
    status, seconds = run(m, args.timeout_s)
    expected = 'survived' if m.equivalent else 'killed'
    results.append(dict(name=m.name, path=m.path, old=m.old, new=m.new, tests=list(m.tests),
                        status=status, seconds=round(seconds, 1), equivalent=m.equivalent))
    print(f'{status:17s} {seconds:6.1f} s  {m.name}' +
          ('' if status.startswith(expected) else '   <- unexpected'), flush=True)
  killed = sum(r['status'].startswith('killed') for r in results)
  errors = [r['name'] for r in results if r['status'].startswith('error')]
  real = [r for r in results if not r['equivalent']]
  missed = [r['name'] for r in real if r['status'] == 'survived']
  print(f'score: {killed} of {len(results)} killed ({killed / len(results):.0%}); '
        f'{len(real) - len(missed)} of {len(real)} non-equivalent mutants killed'
        + (f'; survivors: {", ".join(missed)}' if missed else ''))
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + '\n')
  if errors:
    print(f'error: the tests of {", ".join(errors)} did not run; rerun with --only NAME and '
          'read pytest\'s output', file=sys.stderr)
    return 2
  return 1 if missed else 0


if __name__ == '__main__':
  sys.exit(main())
