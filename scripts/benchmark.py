"""Speed against the machine's limit: python scripts/benchmark.py [--quick] [--out FILE].

Measures, in one process (so all ratios share the machine's current load):
  - the fp32 matmul peak (2048^3 product, and the 128x784 @ 784x500 shape);
  - training examples/s and achieved FLOP/s of the default MLP and a conv
    config, as a share of that peak. Every share has the same formula:
      share = F x (units of work per second) / (the 2048^3 matmul rate),
    F = the FLOPs XLA's cost_analysis() counts in the compiled program of one
    unit of work (one training step; one chunk of importance samples for one
    batch); analytic matmul counts are listed beside them;
  - the default step against its matmul-only twin, the pytorch/examples model
    through train.py against a minimal plain-JAX loop, 8 members in one group
    program (sweep --mode vmap, with train.member_loop's default: map on one CPU device,
    vmap elsewhere; the "before" column: vmap) against one model;
  - where the step's and the importance sampler's time goes (vae/profiling.py:
    a profiler trace summed over matmul, rng, likelihood, optimizer, norms, ...);
  - the same MLP step without dynamic binarization (what the RNG costs);
  - seconds from launching `train.py` to its first finished step, with an empty and with
    a warm compilation cache;
  - evaluation and importance-sampling throughput;
  - peak host memory.
Writes runs/benchmarks.json (default; --out FILE) and prints a table. Timings are medians of
repeated runs after a warm-up; every ratio of two timings (step vs twin, train.py vs plain
JAX, 8 members vs one, before vs after) is the median over 3 interleaved rounds (1 with
--quick); every share is taken against the highest 2048^3 rate measured in the run (at its
start, before the conv and importance-sampling rows, and at its end). The figures belong
in docs/benchmarks.md.
"""

import json
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import numpy as np
import optax

from configs import default, fashion_mnist_gated, pytorch_example  # pylint: disable=g-import-not-at-top
from vae import data as data_lib, evaluation, input_pipeline, loop, members, models, profiling
from vae import cli, config_lib, sharding, step as step_lib, sweeps

REPO = pathlib.Path(__file__).resolve().parents[1]


def timed(fn, repeats):
  """Median seconds of fn() (which must block) over `repeats` runs after one warm-up."""
  fn()
  times = []
  for _ in range(repeats):
    t = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times))


def interleaved(a, b, rounds):
  """[(a(), b()), ...] over `rounds` alternating rounds: two timings to compare, taken in
  turn so that a drift of the machine's speed falls on both."""
  return [(a(), b()) for _ in range(rounds)]


def median_ratio(pairs):
  """The median of a / b over interleaved (a, b) rounds."""
  return float(np.median([a / b for a, b in pairs]))


def matmul_peak(repeats):
  """GFLOP/s of fp32 products (2048^3 and the step's 128x784x500 shape); on an accelerator
  also an 8192^3 product in fp32 and in bfloat16 (its matrix units' rate)."""
  out = {}
  shapes = {'2048x2048x2048': (2048, 2048, 2048, jnp.float32),
            '128x784x500': (128, 784, 500, jnp.float32)}
  if jax.default_backend() != 'cpu':
    shapes['8192x8192x8192'] = (8192, 8192, 8192, jnp.float32)
    shapes['8192x8192x8192_bf16'] = (8192, 8192, 8192, jnp.bfloat16)
  for name, (m, k, n, dtype) in shapes.items():
    a = jax.random.normal(jax.random.key(0), (m, k), dtype)
    b = jax.random.normal(jax.random.key(1), (k, n), dtype)
    flop_per_call = 2e10 if jax.default_backend() == 'cpu' else 2e13
    inner = max(1, int(flop_per_call // (2 * m * k * n)))  # ~20 GFLOP (CPU) per timed call

    @jax.jit
    def f(a, b):
      def body(i, acc):
        return acc + jnp.dot(a + i.astype(a.dtype) * 1e-9, b)
      return jax.lax.fori_loop(0, inner, body, jnp.zeros((m, n), a.dtype))

    sec = timed(lambda: f(a, b).block_until_ready(), repeats)
    out[name] = 2 * m * k * n * inner / sec / 1e9
  return out


def dense_flops(model_config, image_shape):
  """Analytic forward FLOPs per example (2 per multiply-add) of the MLP VAE."""
  d_in = int(np.prod(image_shape))
  mc = model_config
  gate = 2 if mc.gated else 1
  enc = [d_in] + list(mc.hidden)
  dec = [mc.latent_dim] + list(reversed(mc.hidden))
  flops = sum(2 * gate * a * b for a, b in zip(enc[:-1], enc[1:]))
  flops += 2 * enc[-1] * 2 * mc.latent_dim
  flops += sum(2 * gate * a * b for a, b in zip(dec[:-1], dec[1:]))
  flops += 2 * dec[-1] * d_in
  return flops


def conv_flops(model_config, image_shape):
  """Analytic forward FLOPs per example of the conv VAE (4x4 stride-2 convs)."""
  mc = model_config
  h, w, c = image_shape
  flops, ch_in, hh, ww = 0, c, h, w
  for ch in mc.conv_channels:  # encoder
    hh, ww = hh // 2, ww // 2
    flops += 2 * hh * ww * ch * ch_in * 16
    ch_in = ch
  flat = hh * ww * ch_in
  flops += 2 * flat * mc.conv_dense + 2 * mc.conv_dense * 2 * mc.latent_dim
  flops += 2 * mc.latent_dim * mc.conv_dense + 2 * mc.conv_dense * flat  # decoder dense
  chans = list(reversed(mc.conv_channels))
  ch_in = chans[0]
  for ch in chans:
    if mc.conv_upsample == 'transpose':  # 4x4 stride 2: 16/4 taps per output pixel
      flops += 2 * (hh * 2) * (ww * 2) * ch * ch_in * 4
    else:  # 3x3 conv to 4 ch at the low resolution, then a pixel shuffle
      flops += 2 * hh * ww * 4 * ch * ch_in * 9
    hh, ww = hh * 2, ww * 2
    ch_in = ch
  flops += 2 * h * w * ch_in * c * 9
  return flops


def _group(configs, image_shape, mode=None, batched=False):
  """The loop's program (`members.Group`, the same one train.py runs) on device-resident
  random uint8 data: (group, images, initial state)."""
  schedule = loop.Schedule(100, 10_000, 100, 100, 100)
  bs = configs[0].train.batch_size
  if mode == input_pipeline.SCALE:  # pixels scaled, no binarization draw in the step
    configs = [sweeps.apply_overrides(c, {'data.binarize': 'static'}) for c in configs]
  mesh = sharding.make_model_mesh(len(configs) if batched else 1)
  group = members.Group(configs, image_shape, schedule, mesh, False, 100 * bs, batched)
  images = sharding.put_examples(
      np.random.default_rng(0).integers(0, 256, (100 * bs,) + image_shape).astype(np.uint8), mesh)
  return group, images, group.init()


def step_flops(group, image_shape):
  """XLA's cost-analysis FLOPs of one training step of one model (a loop-free program)."""
  state = jax.eval_shape(group.init)
  if group.batched:
    state = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), state)
  x = jax.ShapeDtypeStruct((group.configs[0].train.batch_size,) + image_shape, jnp.uint8)
  hp = jax.tree.map(lambda a: a[0] if group.batched else a, group.hp)
  return _xla_flops(jax.jit(group.train_step), state, x, hp, True)


