"""The benchmark suites whose JSON figures docs/benchmarks.md cites: `full` (the machine's
matmul rate; training, sweep, conv, evaluation and importance-sampling throughput as shares
of it; launch to first step; before/after rows), `host_loop` (the loop around the step, on a
model so small that the loop is what is left) and `lean_step` (the compiled chunk against a
minimal loop, and what each per-step extra costs). Configs and data come from the caller
(scripts/benchmark.py), so the library names no experiment."""

import json
import resource
import subprocess
import sys
import time

import jax
import numpy as np

from vae import config_lib
from vae.benchmarking import launches, programs, timing
from vae.data import input_pipeline
from vae.sweeps import plan
from vae.training import loop, step as step_lib


def host_loop(tiny, images, epochs, rounds, trainer, base_trainer=None, base_name=None):
  """The CPU stand-in for what a GPU exposes (a model so small that the host loop is what
  is left): the tiny model (`launches.TINY`; `tiny` its config) through `trainer` at default
  cadence, beside a minimal jitted scan loop of the same model on `images` and beside
  `base_trainer` (another checkout's train.py, named `base_name`), in interleaved rounds."""
  out = {'command': ' '.join(['python train.py --config',
                              launches.TINY[0].format(epochs=epochs), *launches.TINY[1:],
                              '--workdir W']),
         'epochs': epochs, 'steady_from_epoch': 2, 'rounds': []}
  for _ in range(rounds):
    row = {'plain_jax_scan': programs.plain_jax_epoch(images[:50000], 3, hidden=32, latent=2)}
    row['train_py'], recorded = launches.epochs_rate(trainer, epochs)
    row['host_stall_share'] = None if recorded is None else recorded['steady']['host_stall_share']
    if base_trainer is not None:
      row['base_train_py'] = launches.epochs_rate(base_trainer, epochs)[0]
    out['rounds'].append(row)
  # Where the step's time goes (the host is not in it): the same model's compiled chunk.
  out['profile_train_tiny'] = programs.profile_train(tiny, (28, 28, 1), 300)
  med = lambda k: float(np.median([r[k] for r in out['rounds']]))
  out['train_py_examples_per_s'] = med('train_py')
  out['plain_jax_scan_examples_per_s'] = med('plain_jax_scan')
  out['train_py_share_of_plain'] = float(np.median(
      [r['train_py'] / r['plain_jax_scan'] for r in out['rounds']]))
  if base_trainer is not None:
    out['base'] = base_name
    out['base_train_py_examples_per_s'] = med('base_train_py')
    out['train_py_speedup_vs_base'] = float(np.median(
        [r['train_py'] / r['base_train_py'] for r in out['rounds']]))
  return out


# What --lean_step --base runs in the base checkout (its own code, its own process): the
# tiny model's chunk, from the config.json-style dict it is given, and the minimal scan loop,
# as the rows of this suite measure them.
BASE_LEAN_STEP = """
import json, sys
import numpy as np
from vae import config_lib
from vae.benchmarking import programs
repeats, tiny = int(sys.argv[1]), config_lib.with_saved_values(json.loads(sys.argv[2]))
images = np.random.default_rng(0).integers(0, 256, (50000, 28, 28, 1)).astype(np.uint8)
print(json.dumps({'plain_jax_scan': programs.plain_jax_epoch(images, repeats, hidden=32, latent=2),
                  'chunk': programs.chunk_rate(tiny, (28, 28, 1), repeats)}))
"""


def base_lean_rates(base, tiny, repeats):
  """{'chunk', 'plain_jax_scan'} examples/s of the `tiny` config measured by the checkout
  `base` (a `launches.Trainer`'s cwd and environment) in a process of its own."""
  # 'auto' fields resolved to their numbers, which an older checkout's schema types
  resolved = plan.apply_overrides(tiny, {'train.eval_every_epochs':
                                         loop.eval_every_epochs(tiny.train)})
  proc = subprocess.run([sys.executable, '-c', BASE_LEAN_STEP, str(repeats),
                         json.dumps(config_lib.config_json(resolved))], cwd=base.cwd,
                        env=base.env, capture_output=True, text=True, check=True)
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _lean_round(tiny, mlp, images, repeats, extras):
  row = {'plain_jax_scan': programs.plain_jax_epoch(images, repeats, hidden=32, latent=2),
         'chunk': programs.chunk_rate(tiny, (28, 28, 1), repeats)}
  if extras:
    row['chunk_order_drawn_each_chunk'] = programs.chunk_rate(tiny, (28, 28, 1), repeats,
                                                              carry_order=False)
    for name, over in programs.STEP_EXTRAS:
      row[name] = programs.chunk_rate(plan.apply_overrides(tiny, over), (28, 28, 1), repeats)
    row['default_model_chunk'] = programs.chunk_rate(mlp, (28, 28, 1), repeats)
    row['default_model_chunk_bernoulli_autodiff'] = programs.chunk_rate(
        plan.apply_overrides(mlp, {'model.bernoulli_impl': 'autodiff'}), (28, 28, 1), repeats)
  return row


