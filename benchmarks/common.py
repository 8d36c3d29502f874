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


def time_fn(fn, *args, repeats: int = 5, warmup: int = 1):
  """Median, min and all wall times (s) of fn(*args) with blocking, after `warmup` calls."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times), times


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
