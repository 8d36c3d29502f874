"""Test set-up shared by every test: 8 fake CPU devices and a persistent compilation cache.

XLA_FLAGS must be set before jax is imported anywhere, which is why this lives in conftest.
"""
import os
import pathlib

# LLVM at -O0: the tests compile hundreds of small programs whose run time is negligible, so skipping the
# backend's optimisation passes cuts the suite's time by about a quarter (measured cold: 827 s vs 1110 s on this
# 2-core machine), and the whole suite passes at either level (XLA's CPU backend enables no fast-math by
# default, so the passes are not licensed to reorder floating-point arithmetic). Tests that start their own
# processes set XLA_FLAGS themselves (default level).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
_CACHE = pathlib.Path(__file__).resolve().parent.parent / ".jax_cache"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