def lean_step(tiny, mlp, rounds, repeats=3, base=None, base_name=None):
  """The compiled step against a minimal loop, on the CPU stand-in: the
  tiny model's chunks over one epoch of 50,000 examples (chunks of 100 steps, the log
  cadence, the permutation carried as train.py carries it) beside the minimal scan loop
  (one scan over the epoch), in interleaved rounds; then, in the
  same rounds, the chunk with each per-step extra a config switches on, the chunk that draws
  its epoch's permutation afresh (what every chunk did before), and the default model.

  With `base` (another checkout, a `launches.Trainer`, named `base_name`), each round also
  measures that checkout's chunk and minimal loop in a process of its own (the order of the
  two alternating between rounds), and the extras are left out: the figure is the ratio of
  the two chunk / minimal-loop shares (`lean_share_vs_base`)."""
  images = np.random.default_rng(0).integers(0, 256, (50000, 28, 28, 1)).astype(np.uint8)
  steps = 50000 // tiny.train.batch_size
  out = {'model': 'pytorch_example with hidden (32,), latent 2, batch 128 (784-32-2)',
         'steps_per_epoch': steps, 'steps_per_chunk': 100, 'rounds': []}
  for i in range(rounds):
    if base is not None and i % 2:
      base_row = base_lean_rates(base, tiny, repeats)
    row = _lean_round(tiny, mlp, images, repeats, extras=base is None)
    if base is not None:
      row.update({f'base_{k}': v for k, v in (
          base_row if i % 2 else base_lean_rates(base, tiny, repeats)).items()})
    out['rounds'].append(row)
    print(json.dumps(row), flush=True)
  if base is not None:
    med = lambda f: float(np.median([f(r) for r in out['rounds']]))
    out['base'] = base_name
    out['chunk_share_of_plain'] = med(lambda r: r['chunk'] / r['plain_jax_scan'])
    out['base_chunk_share_of_plain'] = med(lambda r: r['base_chunk'] / r['base_plain_jax_scan'])
    out['lean_share_vs_base'] = med(lambda r: (r['chunk'] / r['plain_jax_scan'])
                                    / (r['base_chunk'] / r['base_plain_jax_scan']))
    return out
  med = lambda f: float(np.median([f(r) for r in out['rounds']]))
  out['chunk_share_of_plain'] = med(lambda r: r['chunk'] / r['plain_jax_scan'])
  ms = lambda rate: 1e3 * tiny.train.batch_size / rate
  out['extra_ms_per_step'] = {
      name: med(lambda r, n=name: ms(r[n]) - ms(r['chunk']))
      for name in ['chunk_order_drawn_each_chunk'] + [n for n, _ in programs.STEP_EXTRAS]}
  out['chunk_ms_per_step'] = med(lambda r: ms(r['chunk']))
  out['plain_ms_per_step'] = med(lambda r: ms(r['plain_jax_scan']))
  out['default_model_bernoulli_autodiff_over_default'] = med(
      lambda r: r['default_model_chunk_bernoulli_autodiff'] / r['default_model_chunk'])
  tiny_profile = programs.profile_train(tiny, (28, 28, 1), 300)
  out['profile_train_tiny'] = tiny_profile
  return out


