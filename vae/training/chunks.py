"""The chunk: many train steps in one compiled program, with batches gathered on the device.

`make_train_chunk` assembles it from small pieces (`_ChunkParts`): the epoch order, one step
with its batch and the prior's extras, the metric sums, and a driver: one compiled while loop
(loop='device') or steps the host dispatches without waiting (loop='host'); members of a
vmapped group stepped together (vmap) or one after another (`_mapped_chunk`, lax.map). It
returns a `ChunkDriver`.
"""

import dataclasses
import functools
from typing import Any, Optional

import jax
import jax.numpy as jnp

from vae.data import input_pipeline


@dataclasses.dataclass(frozen=True)
class ChunkLayout:
  """Where a chunk's batches come from and how many members it trains (see
  `make_train_chunk`).

  Attributes:
    steps_per_epoch, batch_size: the schedule's.
    streamed: the chunk's batches come from the host (else gathered from the resident set).
    num_models: M members with a leading model axis, or None for a single run.
    num_examples: real examples in the resident set (None: all of its rows).
    order_sharding: where the data order a chunk hands on lies (None: anywhere).
    needs_batch: the prior reads the batch's indices and the resident set (`Prior`).
  """
  steps_per_epoch: int
  batch_size: int
  streamed: bool = False
  num_models: Optional[int] = None
  num_examples: Optional[int] = None
  order_sharding: Any = None
  needs_batch: bool = False


def make_train_chunk(train_step, layout, options):
  """A `ChunkDriver` whose run(state, data, data_key, hp, num_steps, order=None) -> (state,
  mean metrics, first bad step, order) trains a chunk of steps.

  `data` is the device-resident uint8 training set [N, H, W, C] (batches are
  gathered from an epoch permutation on the device), or, when streamed from
  the host, the chunk's batches [T, B, H, W, C] ([T, M, B, H, W, C] with a
  model axis: each model its own order). The loop stops at the first step
  whose loss or gradient is not finite and returns that step (else -1).

  `layout` is a `ChunkLayout`; `options` the run's `step.StepOptions`, of which the chunk
  reads `chunk_loop` (below: loop), `member_loop` and `last_value_metrics`.

  loop='device' (return value to be jitted): one compiled while loop;
  `num_steps` is traced, so one compilation serves every chunk length.
  loop='host' (returned already jitted): the host dispatches one compiled step
  per iteration without waiting for it (no host sync until the chunk ends),
  for models whose convolutions XLA's CPU backend runs >10x slower inside a
  while loop (docs/benchmarks.md). Both give the same numbers.

  With `num_models` = M, `state`, `data_key` and `hp` carry a leading model
  axis (spread over the mesh's 'model' axis: `spmd_axis_name`), and metrics
  come back as [M]. `num_examples` is the number of real examples in `data`
  (default: all of it; a dataset padded to split evenly over devices has more
  rows).

  member_loop (with `num_models`, loop='device'): 'vmap' runs every step of all members
  at once (batched ops: what accelerators want); 'map' runs each active member's whole
  chunk in turn (`lax.map` over members of the unbatched loop), so that one member's
  parameters and moments stay in the CPU's cache over its steps, and a stopped member
  costs nothing (its step counter advances, as under vmap). The same batches and keys
  either way; the numbers differ from 'vmap' by float rounding (unbatched vs batched ops).

  last_value: metrics reported at their last step's value, not averaged
  (`StepOptions.last_value_metrics`).

  order: (epoch, permutation) of the resident data as the previous chunk left it (None: none
  yet). A chunk that starts inside that epoch reuses it rather than drawing the epoch's
  permutation again (a sort of the whole training set: ~23 ms for 50,000 examples on two CPU
  cores, which every chunk boundary, i.e. every log step, would otherwise pay); any other
  epoch is drawn. The returned order is the one the last step used; pass it to the next chunk.
  `order_sharding` (e.g. replicated over the mesh): where the returned order and `no_order`'s
  lie, so that the first chunk's call and later ones share one signature (one compilation).
  The driver's `no_order(data)` gives the order of a first chunk.
  """
  multi, loop = layout.num_models is not None, options.chunk_loop
  assert not (layout.needs_batch and layout.streamed), 'the prior needs the resident set'
  if multi and options.member_loop == 'map':
    assert loop == 'device', 'member_loop=map runs the device loop'
    return _mapped_chunk(train_step, layout, options)
  parts = _ChunkParts(train_step, layout, tuple(options.last_value_metrics))
  return ChunkDriver(parts.chunk if loop == 'device' else parts.host_chunk(),
                     parts.no_order, loop)


@dataclasses.dataclass(frozen=True)
class ChunkDriver:
  """What `make_train_chunk` returns.

  run: chunk(state, data, data_key, hp, num_steps, order) -> (state, mean metrics, first bad
    step, order); to be jitted when `loop` is 'device' (the host loop comes jitted).
  no_order: no_order(data) -> the order argument of a first chunk.
  loop: 'device' or 'host'.
  """
  run: Any
  no_order: Any
  loop: str


