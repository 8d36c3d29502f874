"""Shared benchmark helpers: timing medians, the same-run matmul peak, JSON lines."""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import jax
import jax.numpy as jnp


def emit(**fields) -> None:
  """Prints one JSON line (the benchmark output format)."""
  print(json.dumps(fields, sort_keys=False), flush=True)


def timed(fn, args) -> float:
  """Wall seconds of one blocking call fn(*args)."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def time_fn(fn, *args, repeats: int = 5, warmup: int = 1):
  """Median, min and all wall times (s) of fn(*args) with blocking, after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = [timed(fn, args) for _ in range(repeats)]
  return statistics.median(times), min(times), times


def interleaved(fns: dict, repeats: int, calls: dict | None = None) -> dict:
  """Times each named (fn, args) once per round, round after round, so that every round's numbers come
  from the same stretch of a noisy shared machine; returns name -> list of seconds. `calls[name]` > 1
  times that one several times back to back per round and keeps the fastest (for the matmul peak, whose
  first call after a training step runs on cold caches)."""
  calls = calls or {}
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, (fn, args) in fns.items():
      times[name].append(min(timed(fn, args) for _ in range(calls.get(name, 1))))
  return times


def matmul_peak_fn(n: int = 2048, dtype=jnp.float32):
  """(jitted n x n matmul, its arguments, its FLOPs): the MFU denominator, to time in the same run."""
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  return jax.jit(lambda x, y: x @ y), (a, b), 2 * n ** 3


def matmul_peak_flops(n: int = 2048, dtype=jnp.float32, repeats: int = 10) -> float:
  """Measured FLOP/s of one jitted n x n matmul (median of `repeats`)."""
  f, args, flops = matmul_peak_fn(n, dtype)
  med, _, _ = time_fn(f, *args, repeats=repeats, warmup=2)
  return flops / med


def peak_rss_mb() -> float:
  scale = 1 if sys.platform == "darwin" else 1024
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2 ** 20