def full(mlp, conv, best, images, spec, trainer, quick=False, no_before=False):
  """The full suite (scripts/benchmark.py without --host_loop / --lean_step).

  Args:
    mlp, conv: the default MLP and conv configs; best: the table's best combination (two
      layers, VampPrior, IAF) for its importance-sampling row.
    images: uint8 [N, 28, 28, 1] for the pytorch/examples rows; spec: the config spec that
      trains that model on the same data, launched through `trainer` (`launches.Trainer`).
    quick: fewer steps and repeats; no_before: skip the before/after rows.
  Returns:
    the figures, as the JSON of docs/benchmarks.md holds them.
  """
  suite = _FullSuite(mlp, conv, best, images, spec, trainer, quick)
  suite.mlp_rows()
  suite.step_and_loop_rows()
  suite.peaks_again()
  suite.conv_rows()
  suite.peaks_again()
  suite.evaluation_rows()
  if not no_before:
    suite.before_after()
  suite.peaks_again()
  return suite.finish()


class _FullSuite:
  """The rows of `full`, each group a method writing into `results`."""

  def __init__(self, mlp, conv, best, images, spec, trainer, quick):
    self.mlp, self.conv, self.best, self.fm, self.spec = mlp, conv, best, images, spec
    self.trainer, self.quick = trainer, quick
    self.repeats = 2 if quick else 5
    self.steps = 50 if quick else 300
    self.rounds = 1 if quick else 3
    self.shape = (28, 28, 1)
    self.bs = mlp.train.batch_size
    self.k = 100 if quick else 1000
    self.n_iw = 200 if quick else 500
    self.n_best = 100 if quick else 250
    self.started = time.time()
    self.results = dict(timing.machine(),
                        default_matmul_precision=str(jax.config.jax_default_matmul_precision))
    self.peak = timing.matmul_peak(self.repeats)
    self.results['matmul_gflops'] = self.peak
    self.ref_peak = self.peak['2048x2048x2048']
    self.peaks = [self.ref_peak]  # the 2048^3 rate again before the conv and IS rows

  def share(self, flops, per_s):
    """The one share formula: achieved FLOP/s over the 2048^3 matmul rate."""
    return flops * per_s / 1e9 / self.ref_peak

  def peaks_again(self):
    self.peaks.append(timing.matmul_peak(max(1, self.repeats // 2))['2048x2048x2048'])

  def throughput(self, config, steps=None, **kw):
    return programs.train_throughput(config, self.shape, steps or self.steps, self.repeats, **kw)

  def mlp_rows(self):
    """The default MLP at batch 128 and 1024, without binarization, in bfloat16."""
    r, mlp, bs = self.results, self.mlp, self.bs
    self.ex_s, self.f_step = self.throughput(mlp)
    fwd = timing.dense_flops(mlp.model, self.shape)
    r['train_mlp'] = {
        'examples_per_s': self.ex_s, 'xla_flops_per_step': self.f_step,
        'analytic_matmul_flops_per_step': 3 * fwd * bs,
        'achieved_gflops': self.f_step * self.ex_s / bs / 1e9,
        'share_of_2048_peak': self.share(self.f_step, self.ex_s / bs),
        'share_of_128x784x500_peak': self.f_step * self.ex_s / bs / 1e9
                                     / self.peak['128x784x500']}
    r['train_mlp_without_binarization'] = {
        'examples_per_s': self.throughput(mlp, mode=input_pipeline.SCALE)[0]}
    big = plan.apply_overrides(mlp, {'train.batch_size': 1024})
    ex_s_big, f_big = self.throughput(big, max(10, self.steps // 8))
    r['train_mlp_batch1024'] = {'examples_per_s': ex_s_big, 'xla_flops_per_step': f_big,
                                'share_of_2048_peak': self.share(f_big, ex_s_big / 1024)}
    # bfloat16 layers (parameters, losses and the optimizer stay fp32).
    for b in (128, 1024):
      cfg = plan.apply_overrides(mlp, {'train.batch_size': b, 'model.compute_dtype': 'bfloat16'})
      rate, _ = self.throughput(cfg, max(10, self.steps // (1 if b == 128 else 8)))
      f32 = self.ex_s if b == 128 else ex_s_big
      r[f'train_mlp_bf16_batch{b}'] = {'examples_per_s': rate, 'speedup_vs_float32': rate / f32}

  def step_and_loop_rows(self):
    """The step against its matmul twin, train.py against a minimal loop, 8 members vs one.
    Ratios of two timings come from interleaved rounds (a, b, a, b, ...), their median
    reported: on a shared machine the speed drifts by 10-30 % within minutes."""
    r, mlp, bs, shape, steps, repeats = (self.results, self.mlp, self.bs, self.shape,
                                         self.steps, self.repeats)
    twin_flops = programs.matmul_twin(mlp.model, shape, bs, 1)[1]
    pairs = timing.interleaved(
        lambda: programs.matmul_twin(mlp.model, shape, bs, repeats)[0],
        lambda: bs / self.throughput(mlp)[0], self.rounds)
    self.twin_s, step_s = (float(np.median(v)) for v in zip(*pairs))
    r['train_mlp_vs_matmul_twin'] = {
        'step_ms': 1e3 * step_s, 'twin_step_ms': 1e3 * self.twin_s,
        'step_share_of_twin_speed': timing.median_ratio(pairs),
        'rounds_twin_ms_step_ms': [(1e3 * a, 1e3 * b) for a, b in pairs],
        'twin_xla_flops_per_step': twin_flops, 'step_xla_flops_per_step': self.f_step}
    r['profile_train_mlp'] = programs.profile_train(mlp, shape, min(steps, 100))
    # The pytorch/examples model: a minimal plain-JAX loop vs the same model through train.py.
    pairs = timing.interleaved(
        lambda: programs.plain_jax_epoch(self.fm, max(2, repeats // 2)),
        lambda: launches.steady_examples_per_s(self.trainer, self.spec,
                                               1.0 if self.quick else 3.0), self.rounds)
    plain, ours = (float(np.median(v)) for v in zip(*pairs))
    r['pytorch_example_model'] = {
        'plain_jax_scan_examples_per_s': plain, 'train_py_steady_examples_per_s': ours,
        'train_py_slowdown_vs_plain_jax': timing.median_ratio(pairs),
        'rounds_plain_ours_examples_per_s': pairs}
    pairs = timing.interleaved(
        lambda: programs.sweep_throughput(mlp, shape, 8, max(10, steps // 4), repeats),
        lambda: self.throughput(mlp)[0], self.rounds)
    r['sweep_vmap_8_members'] = {  # the key predates train.member_loop
        'member_loop': step_lib.member_loop(mlp, 1, jax.default_backend()),
        'examples_per_s_all_members': float(np.median([a for a, _ in pairs])),
        'speedup_vs_one_model': timing.median_ratio(pairs),
        'rounds_8_members_one_model_examples_per_s': pairs}
    r['profile_vmap_8_members'] = programs.profile_train(mlp, shape, min(steps, 50), 8)
    if jax.default_backend() != 'cpu':  # an accelerator has room for more members at once
      rate = programs.sweep_throughput(mlp, shape, 32, max(10, steps // 4), repeats)
      r['sweep_vmap_32_members'] = {'examples_per_s_all_members': rate,
                                    'speedup_vs_one_model': rate / self.ex_s}

  def conv_rows(self):
    conv, shape = self.conv, self.shape
    ex_s, f_conv = programs.train_throughput(conv, shape, max(5, self.steps // 15),
                                             min(self.repeats, 3))
    conv_device = plan.apply_overrides(conv, {'train.loop': 'device'})
    ex_s_device, _ = programs.train_throughput(conv_device, shape, 3, 1)
    cfw = timing.conv_flops(conv.model, shape)
    self.results['train_conv'] = {
        'examples_per_s': ex_s, 'xla_flops_per_step': f_conv,
        'analytic_flops_per_step': 3 * cfw * conv.train.batch_size,
        'achieved_gflops': f_conv * ex_s / conv.train.batch_size / 1e9,
        'share_of_2048_peak': self.share(f_conv, ex_s / conv.train.batch_size),
        'examples_per_s_in_device_while_loop': ex_s_device}

  def evaluation_rows(self):
    """Evaluation, importance sampling (default and best models), launch, host memory."""
    r, mlp, shape, k, n_iw = self.results, self.mlp, self.shape, self.k, self.n_iw
    r['eval_examples_per_s'] = programs.eval_throughput(mlp, shape, 5000, self.repeats)
    iw_rate = programs.eval_throughput(mlp, shape, n_iw, max(1, self.repeats // 2),
                                       iw_samples=k)
    self.f_chunk = programs.iw_chunk_flops(mlp, shape, min(n_iw, 500))
    chunks_per_s = iw_rate / min(n_iw, 500) * (k / 100)
    r['importance_sampling'] = {
        'k': k, 'examples_per_s': iw_rate, 'samples_per_s': iw_rate * k,
        'xla_flops_per_chunk_of_100_samples_for_a_batch': self.f_chunk,
        'analytic_decoder_flops_per_sample': timing.dense_flops(mlp.model, shape) / 2,
        'achieved_gflops': self.f_chunk * chunks_per_s / 1e9,
        'share_of_2048_peak': self.share(self.f_chunk, chunks_per_s),
        'seconds_for_k5000_on_10000': 10000 * 5000 / (iw_rate * k)}
    r['programs.profile_importance_sampling'] = programs.profile_importance_sampling(
        mlp, shape, min(n_iw, 500), 200)
    # The table's best combination (two layers, VampPrior, IAF; gated 300-300, z = 40 + 40).
    r['importance_sampling_two_layer_vamp_iaf'] = {
        'k': k, 'examples_per_s': programs.eval_throughput(self.best, shape, self.n_best, 1,
                                                           iw_samples=k)}
    self.cold, self.warm = launches.first_step_seconds(self.trainer)
    r['seconds_to_first_step'] = {'cold_compilation_cache': self.cold,
                                  'warm_compilation_cache': self.warm}
    r['peak_host_memory_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

  def _interleaved_iw(self):
    """(default model pairs, best model pairs) of importance sampling, old vs new code."""
    k, n_iw, shape = self.k, self.n_iw, self.shape
    iw = lambda: programs.eval_throughput(self.mlp, shape, n_iw, max(1, self.repeats // 2),
                                          iw_samples=k)
    iw_old = lambda: programs.eval_throughput(self.mlp, shape, n_iw, max(1, self.repeats // 2),
                                              iw_samples=k, iw_options=programs.OLD_IW)
    iw_best = lambda: programs.eval_throughput(self.best, shape, self.n_best, 1, iw_samples=k)
    iw_best_old = lambda: programs.eval_throughput(self.best, shape, self.n_best, 1,
                                                   iw_samples=k,
                                                   q_z1_input=programs.OLD_Q_Z1_INPUT)
    return (timing.interleaved(iw_old, iw, self.rounds),
            timing.interleaved(iw_best_old, iw_best, self.rounds))

  def before_after(self):
    """The rows again with the older behaviour, in this same run."""
    mlp, bs, shape, steps, repeats, rounds = (self.mlp, self.bs, self.shape, self.steps,
                                              self.repeats, self.rounds)
    steps_pairs = timing.interleaved(
        lambda: bs / self.throughput(programs.legacy(mlp))[0],
        lambda: bs / self.throughput(mlp)[0], rounds)
    step_old, step_new = (float(np.median(v)) for v in zip(*steps_pairs))
    legacy_args = [f'--config.{k}={v}' for k, v in config_lib.LEGACY_VALUES.items()]
    torch_pairs = timing.interleaved(
        lambda: programs.plain_jax_epoch(self.fm, max(2, repeats // 2)),
        lambda: launches.steady_examples_per_s(self.trainer, self.spec,
                                               1.0 if self.quick else 3.0, legacy_args),
        rounds)
    iw_pairs, iw_best_pairs = self._interleaved_iw()
    vmap_pairs = timing.interleaved(
        lambda: programs.sweep_throughput(programs.legacy(mlp), shape, 8, max(10, steps // 4),
                                          repeats),
        lambda: self.throughput(programs.legacy(mlp))[0], rounds)
    iw_share = lambda rate: self.share(self.f_chunk, rate / min(self.n_iw, 500) * (self.k / 100))
    iw_seconds = lambda rate: 10000 * 5000 / (rate * self.k)
    medians = lambda pairs, f: tuple(f(float(np.median(v))) for v in zip(*pairs))
    r = self.results
    r['before_after'] = {  # (before, after), each the median over interleaved rounds
        'default_step_ms': (1e3 * step_old, 1e3 * step_new),
        'step_share_of_matmul_twin': (self.twin_s / step_old, self.twin_s / step_new),
        'pytorch_model_train_py_slowdown': (
            timing.median_ratio(torch_pairs),
            r['pytorch_example_model']['train_py_slowdown_vs_plain_jax']),
        'importance_sampling_share_of_peak': medians(iw_pairs, iw_share),
        'importance_sampling_seconds_k5000_on_10000': medians(iw_pairs, iw_seconds),
        'importance_sampling_two_layer_vamp_iaf_seconds_k5000_on_10000': medians(
            iw_best_pairs, iw_seconds),
        'vmap_8_members_vs_one_model': (
            timing.median_ratio(vmap_pairs), r['sweep_vmap_8_members']['speedup_vs_one_model'])}

  def finish(self):
    """Every share against the highest 2048^3 rate of the run (at its start, before the conv
    and importance-sampling rows, at its end): a machine slowed at one moment must not make
    the shares look high. Then the headline rows against their targets."""
    r = self.results
    scale = self.ref_peak / max(self.peaks)
    r['matmul_2048_gflops_samples'] = self.peaks
    r['share_reference_gflops'] = max(self.peaks)
    for row in ('train_mlp', 'train_mlp_batch1024', 'train_conv', 'importance_sampling'):
      r[row]['share_of_2048_peak'] *= scale
    if 'before_after' in r:
      r['before_after']['importance_sampling_share_of_peak'] = tuple(
          v * scale for v in r['before_after']['importance_sampling_share_of_peak'])
    r['targets'] = {  # each headline row: (measured, the figure aimed at)
        'step_share_of_matmul_twin': (
            r['train_mlp_vs_matmul_twin']['step_share_of_twin_speed'], '>= 0.80'),
        'pytorch_model_train_py_slowdown': (
            r['pytorch_example_model']['train_py_slowdown_vs_plain_jax'], '<= 1.05'),
        'importance_sampling_share_of_peak': (
            r['importance_sampling']['share_of_2048_peak'], '>= 0.60'),
        'conv_training_share_of_peak': (r['train_conv']['share_of_2048_peak'], '>= 0.50'),
        'vmap_8_members_vs_one_model': (
            r['sweep_vmap_8_members']['speedup_vs_one_model'], '>= 1.0'),
        'seconds_to_first_step_cold_cache': (self.cold, '<= 5 (EPYC), 8 (Xeon)'),
        'seconds_to_first_step_warm_cache': (self.warm, '<= 5 (EPYC), 8 (Xeon)')}
    r['wall_seconds'] = time.time() - self.started
    return r


def print_table(results):
  """The full suite's figures as a two-column table on stdout."""
  print(f'{"measure":<44} value')
  for key, value in results.items():
    if key.startswith('profile_') and value:
      print(f'{key + ".wall_ms":<44} {value["wall_ms"]:.4g}')
      for cat, ms in value['ms_per_category'].items():
        print(f'{key + "." + cat + "_ms":<44} {ms:.4g}')
    elif isinstance(value, dict):
      for k2, v2 in value.items():
        print(f'{key + "." + k2:<44} {v2:.4g}' if isinstance(v2, float) else
              f'{key + "." + k2:<44} {v2}')
    else:
      print(f'{key:<44} {value:.4g}' if isinstance(value, float) else f'{key:<44} {value}')


def family_costs(named_configs, image_shape, repeats=2, iw_samples=100, iw_examples=100):
  """What each model family costs on this machine: {name: training examples/s of the loop's
  compiled chunk, XLA FLOPs of one step, importance-sampling examples/s with `iw_samples`
  samples each, and the k = 5000 evaluation of 10,000 test images extrapolated in hours}.
  A chunk of a family slower than 1,000 examples/s runs 5 steps, others 100."""
  out = {}
  for name, config in named_configs.items():
    probe = programs.train_throughput(config, image_shape, 2, 1)[0]
    steps = 5 if probe < 1000 else 100
    rate, flops = programs.train_throughput(config, image_shape, steps, repeats)
    iw = programs.eval_throughput(config, image_shape, iw_examples, 1, iw_samples=iw_samples)
    out[name] = {'train_examples_per_s': rate, 'xla_flops_per_step': flops,
                 'batch_size': config.train.batch_size,
                 f'iw_k{iw_samples}_examples_per_s': iw,
                 'k5000_test_10000_hours': 10000 * 5000 / (iw * iw_samples) / 3600}
    print(name, json.dumps(out[name]), flush=True)
  return out