class _ChunkParts:
  """The pieces `make_train_chunk` assembles: the epoch order, one step with its batch, the
  metric sums, and the device (while loop) and host (dispatched steps) drivers."""

  def __init__(self, train_step, layout, last_value):
    self.multi = layout.num_models is not None
    self.spe, self.batch_size = layout.steps_per_epoch, layout.batch_size
    self.streamed, self.num_models = layout.streamed, layout.num_models
    self.num_examples, self.last_value = layout.num_examples, last_value
    self.order_sharding, self.needs_batch = layout.order_sharding, layout.needs_batch
    needs_batch = layout.needs_batch
    batch_axes = ({'ids': 0, 'data': None, 'epoch_start': None},) if needs_batch else ()
    self.step_fn = (jax.vmap(train_step, in_axes=(0, 0, 0, None, None) + batch_axes,
                             spmd_axis_name='model') if self.multi else train_step)

  def pin(self, order):
    if self.order_sharding is None:
      return order
    return jax.lax.with_sharding_constraint(order, self.order_sharding)

  def step_of(self, st):
    return st.step[0] if self.multi else st.step

  def perm_for(self, data, data_key, epoch):
    n = data.shape[0] if self.num_examples is None else self.num_examples
    fn = lambda key: input_pipeline.epoch_permutation(key, epoch, n)
    return jax.vmap(fn)(data_key) if self.multi else fn(data_key)

  def initial_perm(self, state, data, data_key, order):
    if self.streamed:
      return jnp.zeros((1,), jnp.int32)
    step = self.step_of(state)
    epoch = step // self.spe
    fresh = lambda: self.perm_for(data, data_key, epoch)
    if order is None:
      return fresh()
    cached_epoch, cached = order
    # A chunk that starts an epoch leaves the draw to its first step (which draws at j = 0).
    fresh_unless_first = lambda: jax.lax.cond(step % self.spe == 0,
                                              lambda: jnp.zeros_like(cached), fresh)
    return jax.lax.cond(cached_epoch == epoch, lambda: cached, fresh_unless_first)

  def order_out(self, state, perm):
    """(epoch of `perm`, perm) after a chunk: the last step's epoch (a chunk of no steps
    leaves the epoch of its start, whose permutation initial_perm gave)."""
    return (self.step_of(state) - 1) // self.spe, perm

  def batch_of(self, i, step, perm, data, data_key):
    """(the step's uint8 batch, its extras for the prior, the permutation after it)."""
    if self.streamed:
      return data[i], {}, perm
    with jax.named_scope('batch'):
      j = step % self.spe
      perm = jax.lax.cond(j == 0, lambda: self.perm_for(data, data_key, step // self.spe),
                          lambda: perm)
      gather = lambda p: input_pipeline.gather_batch(data, p, j, self.batch_size)
      xb = jax.vmap(gather)(perm) if self.multi else gather(perm)
    extra = {}
    if self.needs_batch:  # the prior's extras: the batch's indices, the set, an epoch's start
      ids_of = lambda p: jax.lax.dynamic_slice_in_dim(p, j * self.batch_size, self.batch_size)
      extra = {'batch': {'ids': jax.vmap(ids_of)(perm) if self.multi else ids_of(perm),
                         'data': data, 'epoch_start': j == 0}}
    return xb, extra, perm

  def one_step(self, i, st, perm, sums, bad, data, data_key, hp, last):
    step = self.step_of(st)
    xb, extra, perm = self.batch_of(i, step, perm, data, data_key)
    if self.multi:  # vmap maps keyword arguments over axis 0: the batch goes by position
      new_st, metrics, finite = self.step_fn(st, xb, hp, last, jnp.any(hp['active'] <= 0),
                                             *extra.values())
    else:
      new_st, metrics, finite = self.step_fn(st, xb, hp, last, **extra)
    bad = jnp.where(jnp.all(finite) | (bad >= 0), bad, step)
    sums = jax.tree.map(jnp.add, sums, metrics)  # last-value metrics are 0 but at the last step
    return new_st, perm, sums, bad

  def zero_sums(self, state, data, hp):
    lead = (self.num_models,) if self.multi else ()
    x0 = jnp.zeros(lead + (self.batch_size,) + data.shape[-3:], data.dtype)
    extra = (True, jnp.bool_(False)) if self.multi else (True,)
    batch = {}
    if self.needs_batch:
      ids = jnp.zeros(lead + (self.batch_size,), jnp.int32)
      batch = {'batch': {'ids': ids, 'data': data, 'epoch_start': jnp.bool_(False)}}
    if self.multi:
      extra += tuple(batch.values())
      batch = {}
    shapes = jax.eval_shape(functools.partial(self.step_fn, **batch), state, x0, hp, *extra)[1]
    return jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)

  def means_of(self, sums, n):
    n = jnp.maximum(n, 1).astype(jnp.float32)
    return {k: v if k in self.last_value else v / n for k, v in sums.items()}

  def chunk(self, state, data, data_key, hp, num_steps, order=None):
    """One compiled while loop over the chunk's steps (jit it)."""
    start = self.step_of(state)

    def cond(carry):
      i, _, _, _, bad = carry
      return (i < num_steps) & (bad < 0)

    def body(carry):
      i, st, perm, sums, bad = carry
      st, perm, sums, bad = self.one_step(i, st, perm, sums, bad, data, data_key, hp,
                                          i == num_steps - 1)
      return i + 1, st, perm, sums, bad

    carry = (jnp.zeros((), jnp.int32), state, self.initial_perm(state, data, data_key, order),
             self.zero_sums(state, data, hp), jnp.full((), -1, jnp.int32))
    n, state, perm, sums, bad = jax.lax.while_loop(cond, body, carry)
    epoch = jnp.where(n > 0, (self.step_of(state) - 1) // self.spe, start // self.spe)
    return state, self.means_of(sums, n), bad, self.pin((epoch, perm))

  def no_order(self, data):
    """The order to pass to a first chunk: the shapes of a real one, an epoch that never
    matches (so that every call has one signature: one compilation)."""
    n = data.shape[0] if self.num_examples is None else self.num_examples
    lead = (self.num_models,) if self.multi else ()
    perm = jnp.zeros((1,) if self.streamed else lead + (n,), jnp.int32)
    order = jnp.full((), -1, jnp.int32), perm
    return order if self.order_sharding is None else jax.device_put(order, self.order_sharding)

  def host_chunk(self):
    """The chunk as steps the host dispatches one by one without waiting (already jitted)."""
    begin = jax.jit(lambda state, data, data_key, hp, order: (
        self.initial_perm(state, data, data_key, order), self.zero_sums(state, data, hp),
        jnp.full((), -1, jnp.int32)))
    step_jit = jax.jit(self.one_step, donate_argnums=(1,))
    order_in = jax.jit(lambda state, perm: self.pin((self.step_of(state) // self.spe, perm)))
    finish = jax.jit(self.means_of)
    end_order = jax.jit(lambda state, perm: self.pin(self.order_out(state, perm)))

    def host_chunk(state, data, data_key, hp, num_steps, order=None):
      perm, sums, bad = begin(state, data, data_key, hp, order)
      num_steps = int(num_steps)
      for i in range(num_steps):
        state, perm, sums, bad = step_jit(jnp.int32(i), state, perm, sums, bad, data, data_key,
                                          hp, jnp.bool_(i == num_steps - 1))
      order = end_order(state, perm) if num_steps else order_in(state, perm)
      return state, finish(sums, jnp.int32(num_steps)), bad, order

    return host_chunk


def _mapped_chunk(train_step, layout, options):
  """make_train_chunk's member_loop='map': the members' chunks one after another."""
  member_step = functools.partial(train_step, any_stopped=False)
  run_member = make_train_chunk(
      member_step, dataclasses.replace(layout, num_models=None, order_sharding=None),
      dataclasses.replace(options, chunk_loop='device', member_loop=None))
  streamed, num_models, order_sharding = (layout.streamed, layout.num_models,
                                          layout.order_sharding)
  no_step = jnp.iinfo(jnp.int32).max

  def chunk(state, data, data_key, hp, num_steps, order=None):
    def member(args):
      m, st, key, h, o = args
      d = jax.lax.dynamic_index_in_dim(data, m, 1, keepdims=False) if streamed else data
      shapes = jax.eval_shape(run_member.run, st, d, key, h, num_steps, o)

      def frozen():
        # A frozen member keeps the order it had (none: an epoch that never matches).
        kept = o if o is not None else (jnp.full((), -1, jnp.int32),
                                        jnp.zeros(shapes[3][1].shape, shapes[3][1].dtype))
        return (st.replace(step=st.step + num_steps),
                jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes[1]),
                jnp.full((), -1, jnp.int32), kept)

      return jax.lax.cond(h['active'] > 0, lambda: run_member.run(st, d, key, h, num_steps, o),
                          frozen)

    members = jnp.arange(num_models, dtype=jnp.int32)
    state, means, bads, order = jax.lax.map(member, (members, state, data_key, hp, order))
    first = jnp.min(jnp.where(bads >= 0, bads, no_step))
    if order_sharding is not None:
      order = jax.lax.with_sharding_constraint(order, order_sharding)
    return state, means, jnp.where(first == no_step, -1, first), order

  def no_order(data):
    epoch, perm = run_member.no_order(data)
    order = (jnp.full((num_models,), epoch), jnp.zeros((num_models,) + perm.shape, perm.dtype))
    return order if order_sharding is None else jax.device_put(order, order_sharding)

  return ChunkDriver(chunk, no_order, 'device')
