"""Tests of vae/training/device_timeline.py: busy and idle time of the device as the host sees it."""

import time

import jax
import jax.numpy as jnp

from vae.training import device_timeline


def test_gaps_between_pieces_of_work_count_as_stall_and_queued_work_does_not():
  f = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
  x = jnp.ones((512, 512))
  jax.block_until_ready(f(x))  # compiled
  queued = device_timeline.DeviceTimeline()
  for _ in range(20):  # dispatched back to back: the device always has work queued
    queued.dispatched('chunk', f(x))
  busy = queued.summary()
  idle = device_timeline.DeviceTimeline()
  for _ in range(5):  # the host waits 0.1 s between pieces that take far less
    idle.dispatched('chunk', f(x))
    time.sleep(0.1)
  gaps = idle.summary()
  assert gaps['host_stall_share'] > 0.5
  assert busy['host_stall_share'] < gaps['host_stall_share']
  assert 0 < busy['device_busy_s'] <= busy['wall_s'] + 1e-6
