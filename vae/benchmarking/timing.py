"""Timing and FLOP accounting for the benchmarks: medians after a warm-up (`timed`), ratios
from interleaved rounds (`interleaved`, `median_ratio`), the machine's matmul rate
(`matmul_peak`), XLA's FLOP count of a compiled program (`xla_flops`) and the analytic FLOPs
of the MLP and conv models (`dense_flops`, `conv_flops`; 2 per multiply-add)."""

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def machine():
  """What a benchmark JSON records about where it ran: date, processor and cores, backend,
  devices, jax version."""
  return {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
          'machine': f'{platform.processor() or platform.machine()}, {os.cpu_count()} cores',
          'backend': jax.default_backend(), 'devices': len(jax.devices()),
          'device_kind': jax.devices()[0].device_kind, 'jax': jax.__version__}


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


def xla_flops(jitted, *args):
  """FLOPs of one call, from XLA's cost analysis of the compiled program (None if absent)."""
  try:
    cost = jitted.lower(*args).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return cost.get('flops')
  except Exception:  # pylint: disable=broad-except
    return None


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