def _group_throughput(configs, image_shape, steps, repeats, mode=None, batched=False):
  """Examples/s summed over the members of the loop's program."""
  group, images, state = _group(configs, image_shape, mode, batched)
  holder = {'state': state, 'order': group.no_order(images)}

  def run():
    s, m, _, holder['order'] = group.chunk_fn(holder['state'], images, group.data_keys,
                                              group.hp, steps, holder['order'])
    jax.block_until_ready(m)
    holder['state'] = s

  return len(configs) * steps * configs[0].train.batch_size / timed(run, repeats), group


def profile_train(config, image_shape, steps, num_members=None):
  """vae/profiling.py's breakdown of one chunk of `steps` training steps, per step of one
  model; with `num_members`, of a group program (betas 0.25..8), per member-step."""
  configs = [config] if num_members is None else _beta_members(config, num_members)
  group, images, state = _group(configs, image_shape, batched=num_members is not None)
  if group.options.chunk_loop != 'device':
    return None  # the host loop is many programs; profile the device loop's single one
  chunk = jax.jit(lambda st, data, keys, hp, order: group.chunk_fn(st, data, keys, hp, steps,
                                                                   order))
  return profiling.time_by_category(
      chunk, (state, images, group.data_keys, group.hp, group.no_order(images)),
      steps * len(configs))


def _beta_members(config, num_members):
  return [sweeps.apply_overrides(config, {'objective.beta': float(b), 'seed': i})
          for i, b in enumerate(np.linspace(0.25, 8.0, num_members))]


def train_throughput(config, image_shape, steps, repeats, mode=None):
  """(examples/s, XLA FLOPs of one step) of one model's compiled chunk."""
  rate, group = _group_throughput([config], image_shape, steps, repeats, mode)
  return rate, step_flops(group, image_shape)


def sweep_throughput(config, image_shape, num_members, steps, repeats):
  """Examples/s summed over `num_members` models (betas 0.25..8) in one group program
  (members vmapped or mapped: `config.train.member_loop`)."""
  return _group_throughput(_beta_members(config, num_members), image_shape, steps, repeats,
                           batched=True)[0]


def legacy(config):
  """`config` with config_lib.LEGACY_VALUES: what the same run computed before the speed
  fields (float32 binarization draws, norms at every step), for the before/after rows."""
  return sweeps.apply_overrides(config, dict(config_lib.LEGACY_VALUES))


class old_importance_sampler:  # pylint: disable=invalid-name
  """Context: the earlier importance-sampling estimator (the per-pixel
  Bernoulli sum x l - softplus(l), whole chunks decoded at once)."""

  def __enter__(self):
    self.saved = evaluation.IW_GROUPED_LOGS, evaluation.IW_DECODE_ROWS_CPU
    evaluation.IW_GROUPED_LOGS, evaluation.IW_DECODE_ROWS_CPU = False, 10**12

  def __exit__(self, *exc):
    evaluation.IW_GROUPED_LOGS, evaluation.IW_DECODE_ROWS_CPU = self.saved


class concatenated_q_z1:  # pylint: disable=invalid-name
  """Context: the two-level model's q(z1 | x, z2) on the broadcast concatenation [x, z2]
  under sample axes, the earlier form (x's part of the first layer computed for every sample)."""

  def __enter__(self):
    models.MLPEncoder.accepts_shared_input = False

  def __exit__(self, *exc):
    models.MLPEncoder.accepts_shared_input = True


