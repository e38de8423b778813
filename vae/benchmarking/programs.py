"""The compiled programs the benchmarks time in-process, each on device-resident random data:
the loop's own training chunk (`members.Group`, the program train.py runs) for one model or
a vmapped group, the evaluator and the importance sampler, the step's matmul-only twin, and a
minimal plain-JAX loop of the pytorch/examples model. Rates in examples/s; FLOPs from XLA's
cost analysis (`timing.xla_flops`)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vae import config_lib
from vae.benchmarking import timing
from vae.data import input_pipeline
from vae.training import estimates
from vae.families import models
from vae.sweeps import plan
from vae.training import loop, members, profiling, sharding


def _group(configs, image_shape, mode=None, batched=False):
  """The loop's program (`members.Group`, the same one train.py runs) on device-resident
  random uint8 data: (group, images, initial state)."""
  schedule = loop.Schedule(100, 10_000, 100, 100, 100)
  bs = configs[0].train.batch_size
  if mode == input_pipeline.SCALE:  # pixels scaled, no binarization draw in the step
    configs = [plan.apply_overrides(c, {'data.binarize': 'static'}) for c in configs]
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
  return timing.xla_flops(jax.jit(group.train_step), state, x, hp, True)


def _group_throughput(configs, image_shape, steps, repeats, mode=None, batched=False):
  """Examples/s summed over the members of the loop's program."""
  group, images, state = _group(configs, image_shape, mode, batched)
  holder = {'state': state, 'order': group.no_order(images)}

  def run():
    s, m, _, holder['order'] = group.chunk_fn(holder['state'], images, group.data_keys,
                                              group.hp, steps, holder['order'])
    jax.block_until_ready(m)
    holder['state'] = s

  return len(configs) * steps * configs[0].train.batch_size / timing.timed(run, repeats), group


def profile_train(config, image_shape, steps, num_members=None):
  """vae/training/profiling.py's breakdown of one chunk of `steps` training steps, per step of one
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
  return [plan.apply_overrides(config, {'objective.beta': float(b), 'seed': i})
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
  return plan.apply_overrides(config, dict(config_lib.LEGACY_VALUES))


# The "before" rows of scripts/benchmark.py: the earlier importance-sampling estimator (the
# per-pixel Bernoulli sum x l - softplus(l), whole chunks decoded at once) and the two-level
# model's q(z1 | x, z2) on the broadcast concatenation [x, z2] under sample axes (x's part of
# the first layer computed for every sample). Both are explicit options of today's code.
OLD_IW = estimates.IWOptions(decode_rows_cpu=10 ** 12, grouped_logs=False)
OLD_Q_Z1_INPUT = 'concatenated'


def eval_throughput(config, image_shape, n, repeats, iw_samples=0, chunk=100,
                    iw_options=estimates.IWOptions(), q_z1_input='shared'):
  """Examples/s of the evaluator (with `iw_samples` importance samples each, in chunks)."""
  model, params, batches, mask = _eval_inputs(config, image_shape, n, q_z1_input)
  fn = jax.jit(estimates.make_eval_fn(model, input_pipeline.SCALE, iw_samples, chunk,
                                      iw_options=iw_options))
  sec = timing.timed(lambda: jax.block_until_ready(fn(params, batches, mask, jax.random.key(0))),
              repeats)
  return n / sec


def _eval_inputs(config, image_shape, n, q_z1_input='shared'):
  model = models.build_model(config.model, image_shape, q_z1_input=q_z1_input)
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
  whole = estimates.IWOptions(decode_rows_cpu=10 ** 12)
  fn = jax.jit(lambda p, x, k: estimates.iw_log_likelihood(model, {'params': p}, x, k,
                                                            chunk, chunk, options=whole))
  return timing.xla_flops(fn, params, x, jax.random.key(0))


def profile_importance_sampling(config, image_shape, n, k, chunk=100):
  """vae/training/profiling.py's breakdown of the evaluator with k samples, per chunk of one
  batch."""
  model, params, batches, mask = _eval_inputs(config, image_shape, n)
  fn = jax.jit(estimates.make_eval_fn(model, input_pipeline.SCALE, k, chunk))
  units = batches.shape[0] * (-(-k // chunk))
  return profiling.time_by_category(fn, (params, batches, mask, jax.random.key(0)), units)


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

  sec = timing.timed(lambda: jax.block_until_ready(run(ws)), repeats)
  return sec / steps, timing.xla_flops(run, ws)


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

  return steps * batch_size / timing.timed(run, repeats)


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

  return steps * config.train.batch_size / timing.timed(run, repeats)


def _group_epoch(config, image_shape, steps):
  schedule = loop.Schedule(steps, 1000 * steps, steps, steps, steps)
  mesh = sharding.make_model_mesh(1)
  n = steps * config.train.batch_size
  group = members.Group([config], image_shape, schedule, mesh, False, n, False)
  images = sharding.put_examples(
      np.random.default_rng(0).integers(0, 256, (n,) + image_shape).astype(np.uint8), mesh)
  return group, images, group.init()
