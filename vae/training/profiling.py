"""Where a compiled program spends its time: a jax.profiler trace, summed by kind of work.

`time_by_category(jitted, args, units)` runs a jitted function once under the
profiler, reads the trace's per-kernel durations (XLA's CPU runtime records one
event per thunk: a fusion, a dot, a loop) and labels each kernel from the
compiled HLO: matrix products (dots and convolutions) by opcode, random number
generation by the jax.random functions in its op name, everything else by the
named scope it was traced under (vae/training/step.py labels batch, data, loss,
optimizer and norms; vae/families/likelihoods.py labels likelihood). Kernels can run
concurrently on different cores, so the categories may sum to more than the
wall time, which is reported beside them.
"""

import collections
import glob
import gzip
import json
import os
import re
import tempfile
import time

import jax

RNG_MARKERS = ('random_bits', 'threefry', '_bernoulli', '_uniform', '_normal', 'random_')
SCOPES = ('likelihood', 'optimizer', 'norms', 'batch', 'data', 'loss')
_WRAPPED = re.compile(r'^[\w.]+\((.*)\)$')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?op_name="([^"]*)"', re.M)
_COMPUTATION = re.compile(r'^%?([\w.\-]+) \(.*?\{\n(.*?)^\}', re.M | re.S)
_CALLS = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = [^\n]*?calls=%?([\w.\-]+)', re.M)
_OPCODE = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = (?:\(.*?\)|\S+) ([a-z][\w\-]*)\(', re.M)


def category(name, op_name, opcode=''):
  """The kind of work of one kernel: matmul, rng, a named scope, or other."""
  if opcode in ('dot', 'convolution') or name.startswith(('dot', 'convolution')) or (
      op_name.endswith(('dot_general', 'conv_general_dilated'))):
    return 'matmul'
  if any(m in op_name for m in RNG_MARKERS):
    return 'rng'
  parts = [_unwrap(p) for p in op_name.split('/')]
  for scope in SCOPES:
    if scope in parts:
      return scope
  return 'other'


def _unwrap(part):
  """'vmap(loss)' -> 'loss': the scope inside transformation wrappers (vmap, jvp, ...)."""
  while True:
    m = _WRAPPED.match(part)
    if not m:
      return part
    part = m.group(1)


def kernel_labels(hlo_text):
  """{instruction name: (op_name, opcode)} from a compiled module's text. A fusion whose
  own metadata is empty takes the first op name inside the computation it calls."""
  ops = {m.group(1): m.group(2) for m in _OPCODE.finditer(hlo_text)}
  names = {m.group(1): m.group(2) for m in _INSTRUCTION.finditer(hlo_text)}
  inner = {}
  for m in _COMPUTATION.finditer(hlo_text):
    found = _INSTRUCTION.search(m.group(2))
    if found:
      inner[m.group(1)] = found.group(2)
  for m in _CALLS.finditer(hlo_text):
    if not names.get(m.group(1)) and m.group(2) in inner:
      names[m.group(1)] = inner[m.group(2)]
  return {n: (names.get(n, ''), ops.get(n, '')) for n in set(ops) | set(names)}


def kernel_durations(trace_dir):
  """{kernel name: (total microseconds, count)} from the newest perfetto trace in a dir."""
  files = sorted(glob.glob(os.path.join(trace_dir, '**', '*.trace.json.gz'), recursive=True))
  if not files:
    raise FileNotFoundError(f'no *.trace.json.gz under {trace_dir}')
  with gzip.open(files[-1]) as f:
    trace = json.load(f)
  events = trace['traceEvents'] if isinstance(trace, dict) else trace
  out = collections.defaultdict(lambda: [0.0, 0])
  for e in events:
    name = e.get('name', '')
    # Complete events of kernels only: runtime bookkeeping has '::' or a leading '$'.
    if e.get('ph') != 'X' or '::' in name or name.startswith('$'):
      continue
    out[name][0] += float(e.get('dur', 0.0))
    out[name][1] += 1
  return {k: tuple(v) for k, v in out.items()}


def time_by_category(jitted, args, units=1, top=8):
  """Profiles one call of `jitted(*args)` (compiled and warmed up first).

  Args:
    jitted: a jax.jit-wrapped function.
    args: its arguments.
    units: units of work in one call (e.g. training steps), to report per unit.
    top: how many of the longest kernels to list.

  Returns:
    dict: wall_ms (per unit), kernel_ms (per unit, summed over kernels),
    ms_per_category {category: ms per unit}, share_per_category {category: share of
    kernel_ms}, top_kernels [(ms per unit, name, category, op_name)].
  """
  compiled = jitted.lower(*args).compile()
  labels = kernel_labels(compiled.as_text())
  jax.block_until_ready(jitted(*args))
  with tempfile.TemporaryDirectory() as tmp:
    jax.profiler.start_trace(tmp, create_perfetto_trace=True)
    t = time.perf_counter()
    jax.block_until_ready(jitted(*args))
    wall = time.perf_counter() - t
    jax.profiler.stop_trace()
    durations = kernel_durations(tmp)
  per_cat = collections.Counter()
  kernels = []
  for name, (us, _) in durations.items():
    op_name, opcode = labels.get(name, ('', ''))
    if not op_name and not opcode:
      continue  # not a kernel of this program (e.g. a transfer)
    cat = category(name, op_name, opcode)
    per_cat[cat] += us
    kernels.append((us / 1e3 / units, name, cat, op_name))
  total = sum(per_cat.values())
  return {
      'wall_ms': 1e3 * wall / units,
      'kernel_ms': total / 1e3 / units,
      'ms_per_category': {k: v / 1e3 / units for k, v in per_cat.most_common()},
      'share_per_category': {k: v / total for k, v in per_cat.most_common()} if total else {},
      'top_kernels': sorted(kernels, reverse=True)[:top],
  }