def first_step_seconds():
  """Wall seconds from launching train.py (default config) to its first metrics event:
  (cold: an empty compilation cache, warm: the same launch again, reusing the programs the
  first one compiled; vae/cli.py's persistent cache)."""
  with tempfile.TemporaryDirectory() as cache:
    env = dict(os.environ, VAE_COMPILATION_CACHE=cache)
    return tuple(_launch_to_first_event(env) for _ in range(2))


def _launch_to_first_event(env):
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, str(REPO / 'train.py'), '--config', 'configs/default.py',
           '--workdir', tmp, '--config.train.log_every_steps=1']
    t0 = time.time()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = pathlib.Path(tmp) / 'metrics.jsonl'
    try:
      while time.time() - t0 < 300:
        if metrics.exists() and metrics.stat().st_size > 0:
          return time.time() - t0
        if proc.poll() is not None:
          return None
        time.sleep(0.02)
    finally:
      proc.kill()
      proc.wait()
  return None


def eval_throughput(config, image_shape, n, repeats, iw_samples=0, chunk=100):
  """Examples/s of the evaluator (with `iw_samples` importance samples each, in chunks)."""
  model, params, batches, mask = _eval_inputs(config, image_shape, n)
  fn = jax.jit(evaluation.make_eval_fn(model, input_pipeline.SCALE, iw_samples, chunk))
  sec = timed(lambda: jax.block_until_ready(fn(params, batches, mask, jax.random.key(0))),
              repeats)
  return n / sec


def _eval_inputs(config, image_shape, n):
  model = models.build_model(config.model, image_shape)
  params = model.init(jax.random.key(0), jnp.zeros((1,) + image_shape),
                      jax.random.key(1))['params']
  images = np.random.default_rng(0).integers(0, 2, (n,) + image_shape).astype(np.uint8) * 255
  batches, mask = input_pipeline.pad_to_batches(images, min(n, 500))
  return model, params, jnp.asarray(batches), jnp.asarray(mask)


def iw_chunk_flops(config, image_shape, batch, chunk=100):
  """XLA's FLOPs of one chunk of `chunk` importance samples for a batch of `batch` examples
  (the encoder once and `chunk` decodes), compiled without the CPU's decode tiles so that
  the program has no loop whose body XLA would count once."""
  model, params, _, _ = _eval_inputs(config, image_shape, 1)
  x = jnp.zeros((batch,) + image_shape)
  fn = jax.jit(lambda p, x, k: evaluation.iw_log_likelihood(model, {'params': p}, x, k,
                                                            chunk, chunk))
  saved = evaluation.IW_DECODE_ROWS_CPU
  evaluation.IW_DECODE_ROWS_CPU = 10**12
  try:
    return _xla_flops(fn, params, x, jax.random.key(0))
  finally:
    evaluation.IW_DECODE_ROWS_CPU = saved


