"""The members of one training program: a single run, or many models stacked under vmap.

A `Group` holds what the loop needs per member: its config, workdir, keys,
its own (unpadded) model, and the views between the program's state and each
member's own TrainState.

A single run (`batched=False`) is the one-member group with the unbatched
step. A batched group stacks members that differ only in
`config_lib.VMAPPABLE` fields with a leading model axis: each keeps its own
keys, data order and hyperparameters (`step.hyperparameters`). Latent sizes
join by padding every member to the largest size D_max: a member with D
latents gets its own D-latent initialization embedded in zeros, and a latent
mask under which the padded dimensions have q = p (no KL), are zeroed before
the decoder and get zero gradients; its noise is the same as alone
(`objectives.reparameterize` draws dimension d from fold_in(key, d)). So a
member trained in a group matches the member trained alone, up to
floating-point reduction order (tests/sweeps/test_sweeps.py checks this).
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from vae import config_lib
from vae.training import estimates
from vae.families import models
from vae.training import chunks, optim, sharding, step as step_lib


def resize_latent(tree, target, path_filter='gaussian_head'):
  """Pads (with zeros) or slices every leaf of `tree` to the shape of `target`'s leaf.

  Leaves under a 'gaussian_head' module hold [mean | logvar] halves on their
  last axis; each half is resized separately. Other leaves are resized at the
  end of each axis that differs (the decoder's first kernel, [D, H]).
  """
  def fit(path, a, t):
    if a.shape == t.shape:
      return a
    names = [str(getattr(p, 'key', getattr(p, 'name', p))) for p in path]
    if any(path_filter in n for n in names):
      half_a, half_t = a.shape[-1] // 2, t.shape[-1] // 2
      parts = [resize(h, t.shape[:-1] + (half_t,)) for h in (a[..., :half_a], a[..., half_a:])]
      return jnp.concatenate(parts, axis=-1)
    return resize(a, t.shape)

  return jax.tree_util.tree_map_with_path(fit, tree, target)


def resize(a, shape):
  """Slices or zero-pads array `a` at the end of each axis to `shape`."""
  a = a[tuple(slice(0, min(s, t)) for s, t in zip(a.shape, shape))]
  pads = [(0, t - s) for s, t in zip(a.shape, shape)]
  return jnp.pad(a, pads) if any(p[1] for p in pads) else a


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, i):
  return jax.tree.map(lambda a: a[i], tree)


def unpad_sums(sums, latent_dim):
  """Evaluation sums of a padded member, cut to its own latent dimensions (the sums whose
  producers declared a latent axis, `estimates.latent_axis_sums`)."""
  out = dict(sums)
  for k in estimates.latent_axis_sums():
    if k in sums:
      out[k] = np.asarray(sums[k])[:latent_dim]
  return out


class Group:
  """M >= 1 members and the compiled program that trains them.

  Args:
    configs: member configs (one for a single run).
    image_shape: (H, W, C).
    schedule: the loop's Schedule (steps per epoch, total steps).
    mesh: a ('model', 'data') mesh; members over 'model', batches over 'data'.
    streamed: batches arrive from the host (`input_pipeline.HostFeeder`).
    num_examples: real examples in the resident training set.
    batched: stack the members under vmap (else exactly one member, unbatched).
    hooks: the tests' `settings.FaultHooks` (None: none).

  `options` are the compiled step's `step_lib.StepOptions`, derived from the first member's
  config and the backend here, once.
  """

  def __init__(self, configs, image_shape, schedule, mesh, streamed, num_examples, batched,
               hooks=None):
    assert batched or len(configs) == 1
    self.configs, self.batched, self.image_shape = configs, batched, tuple(image_shape)
    self.size = len(configs)
    base = configs[0]
    spe = schedule.steps_per_epoch
    self.keys = [step_lib.root_keys(c.seed) for c in configs]
    self.ema = base.optim.ema_decay > 0
    self.num_train = num_examples  # N, which the prior's state may scale with
    self.tx, self.lr_fn = optim.make_optimizer(base.optim, spe, schedule.total_steps)
    dtype = step_lib.compute_dtype(base)
    self.models = [models.build_model(c.model, image_shape, dtype) for c in configs]
    self.replicated = sharding.replicated(mesh)
    batch_sharding = sharding.batch_sharded(mesh)
    # The compiled step's static options, resolved here once (the backend's 'auto' choices too).
    self.options = step_lib.step_options(base, jax.default_backend(),
                                         mesh.shape['model'] if batched else None, hooks,
                                         lr_scaled=len({c.optim.lr for c in configs}) > 1)
    if not batched:
      self.model = self.models[0]
      self.hp = step_lib.hyperparameters(base, spe)
      train_step = step_lib.make_train_step(self.model, self.tx, self.lr_fn, self.options,
                                            batch_sharding)
      self.state_sharding = self.replicated
      self.data_keys, self.eval_keys = self.keys[0]['data'], self.keys[0]['eval']
    else:
      d_max = max(c.model.latent_dim for c in configs)
      self.model = models.build_model(dataclasses.replace(base.model, latent_dim=d_max),
                                      image_shape, dtype)
      self.state_sharding = sharding.model_sharded(mesh)
      hps = []
      padded = len({c.model.latent_dim for c in configs}) > 1
      for c in configs:
        # Only members of different latent sizes need the mask (the analytic family alone).
        mask = (np.arange(d_max) < c.model.latent_dim).astype(np.float32) if padded else None
        hps.append(step_lib.hyperparameters(c, spe, mask, lr_scale=c.optim.lr / base.optim.lr))
      self.hp = jax.device_put(stack(hps), self.state_sharding)
      train_step = step_lib.make_train_step(self.model, self.tx, self.lr_fn, self.options,
                                            batch_sharding, freezable=True)
      self.data_keys, self.eval_keys = (
          jax.device_put(jnp.stack([k[p] for k in self.keys]), self.state_sharding)
          for p in ('data', 'eval'))
    if streamed and self.model.prior.needs_training_set:
      raise config_lib.ConfigError(
          f'model.prior={base.model.prior} needs the training set on the device; set '
          'data.residency=device (or raise data.max_device_bytes)')
    self.train_step = train_step  # one member's step (unbatched), e.g. for FLOP counts
    loop, self.member_loop = self.options.chunk_loop, self.options.member_loop
    layout = chunks.ChunkLayout(spe, base.train.batch_size, streamed,
                                self.size if batched else None, num_examples,
                                self.replicated, self.model.prior.needs_training_set)
    driver = chunks.make_train_chunk(train_step, layout, self.options)
    self.chunk_fn = (jax.jit(driver.run, donate_argnums=(0, 5)) if loop == 'device'
                     else driver.run)
    # The order argument of a first chunk (`chunks.ChunkDriver`): no_order(data).
    self.no_order = driver.no_order
    self._image_fns = {}

  # ------------------------------------------------------------------ states

  def _member_init(self, m, model=None):
    return step_lib.init_state(self.models[m] if model is None else model, self.tx,
                               self.image_shape, self.keys[m], self.ema, self.num_train,
                               self.options.objective)

  def member_abstract(self, m):
    """Member m's own TrainState shapes, replicated over the mesh (what its checkpoint holds)."""
    shapes = jax.eval_shape(functools.partial(self._member_init, m))
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype,
                                                       sharding=self.replicated), shapes)

  def _fit(self, state, m, model):
    """Member m's state resized (padded or cut) to the shapes of `model`'s state."""
    target = jax.eval_shape(functools.partial(self._member_init, m, model))
    return state.replace(**{k: resize_latent(getattr(state, k), getattr(target, k))
                            for k in ('params', 'opt_state', 'ema_params')})

  def init(self):
    """The program's fresh state (stacked for a batched group)."""
    if not self.batched:
      return jax.jit(self._member_init, static_argnums=0, out_shardings=self.replicated)(0)

    def init_all():
      return stack([self._fit(self._member_init(m), m, self.model) for m in range(self.size)])

    return jax.jit(init_all, out_shardings=self.state_sharding)()

  def join(self, member_states):
    """The program's state from each member's own state (a restored checkpoint)."""
    if not self.batched:
      return member_states[0]
    padded = [self._fit(s, m, self.model) for m, s in enumerate(member_states)]
    return jax.device_put(stack(padded), self.state_sharding)

  def member_state(self, state, m):
    """Member m's own (unpadded) TrainState from the program's state."""
    if not self.batched:
      return state
    return self._fit(unstack(state, m), m, self.models[m])

  def pick(self, tree, m):
    """Member m's entry of a per-member result (metrics, eval sums)."""
    return unstack(tree, m) if self.batched else tree

  def set_active(self, m, active):
    """Freezes (or thaws) member m inside a batched program."""
    if self.batched:
      self.hp = dict(self.hp, active=self.hp['active'].at[m].set(float(active)))

  # ------------------------------------------------------------------ evaluation

  def make_eval_fn(self, mode, iw_samples):
    """eval(state, batches, mask, train_data) -> sums per member (leading model axis when
    batched); `train_data`, the resident uint8 training set, for a prior that needs it
    (`priors.Prior.eval_variables`; unused otherwise)."""
    fn = estimates.make_eval_fn(self.model, mode, iw_samples, num_train=self.num_train)
    if not self.batched:
      return jax.jit(lambda state, b, mk, data: fn(state.eval_params(), b, mk, self.eval_keys,
                                                   None, data, state.prior_state))
    mask = self.hp.get('latent_mask')
    vmapped = jax.vmap(fn, in_axes=(0, None, None, 0, None if mask is None else 0, None, 0))
    return jax.jit(lambda state, b, mk, data: vmapped(state.eval_params(), b, mk, self.eval_keys,
                                                      self.hp.get('latent_mask'), data,
                                                      state.prior_state))

  def image_variables(self, state):
    """The variables a member's images are drawn with: its evaluation parameters, and what
    the prior draws from its state (`priors.Prior.state_variables`)."""
    variables = {'params': state.eval_params()}
    variables.update(self.model.prior.state_variables(state.prior_state))
    return variables

  def image_fns(self, m):
    """(reconstruct, sample) jitted for member m's own model (shared by size):
    reconstruct(variables, x) decodes the noise-free posterior latent (`VAE.latent_point`);
    sample(variables, key) decodes train.num_image_samples draws from the prior (`generate`);
    `variables` from `image_variables`."""
    model = self.models[m]
    key = model.latent_dim
    if key not in self._image_fns:
      n = self.configs[m].train.num_image_samples
      recon = jax.jit(lambda v, x: model.apply(v, model.apply(
          v, x, method=model.latent_point), method=model.decode_mean))
      sample = jax.jit(lambda v, k: model.apply(v, k, n, method=model.generate))
      self._image_fns[key] = (recon, sample)
    return self._image_fns[key]
