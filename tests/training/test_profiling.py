"""Tests of vae/training/profiling.py: kernels of a real trace land in the right categories."""

import jax
import jax.numpy as jnp
import pytest

from vae.training import profiling


def test_trace_of_a_program_splits_into_matmul_rng_and_named_scopes():
  @jax.jit
  def f(a, b, key):
    c = a @ b
    noise = jax.random.normal(key, c.shape)
    with jax.named_scope('optimizer'):
      d = jnp.exp(jnp.sin(c + noise)) * 3.0
    return d

  a = jnp.ones((512, 512))
  out = profiling.time_by_category(f, (a, a, jax.random.key(0)), units=2)
  cats = out['ms_per_category']
  assert {'matmul', 'rng', 'optimizer'} <= set(cats), cats
  assert all(v > 0 for v in cats.values())
  assert out['kernel_ms'] == pytest.approx(sum(cats.values()))
  assert sum(out['share_per_category'].values()) == pytest.approx(1.0)
  assert out['wall_ms'] > 0
  ms, name, cat, _ = out['top_kernels'][0]
  assert ms > 0 and cat in cats and name


def test_categories_come_from_opcodes_rng_functions_and_scopes():
  assert profiling.category('dot.3', '') == 'matmul'
  assert profiling.category('ynn_fusion.2', 'jit(f)/VAE.decode/dense/dot_general') == 'matmul'
  assert profiling.category('while.4', 'jit(f)/loss/jit(_normal)/jit(_uniform)/while') == 'rng'
  assert profiling.category('fusion.1', 'jit(f)/while/body/optimizer/add') == 'optimizer'
  assert profiling.category('fusion.2', 'jit(f)/loss/likelihood/jit(softplus)/log1p') == (
      'likelihood')
  assert profiling.category('copy.5', '') == 'other'
  # Under vmap (a group of members) the scopes are wrapped: vmap(loss), vmap(optimizer).
  assert profiling.category('fusion.3', 'jit(chunk)/while/body/vmap(optimizer)/add') == (
      'optimizer')
  assert profiling.category('fusion.4', 'jit(f)/vmap(jvp(loss))/sub') == 'loss'
  hlo = '''%fused_computation.1 (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} exponential(%p), metadata={op_name="jit(f)/norms/exp"}
}

ENTRY %main (a: f32[4]) -> f32[4] {
  %a = f32[4]{0} parameter(0)
  ROOT %loop_fusion = f32[4]{0} fusion(%a), kind=kLoop, calls=%fused_computation.1
}
'''
  labels = profiling.kernel_labels(hlo)
  assert labels['loop_fusion'] == ('jit(f)/norms/exp', 'fusion')
  assert profiling.category('loop_fusion', *labels['loop_fusion']) == 'norms'