def profile_importance_sampling(config, image_shape, n, k, chunk=100):
  """vae/profiling.py's breakdown of the evaluator with k samples, per chunk of one batch."""
  model, params, batches, mask = _eval_inputs(config, image_shape, n)
  fn = jax.jit(evaluation.make_eval_fn(model, input_pipeline.SCALE, k, chunk))
  units = batches.shape[0] * (-(-k // chunk))
  return profiling.time_by_category(fn, (params, batches, mask, jax.random.key(0)), units)


TINY = ('configs/pytorch_example.py:epochs={epochs}', '--config.model.hidden=(32,)',
        '--config.model.latent_dim=2')


def train_py_epochs_rate(repo, epochs, skip_epochs=2, extra=()):
  """train.py (of the checkout at `repo`) on the tiny model at its default cadence
  (evaluation every 5 epochs, checkpoints every 5, a log every 100 steps): examples/s from
  the end of epoch `skip_epochs` (compilation excluded) to the end, evaluations and
  checkpoints included; and its run.json timing (None before the loop recorded it)."""
  spec, *flags = TINY
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, str(pathlib.Path(repo) / 'train.py'), '--config',
           spec.format(epochs=epochs), '--workdir', tmp, *flags, *extra]
    subprocess.run(cmd, cwd=repo, check=True, capture_output=True,
                   env=dict(os.environ, PYTHONPATH=str(repo)))
    events = [json.loads(line) for line in open(pathlib.Path(tmp) / 'metrics.jsonl')]
    session = json.loads((pathlib.Path(tmp) / 'run.json').read_text())['sessions'][-1]
    end_t = session['end']
  train = [e for e in events if e['event'] == 'train']
  spe = train[-1]['step'] / epochs
  start = min((e for e in train if e['step'] >= skip_epochs * spe), key=lambda e: e['step'])
  examples = train[-1]['examples_seen'] - start['examples_seen']
  return examples / (end_t - start['wall_time']), session.get('timing')


def host_loop_stand_in(base_ref, epochs, rounds):
  """The CPU stand-in for what a GPU exposes (a model so small that the host loop is what
  is left): the tiny model through train.py at default cadence, beside a minimal jitted
  scan loop of the same model and beside train.py of `base_ref`, in interleaved rounds."""
  try:
    images = data_lib.load(default.get_config().data).train.images
  except data_lib.DataError:
    images = np.random.default_rng(0).integers(0, 256, (50000, 28, 28, 1)).astype(np.uint8)
  out = {'command': ' '.join(['python train.py --config', TINY[0].format(epochs=epochs),
                              *TINY[1:], '--workdir W']),
         'epochs': epochs, 'steady_from_epoch': 2, 'rounds': []}
  with tempfile.TemporaryDirectory() as tmp:
    base = None
    if base_ref:
      base = pathlib.Path(tmp) / 'base'
      subprocess.run(['git', 'worktree', 'add', '--detach', str(base), base_ref], cwd=REPO,
                     check=True, capture_output=True)
    try:
      for _ in range(rounds):
        row = {'plain_jax_scan': plain_jax_epoch(images[:50000], 3, hidden=32, latent=2)}
        row['train_py'], timing = train_py_epochs_rate(REPO, epochs)
        row['host_stall_share'] = None if timing is None else timing['steady']['host_stall_share']
        if base is not None:
          row['base_train_py'] = train_py_epochs_rate(base, epochs)[0]
        out['rounds'].append(row)
    finally:
      if base is not None:
        subprocess.run(['git', 'worktree', 'remove', '--force', str(base)], cwd=REPO,
                       capture_output=True)
  # Where the step's time goes (the host is not in it): the same model's compiled chunk.
  tiny = sweeps.apply_overrides(pytorch_example.get_config(f'epochs={epochs}'),
                                {'model.hidden': (32,), 'model.latent_dim': 2})
  out['profile_train_tiny'] = profile_train(tiny, (28, 28, 1), 300)
  med = lambda k: float(np.median([r[k] for r in out['rounds']]))
  out['train_py_examples_per_s'] = med('train_py')
  out['plain_jax_scan_examples_per_s'] = med('plain_jax_scan')
  out['train_py_share_of_plain'] = float(np.median(
      [r['train_py'] / r['plain_jax_scan'] for r in out['rounds']]))
  if base_ref:
    out['base'] = base_ref
    out['base_train_py_examples_per_s'] = med('base_train_py')
    out['train_py_speedup_vs_base'] = float(np.median(
        [r['train_py'] / r['base_train_py'] for r in out['rounds']]))
  return out


# The per-step extras of the compiled step that a config switches, each measured against the
# default chunk of the same model: (row name, overrides).
STEP_EXTRAS = (
    ('the Bernoulli by autodiff (model.bernoulli_impl=autodiff)',
     {'model.bernoulli_impl': 'autodiff'}),
    ('norms at every step (train.norm_metrics=mean)', {'train.norm_metrics': 'mean'}),
    ('parameter EMA (optim.ema_decay=0.999)', {'optim.ema_decay': 0.999}),
    ('dynamic binarization, 16 bits (data.binarize=dynamic)', {'data.binarize': 'dynamic'}),
    ('dequantization noise (data.dequantize=True)', {'data.dequantize': True}),
)


def chunk_rate(config, image_shape, repeats, chunk_steps=100, carry_order=True):
  """Examples/s of one model's compiled chunks over one epoch of 50,000 examples, in chunks
  of `chunk_steps` steps as train.py runs them (one per log step: 100 by default), no
  evaluation or checkpoint between them; with carry_order=False each chunk draws its
  epoch's permutation afresh, as every chunk did before chunks handed their order on."""
  steps = 50000 // config.train.batch_size
  group, images, state = _group_epoch(config, image_shape, steps)
  holder = {'state': state, 'order': group.no_order(images)}
  lengths = [min(chunk_steps, steps - i) for i in range(0, steps, chunk_steps)]

  def run():
    for n in lengths:
      order = holder['order'] if carry_order else group.no_order(images)
      holder['state'], m, _, holder['order'] = group.chunk_fn(
          holder['state'], images, group.data_keys, group.hp, n, order)
    jax.block_until_ready(m)

  return steps * config.train.batch_size / timed(run, repeats)


def _group_epoch(config, image_shape, steps):
  schedule = loop.Schedule(steps, 1000 * steps, steps, steps, steps)
  mesh = sharding.make_model_mesh(1)
  n = steps * config.train.batch_size
  group = members.Group([config], image_shape, schedule, mesh, False, n, False)
  images = sharding.put_examples(
      np.random.default_rng(0).integers(0, 256, (n,) + image_shape).astype(np.uint8), mesh)
  return group, images, group.init()


def lean_step_stand_in(rounds, repeats=3):
  """The compiled step against a minimal loop, on the CPU stand-in: the
  tiny model's chunks over one epoch of 50,000 examples (chunks of 100 steps, the log
  cadence, the permutation carried as train.py carries it) beside the minimal scan loop
  (one scan over the epoch), in interleaved rounds; then, in the
  same rounds, the chunk with each per-step extra a config switches on, the chunk that draws
  its epoch's permutation afresh (what every chunk did before), and the default model."""
  images = np.random.default_rng(0).integers(0, 256, (50000, 28, 28, 1)).astype(np.uint8)
  tiny = sweeps.apply_overrides(pytorch_example.get_config('epochs=20'),
                                {'model.hidden': (32,), 'model.latent_dim': 2})
  steps = 50000 // tiny.train.batch_size
  out = {'model': 'pytorch_example with hidden (32,), latent 2, batch 128 (784-32-2)',
         'steps_per_epoch': steps, 'steps_per_chunk': 100, 'rounds': []}
  for _ in range(rounds):
    row = {'plain_jax_scan': plain_jax_epoch(images, repeats, hidden=32, latent=2),
           'chunk': chunk_rate(tiny, (28, 28, 1), repeats),
           'chunk_order_drawn_each_chunk': chunk_rate(tiny, (28, 28, 1), repeats,
                                                      carry_order=False)}
    for name, over in STEP_EXTRAS:
      row[name] = chunk_rate(sweeps.apply_overrides(tiny, over), (28, 28, 1), repeats)
    mlp = default.get_config()
    row['default_model_chunk'] = chunk_rate(mlp, (28, 28, 1), repeats)
    row['default_model_chunk_bernoulli_autodiff'] = chunk_rate(
        sweeps.apply_overrides(mlp, {'model.bernoulli_impl': 'autodiff'}), (28, 28, 1), repeats)
    out['rounds'].append(row)
    print(json.dumps(row), flush=True)
  med = lambda f: float(np.median([f(r) for r in out['rounds']]))
  out['chunk_share_of_plain'] = med(lambda r: r['chunk'] / r['plain_jax_scan'])
  ms = lambda rate: 1e3 * tiny.train.batch_size / rate
  out['extra_ms_per_step'] = {
      name: med(lambda r, n=name: ms(r[n]) - ms(r['chunk']))
      for name in ['chunk_order_drawn_each_chunk'] + [n for n, _ in STEP_EXTRAS]}
  out['chunk_ms_per_step'] = med(lambda r: ms(r['chunk']))
  out['plain_ms_per_step'] = med(lambda r: ms(r['plain_jax_scan']))
  out['default_model_bernoulli_autodiff_over_default'] = med(
      lambda r: r['default_model_chunk_bernoulli_autodiff'] / r['default_model_chunk'])
  tiny_profile = profile_train(tiny, (28, 28, 1), 300)
  out['profile_train_tiny'] = tiny_profile
  return out


def main(argv=None):
  parser = cli.ArgumentParser(description=__doc__)
  parser.add_argument('--quick', action='store_true', help='fewer steps and repeats')
  parser.add_argument('--host_loop', action='store_true',
                      help='only the host-loop stand-in: the tiny model through train.py '
                           'against a minimal scan loop (and --base)')
  parser.add_argument('--lean_step', action='store_true',
                      help='only the compiled step against a minimal loop: the tiny model\'s '
                           'chunk rate, what each per-step extra costs, the default model')
  parser.add_argument('--base', default='',
                      help='with --host_loop: a git commit whose train.py is measured too')
  parser.add_argument('--epochs', type=int, default=20, help='with --host_loop')
  parser.add_argument('--rounds', type=int, default=3,
                      help='with --host_loop or --lean_step')
  parser.add_argument('--no_before', action='store_true',
                      help='skip the before/after rows (the older behaviour, measured again)')
  parser.add_argument('--out', default='runs/benchmarks.json',
                      help='the JSON figures (default: runs/benchmarks.json, ignored by git)')
  args = parser.parse_args(argv)
  if args.host_loop or args.lean_step:
    result = (host_loop_stand_in(args.base, args.epochs, args.rounds) if args.host_loop
              else lean_step_stand_in(args.rounds))
    result.update(date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                  machine=f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
                  backend=jax.default_backend(), jax=jax.__version__)
    pathlib.Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=1) + '\n')
    print(json.dumps({k: v for k, v in result.items() if k != 'rounds'}, indent=1))
    return
  repeats = 2 if args.quick else 5
  steps = 50 if args.quick else 300
  started = time.time()
  results = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
             'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
             'backend': jax.default_backend(), 'devices': len(jax.devices()),
             'jax': jax.__version__,
             'device_kind': jax.devices()[0].device_kind,
             'default_matmul_precision': str(jax.config.jax_default_matmul_precision)}
  peak = matmul_peak(repeats)
  results['matmul_gflops'] = peak
  ref_peak = peak['2048x2048x2048']
  peaks = [ref_peak]  # the 2048^3 rate again before the conv and importance-sampling rows
  again = lambda: peaks.append(matmul_peak(max(1, repeats // 2))['2048x2048x2048'])

  shape = (28, 28, 1)
  share = lambda flops, per_s: flops * per_s / 1e9 / ref_peak  # the one share formula
  mlp = default.get_config()
  ex_s, f_step = train_throughput(mlp, shape, steps, repeats)
  fwd = dense_flops(mlp.model, shape)
  bs = mlp.train.batch_size
  results['train_mlp'] = {
      'examples_per_s': ex_s, 'xla_flops_per_step': f_step,
      'analytic_matmul_flops_per_step': 3 * fwd * bs,
      'achieved_gflops': f_step * ex_s / bs / 1e9,
      'share_of_2048_peak': share(f_step, ex_s / bs),
      'share_of_128x784x500_peak': f_step * ex_s / bs / 1e9 / peak['128x784x500']}
  ex_s_nobin, _ = train_throughput(mlp, shape, steps, repeats, mode=input_pipeline.SCALE)
  results['train_mlp_without_binarization'] = {'examples_per_s': ex_s_nobin}
  big = default.get_config()
  with big.unlocked():
    big.train.batch_size = 1024
  ex_s_big, f_big = train_throughput(big, shape, max(10, steps // 8), repeats)
  results['train_mlp_batch1024'] = {'examples_per_s': ex_s_big, 'xla_flops_per_step': f_big,
                                    'share_of_2048_peak': share(f_big, ex_s_big / 1024)}

  # bfloat16 layers (parameters, losses and the optimizer stay fp32).
  for b in (128, 1024):
    cfg = default.get_config()
    with cfg.unlocked():
      cfg.train.batch_size = b
      cfg.model.compute_dtype = 'bfloat16'
    rate, _ = train_throughput(cfg, shape, max(10, steps // (1 if b == 128 else 8)), repeats)
    f32 = ex_s if b == 128 else ex_s_big
    results[f'train_mlp_bf16_batch{b}'] = {'examples_per_s': rate,
                                           'speedup_vs_float32': rate / f32}

  # The step against its own matmul ceiling: the same dense layers, forward and backward.
  # Ratios of two timings come from interleaved rounds (a, b, a, b, ...), their median
  # reported: on a shared machine the speed drifts by 10-30 % within minutes.
  rounds = 1 if args.quick else 3
  twin_flops = matmul_twin(mlp.model, shape, bs, 1)[1]
  pairs = interleaved(lambda: matmul_twin(mlp.model, shape, bs, repeats)[0],
                      lambda: bs / train_throughput(mlp, shape, steps, repeats)[0], rounds)
  twin_s, step_s = (float(np.median(v)) for v in zip(*pairs))
  results['train_mlp_vs_matmul_twin'] = {
      'step_ms': 1e3 * step_s, 'twin_step_ms': 1e3 * twin_s,
      'step_share_of_twin_speed': median_ratio(pairs),
      'rounds_twin_ms_step_ms': [(1e3 * a, 1e3 * b) for a, b in pairs],
      'twin_xla_flops_per_step': twin_flops, 'step_xla_flops_per_step': f_step}
  results['profile_train_mlp'] = profile_train(mlp, shape, min(steps, 100))

  # The pytorch/examples model: a minimal plain-JAX loop vs the same model through train.py.
  try:
    fm = data_lib.load(default.get_config().data).train.images
    spec = 'configs/pytorch_example.py'
  except data_lib.DataError:
    fm = np.random.default_rng(0).integers(0, 256, (4096, 28, 28, 1)).astype(np.uint8)
    spec = 'configs/pytorch_example.py:smoke'
  pairs = interleaved(lambda: plain_jax_epoch(fm, max(2, repeats // 2)),
                      lambda: train_py_steady_examples_per_s(spec, 1.0 if args.quick else 3.0),
                      rounds)
  plain, ours = (float(np.median(v)) for v in zip(*pairs))
  results['pytorch_example_model'] = {
      'plain_jax_scan_examples_per_s': plain, 'train_py_steady_examples_per_s': ours,
      'train_py_slowdown_vs_plain_jax': median_ratio(pairs),
      'rounds_plain_ours_examples_per_s': pairs}

  pairs = interleaved(lambda: sweep_throughput(mlp, shape, 8, max(10, steps // 4), repeats),
                      lambda: train_throughput(mlp, shape, steps, repeats)[0], rounds)
  results['sweep_vmap_8_members'] = {  # the key predates train.member_loop
      'member_loop': step_lib.member_loop(mlp, 1, jax.default_backend()),
      'examples_per_s_all_members': float(np.median([a for a, _ in pairs])),
      'speedup_vs_one_model': median_ratio(pairs),
      'rounds_8_members_one_model_examples_per_s': pairs}
  results['profile_vmap_8_members'] = profile_train(mlp, shape, min(steps, 50), 8)
  if jax.default_backend() != 'cpu':  # an accelerator has room for more members at once
    rate = sweep_throughput(mlp, shape, 32, max(10, steps // 4), repeats)
    results['sweep_vmap_32_members'] = {'examples_per_s_all_members': rate,
                                        'speedup_vs_one_model': rate / ex_s}

  again()
  conv = default.get_config('arch=conv')
  ex_s_conv, f_conv = train_throughput(conv, shape, max(5, steps // 15), min(repeats, 3))
  with conv.unlocked():
    conv.train.loop = 'device'
  ex_s_conv_device, _ = train_throughput(conv, shape, 3, 1)
  cfw = conv_flops(conv.model, shape)
  results['train_conv'] = {
      'examples_per_s': ex_s_conv, 'xla_flops_per_step': f_conv,
      'analytic_flops_per_step': 3 * cfw * conv.train.batch_size,
      'achieved_gflops': f_conv * ex_s_conv / conv.train.batch_size / 1e9,
      'share_of_2048_peak': share(f_conv, ex_s_conv / conv.train.batch_size),
      'examples_per_s_in_device_while_loop': ex_s_conv_device}

  again()
  results['eval_examples_per_s'] = eval_throughput(mlp, shape, 5000, repeats)
  k = 100 if args.quick else 1000
  n_iw = 200 if args.quick else 500
  iw_rate = eval_throughput(mlp, shape, n_iw, max(1, repeats // 2), iw_samples=k)
  f_chunk = iw_chunk_flops(mlp, shape, min(n_iw, 500))
  chunks_per_s = iw_rate / min(n_iw, 500) * (k / 100)
  results['importance_sampling'] = {
      'k': k, 'examples_per_s': iw_rate, 'samples_per_s': iw_rate * k,
      'xla_flops_per_chunk_of_100_samples_for_a_batch': f_chunk,
      'analytic_decoder_flops_per_sample': dense_flops(mlp.model, shape) / 2,
      'achieved_gflops': f_chunk * chunks_per_s / 1e9,
      'share_of_2048_peak': share(f_chunk, chunks_per_s),
      'seconds_for_k5000_on_10000': 10000 * 5000 / (iw_rate * k)}
  results['profile_importance_sampling'] = profile_importance_sampling(
      mlp, shape, min(n_iw, 500), 200)
  # The table's best combination (two layers, VampPrior, IAF; gated 300-300, z = 40 + 40).
  best = fashion_mnist_gated.get_config('layers=2,prior=vamp,posterior=iaf')
  n_best = 100 if args.quick else 250
  results['importance_sampling_two_layer_vamp_iaf'] = {
      'k': k, 'examples_per_s': eval_throughput(best, shape, n_best, 1, iw_samples=k)}
  cold, warm = first_step_seconds()
  results['seconds_to_first_step'] = {'cold_compilation_cache': cold,
                                      'warm_compilation_cache': warm}
  results['peak_host_memory_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

  # Before/after, in this same run: the rows again with the older behaviour.
  if not args.no_before:
    steps_pairs = interleaved(
        lambda: bs / train_throughput(legacy(mlp), shape, steps, repeats)[0],
        lambda: bs / train_throughput(mlp, shape, steps, repeats)[0], rounds)
    step_old, step_new = (float(np.median(v)) for v in zip(*steps_pairs))
    legacy_args = [f'--config.{k}={v}' for k, v in config_lib.LEGACY_VALUES.items()]
    torch_pairs = interleaved(
        lambda: plain_jax_epoch(fm, max(2, repeats // 2)),
        lambda: train_py_steady_examples_per_s(spec, 1.0 if args.quick else 3.0, legacy_args),
        rounds)
    iw = lambda: eval_throughput(mlp, shape, n_iw, max(1, repeats // 2), iw_samples=k)

    def iw_old():
      with old_importance_sampler():
        return iw()

    iw_pairs = interleaved(iw_old, iw, rounds)  # examples/s
    iw_best = lambda: eval_throughput(best, shape, n_best, 1, iw_samples=k)

    def iw_best_old():
      with concatenated_q_z1():
        return iw_best()

    iw_best_pairs = interleaved(iw_best_old, iw_best, rounds)
    vmap_pairs = interleaved(
        lambda: sweep_throughput(legacy(mlp), shape, 8, max(10, steps // 4), repeats),
        lambda: train_throughput(legacy(mlp), shape, steps, repeats)[0], rounds)
    iw_share = lambda rate: share(f_chunk, rate / min(n_iw, 500) * (k / 100))
    iw_seconds = lambda rate: 10000 * 5000 / (rate * k)
    results['before_after'] = {  # (before, after), each the median over interleaved rounds
        'default_step_ms': (1e3 * step_old, 1e3 * step_new),
        'step_share_of_matmul_twin': (twin_s / step_old, twin_s / step_new),
        'pytorch_model_train_py_slowdown': (
            median_ratio(torch_pairs),
            results['pytorch_example_model']['train_py_slowdown_vs_plain_jax']),
        'importance_sampling_share_of_peak': tuple(
            iw_share(float(np.median(v))) for v in zip(*iw_pairs)),
        'importance_sampling_seconds_k5000_on_10000': tuple(
            iw_seconds(float(np.median(v))) for v in zip(*iw_pairs)),
        'importance_sampling_two_layer_vamp_iaf_seconds_k5000_on_10000': tuple(
            iw_seconds(float(np.median(v))) for v in zip(*iw_best_pairs)),
        'vmap_8_members_vs_one_model': (
            median_ratio(vmap_pairs), results['sweep_vmap_8_members']['speedup_vs_one_model'])}

  # Every share against the highest 2048^3 rate of the run (at its start, before the conv and
  # importance-sampling rows, at its end): a machine slowed at one moment must not make
  # the shares look high.
  again()
  scale = ref_peak / max(peaks)
  results['matmul_2048_gflops_samples'] = peaks
  results['share_reference_gflops'] = max(peaks)
  for row in ('train_mlp', 'train_mlp_batch1024', 'train_conv', 'importance_sampling'):
    results[row]['share_of_2048_peak'] *= scale
  if 'before_after' in results:
    results['before_after']['importance_sampling_share_of_peak'] = tuple(
        v * scale for v in results['before_after']['importance_sampling_share_of_peak'])

  results['targets'] = {  # each headline row: (measured, the figure aimed at)
      'step_share_of_matmul_twin': (
          results['train_mlp_vs_matmul_twin']['step_share_of_twin_speed'], '>= 0.80'),
      'pytorch_model_train_py_slowdown': (
          results['pytorch_example_model']['train_py_slowdown_vs_plain_jax'], '<= 1.05'),
      'importance_sampling_share_of_peak': (
          results['importance_sampling']['share_of_2048_peak'], '>= 0.60'),
      'conv_training_share_of_peak': (results['train_conv']['share_of_2048_peak'], '>= 0.50'),
      'vmap_8_members_vs_one_model': (
          results['sweep_vmap_8_members']['speedup_vs_one_model'], '>= 1.0'),
      'seconds_to_first_step_cold_cache': (cold, '<= 5 (EPYC), 8 (Xeon)'),
      'seconds_to_first_step_warm_cache': (warm, '<= 5 (EPYC), 8 (Xeon)')}

  results['wall_seconds'] = time.time() - started
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=2) + '\n')
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



def _xla_flops(jitted, *args):
  """FLOPs of one call, from XLA's cost analysis of the compiled program (None if absent)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost.get('flops')
  except Exception:  # pylint: disable=broad-except
    return None


def matmul_twin(model_config, image_shape, batch_size, repeats, steps=100):
  """Seconds per step and XLA FLOPs of the step's dense layers alone, forward and backward:
  the same matmul shapes as one MLP VAE step, without activations, likelihood, RNG or the
  optimizer (what the step would cost if only its matmuls counted)."""
  d_in = int(np.prod(image_shape))
  enc = [d_in] + list(model_config.hidden) + [2 * model_config.latent_dim]
  dec = [model_config.latent_dim] + list(reversed(model_config.hidden)) + [d_in]
  gate = 2 if model_config.gated else 1
  key = jax.random.key(0)
  shapes = ([(a, gate * b if i < len(enc) - 2 else b) for i, (a, b) in enumerate(
      zip(enc[:-1], enc[1:]))] + [(a, gate * b if i < len(dec) - 2 else b) for i, (a, b) in
                                  enumerate(zip(dec[:-1], dec[1:]))])
  ws = [jax.random.normal(jax.random.fold_in(key, i), s) * 0.01 for i, s in enumerate(shapes)]
  x = jax.random.uniform(key, (batch_size, d_in))
  n_enc = len(enc) - 1

  def loss(ws):
    h = x
    for w in ws[:n_enc]:
      h = h[:, :w.shape[0]] @ w
    h = h[:, :model_config.latent_dim]
    for w in ws[n_enc:]:
      h = h[:, :w.shape[0]] @ w
    return jnp.sum(h)

  grad = jax.grad(loss)

  @jax.jit
  def run(ws):
    def body(_, ws):
      g = grad(ws)
      return [w - 1e-9 * gw for w, gw in zip(ws, g)]
    return jax.lax.fori_loop(0, steps, body, ws)

  sec = timed(lambda: jax.block_until_ready(run(ws)), repeats)
  return sec / steps, _xla_flops(run, ws)


def plain_jax_epoch(images, repeats, batch_size=128, hidden=400, latent=20):
  """Examples/s of a minimal plain-JAX loop of the pytorch/examples VAE: one jitted lax.scan
  over an epoch of pre-gathered batches, Adam, BCE on continuous pixels, no metrics."""
  x_all = jnp.asarray(images.reshape(len(images), -1), jnp.float32) / 255.0
  steps = len(images) // batch_size
  batches = x_all[:steps * batch_size].reshape(steps, batch_size, -1)
  d = batches.shape[-1]
  k = jax.random.split(jax.random.key(0), 5)
  init = lambda key, a, b: (jax.random.normal(key, (a, b)) / np.sqrt(a), jnp.zeros(b))
  params = {'e1': init(k[0], d, hidden), 'mu': init(k[1], hidden, latent),
            'lv': init(k[2], hidden, latent), 'd1': init(k[3], latent, hidden),
            'd2': init(k[4], hidden, d)}
  tx = optax.adam(1e-3)
  dense = lambda p, h: h @ p[0] + p[1]

  def loss_fn(p, x, key):
    h = jax.nn.relu(dense(p['e1'], x))
    mu, lv = dense(p['mu'], h), dense(p['lv'], h)
    z = mu + jnp.exp(0.5 * lv) * jax.random.normal(key, mu.shape)
    logits = dense(p['d2'], jax.nn.relu(dense(p['d1'], z)))
    bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x))
    kld = -0.5 * jnp.sum(1 + lv - mu ** 2 - jnp.exp(lv))
    return (bce + kld) / x.shape[0]

  @jax.jit
  def epoch(params, opt_state, key):
    def step(carry, xs):
      p, s = carry
      x, i = xs
      g = jax.grad(loss_fn)(p, x, jax.random.fold_in(key, i))
      u, s = tx.update(g, s, p)
      return (optax.apply_updates(p, u), s), None
    (params, opt_state), _ = jax.lax.scan(step, (params, opt_state),
                                          (batches, jnp.arange(steps)))
    return params, opt_state

  state = {'p': params, 's': tx.init(params)}

  def run():
    state['p'], state['s'] = jax.block_until_ready(epoch(state['p'], state['s'],
                                                         jax.random.key(1)))

  return steps * batch_size / timed(run, repeats)


def train_py_steady_examples_per_s(config_spec, epochs, extra=()):
  """Steady-state examples/s of train.py: log windows that hold no evaluation or checkpoint
  (the first window, with compilation, is left out); the median over windows."""
  with tempfile.TemporaryDirectory() as tmp:
    cmd = [sys.executable, str(REPO / 'train.py'), '--config', config_spec, '--workdir', tmp,
           f'--config.train.num_epochs={epochs}', f'--config.train.eval_every_epochs={epochs}',
           f'--config.train.checkpoint_every_epochs={epochs}',
           '--config.train.log_every_steps=100', *extra]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    events = [json.loads(line) for line in open(pathlib.Path(tmp) / 'metrics.jsonl')]
  train = [e for e in events if e['event'] == 'train']
  last_step = train[-1]['step']
  rates = [(b['examples_seen'] - a['examples_seen']) / (b['wall_time'] - a['wall_time'])
           for a, b in zip(train[1:], train[2:]) if b['step'] != last_step]
  return float(np.median(rates))


if __name__ == '__main__':
  main()
