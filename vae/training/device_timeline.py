"""When the device had work queued, measured from the host: the loop's "host stall".

Each piece of device work the loop dispatches (a training chunk, an evaluation, a snapshot
copy for a checkpoint) is handed to `DeviceTimeline.dispatched` with one of its outputs; a
watcher thread waits for that output and records when it was ready. The device runs the
pieces in dispatch order, so piece i is busy from max(its dispatch, the end of piece i - 1)
to its end; the device has no work queued between the end of one piece and the dispatch of
the next. The stall is the share of wall time in such gaps: what a faster host loop could
still win. (The watcher adds no synchronization to the loop: it only waits on outputs.)
"""

import queue
import threading
import time

import jax


class DeviceTimeline:
  """Records (kind, dispatch time, ready time) of device work; see the module."""

  def __init__(self):
    self.start = time.perf_counter()
    self.stop = None
    self._events = []
    self._queue = queue.Queue()
    self._thread = threading.Thread(target=self._watch, name='vae-device-timeline',
                                    daemon=True)
    self._thread.start()

  def dispatched(self, kind, output):
    """Notes a piece of device work just dispatched; `output` is one of its results."""
    self._queue.put((kind, time.perf_counter(), output))

  def _watch(self):
    while True:
      item = self._queue.get()
      if item is None:
        return
      kind, t, output = item
      try:
        jax.block_until_ready(output)
      except Exception:  # pylint: disable=broad-except
        pass  # a failed computation ends the run; its error surfaces in the loop
      self._events.append((kind, t, time.perf_counter()))

  def close(self):
    """Waits for every dispatched piece; the timeline ends now."""
    if self._thread.is_alive():
      self._queue.put(None)
      self._thread.join()
      self.stop = time.perf_counter()

  def summary(self, since=None):
    """Busy seconds of the device, wall seconds and the stall share over [since (default:
    the timeline's start), the close]."""
    self.close()
    t0 = self.start if since is None else since
    t1 = self.stop or time.perf_counter()
    busy, end = 0.0, t0
    for _, dispatch, ready in sorted(self._events, key=lambda e: e[1]):
      begin = max(dispatch, end, t0)
      if ready > begin:
        busy += ready - begin
      end = max(end, ready)
    wall = max(t1 - t0, 1e-9)
    return {'wall_s': round(wall, 3), 'device_busy_s': round(busy, 3),
            'host_stall_share': round(max(0.0, 1.0 - busy / wall), 4)}
