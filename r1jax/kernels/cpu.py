"""CPU kernels as XLA FFI custom calls, compiled from cpu_kernels.cc (next to this file) on first use.

Why: a sampler decode step is many tiny problems. It routes only B*G tokens (64 on the bench preset),
~16 rows per expert, and XLA:CPU runs [16, 256] x [256, 128] matmuls so slowly that computing every expert
for every row (4x the routed FLOPs, one big matmul) was faster; its attention is per-row [4, 48] x [48, L]
products that XLA:CPU runs at 6-10 GFLOP/s. `routed_experts` computes only the chosen experts and
`mla_decode_attention` only the unmasked cache slots, as plain register-blocked loops shared over XLA's
intra-op threads.

The library is built once per (source, compiler, flags, jax version, CPU) with `-O3 -march=native` into
$R1JAX_KERNEL_CACHE (default ~/.cache/r1jax/kernels; with a read-only home, a per-user directory under the
temporary directory): a temporary file renamed into place, so concurrent processes never load a
half-written library. Loading a shared library runs its code, so the cache must be private: a directory
or library that is not owned by this user, or that others may write, is never used (the library is then
built into a fresh private directory), and a library is loaded only when its SHA-256 matches the digest
recorded when it was built. `available()` is False, and callers use their pure-JAX
path, when no C++ compiler or no FFI headers are found; a compiler that fails on the source is an
error (RuntimeError with the compiler's output), never a silent fallback.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import pathlib
import platform
import shutil
import stat
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

_DIR = pathlib.Path(__file__).resolve().parent
_SOURCE = _DIR / "cpu_kernels.cc"
_TARGETS = {"r1jax_routed_experts": "R1jaxRoutedExperts", "r1jax_mla_decode_attention": "R1jaxMlaDecodeAttention"}
_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


def _compiler() -> str | None:
  return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++") or shutil.which("clang++")


def _cpu_id() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((line for line in f if line.startswith("flags")), "")
  except OSError:
    return platform.processor()


def _private(path: pathlib.Path, kind: int) -> bool:
  """`path` is a `kind` (stat.S_IFDIR / S_IFREG), not a link, owned by this user and writable by no one else."""
  try:
    st = path.lstat()
  except OSError:
    return False
  return stat.S_IFMT(st.st_mode) == kind and st.st_uid == os.getuid() and not st.st_mode & 0o022


def _sha256(path: pathlib.Path) -> str:
  return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_dir() -> pathlib.Path:
  """A directory only this user can write: the configured one, else a per-user one under the temporary
  directory, else a fresh private one (with a warning saying why)."""
  wanted = pathlib.Path(os.environ.get("R1JAX_KERNEL_CACHE", pathlib.Path.home() / ".cache" / "r1jax" / "kernels"))
  for cache in (wanted, pathlib.Path(tempfile.gettempdir()) / f"r1jax-kernels-{os.getuid()}"):
    try:
      cache.mkdir(mode=0o700, parents=True, exist_ok=True)   # a read-only home: try the next one
    except OSError:
      continue
    if _private(cache, stat.S_IFDIR):
      return cache
    print(f"warning: kernel cache {cache} is not private to this user (owner or permissions); not using it",
          file=sys.stderr, flush=True)
  return pathlib.Path(tempfile.mkdtemp(prefix="r1jax-kernels-"))


def _build(cxx: str) -> pathlib.Path:
  include = jax.ffi.include_dir()
  key = hashlib.sha256()
  for part in (_SOURCE.read_bytes(), cxx.encode(), " ".join(_FLAGS).encode(), jax.__version__.encode(),
               _cpu_id().encode(), platform.machine().encode()):
    key.update(part)
  cache = _cache_dir()
  lib = cache / f"cpu_kernels-{key.hexdigest()[:16]}.so"
  digest = lib.with_name(lib.name + ".sha256")
  if (_private(lib, stat.S_IFREG) and _private(digest, stat.S_IFREG)
      and digest.read_text().strip() == _sha256(lib)):
    return lib
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)        # mode 0600
  os.close(fd)
  try:
    proc = subprocess.run([cxx, *_FLAGS, f"-I{include}", str(_SOURCE), "-o", tmp], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
      raise RuntimeError(f"building {_SOURCE} with {cxx} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    os.chmod(tmp, 0o700)
    fd, tmp_digest = tempfile.mkstemp(suffix=".sha256", dir=cache)
    with os.fdopen(fd, "w") as f:
      f.write(_sha256(pathlib.Path(tmp)) + "\n")
    os.replace(tmp_digest, digest)                          # the digest first: a library never stands unchecked
    os.replace(tmp, lib)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return lib


_PANEL = 0   # set by available(): the widest column panel the kernels read
_VECTOR = 0  # and the narrowest (one vector register of floats)


@functools.cache
def available() -> bool:
  """True when the kernels are built and registered with XLA (building them on the first call, ~15 s)."""
  cxx = _compiler()
  if cxx is None or not os.path.exists(os.path.join(jax.ffi.include_dir(), "xla", "ffi", "api", "ffi.h")):
    return False
  handle = ctypes.cdll.LoadLibrary(str(_build(cxx)))
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(handle, symbol)), platform="cpu")
  handle.R1jaxPanelWidth.restype = ctypes.c_int64
  handle.R1jaxVectorWidth.restype = ctypes.c_int64
  global _PANEL, _VECTOR
  _PANEL, _VECTOR = int(handle.R1jaxPanelWidth()), int(handle.R1jaxVectorWidth())
  return True


def panel_width(n: int | None = None) -> int:
  """Column-panel width of the routed-experts kernel's weights with N = n columns: the widest the kernel
  reads (16 or 64 floats with AVX2 or AVX-512) halved until it divides n, but not below one vector of
  floats; 0 when the kernels are unavailable or n is not a whole number of vectors. n=None: the widest."""
  if not available():
    return 0
  w = _PANEL
  if n is None:
    return w
  while w > _VECTOR and n % w:
    w //= 2
  return w if n % w == 0 else 0


def vector_width() -> int:
  """Floats per vector register the kernels were built for (8 with AVX2, 16 with AVX-512; 0: unavailable)."""
  return _VECTOR if available() else 0


def supports_experts(hidden_size: int, moe_intermediate_size: int) -> bool:
  """Whether `routed_experts` can run these sizes: both must be whole panels of some width it reads."""
  return panel_width(hidden_size) > 0 and panel_width(moe_intermediate_size) > 0


def panels(w_ekn):
  """[E, K, N] -> [E, N / W, K, W], W = panel_width(N): each W-column panel contiguous, the layout the
  routed-experts kernel reads."""
  e, k, n = w_ekn.shape
  w = panel_width(n)
  return w_ekn.reshape(e, k, n // w, w).transpose(0, 2, 1, 3)


def unpanels(w_encw):
  """The inverse of `panels`: [E, N / W, K, W] -> [E, K, N]."""
  e, c, k, w = w_encw.shape
  return w_encw.transpose(0, 2, 1, 3).reshape(e, k, c * w)


def _check(fn: str, **arrays):
  if not available():
    raise RuntimeError("r1jax.kernels.cpu: no C++ compiler or XLA FFI headers found; use the pure-JAX path")
  for name, a in arrays.items():
    if a.dtype != jnp.float32:
      raise TypeError(f"{fn}: {name} is {a.dtype}; the CPU kernels compute in float32 only")


def _forward_only(fn, name, nondiff_argnums=()):
  """fn with a differentiation rule that fails clearly: the kernels have no backward pass."""
  wrapped = jax.custom_vjp(fn, nondiff_argnums=nondiff_argnums)

  def bwd(*_):
    raise NotImplementedError(f"r1jax.kernels.cpu.{name} is forward only (the sampler's decode steps); "
                              "differentiate through the XLA path (a Runtime whose moe_impl / attention_impl / "
                              "mlp_impl is not 'kernel') instead")

  wrapped.defvjp(lambda *args: (wrapped(*args), None), bwd)
  return wrapped


def _routed_experts_call(x_td, idx_tk, w_tk, wg, wu, wd):
  call = jax.ffi.ffi_call("r1jax_routed_experts", jax.ShapeDtypeStruct(x_td.shape, jnp.float32))
  return call(x_td, idx_tk, w_tk, panels(wg), panels(wu), panels(wd))


_routed_experts_fwd = _forward_only(_routed_experts_call, "routed_experts")


def routed_experts(x_td, idx_tk, w_tk, wg_edf, wu_edf, wd_efd) -> jax.Array:
  """f32[T, D]: y_t = sum_j w_tj * SwiGLU expert idx_tj (x_t), computing only the chosen experts
  (slots with w_tj == 0, e.g. padding, are skipped).

  All float inputs f32 (the kernel has no other types); idx int32 in [0, E); D and F whole multiples of
  the machine's vector width (8 or 16 floats; see panel_width). Forward only; CPU only, on one device.
  """
  _check("routed_experts", x=x_td, weights=w_tk, gate_proj=wg_edf, up_proj=wu_edf, down_proj=wd_efd)
  if not supports_experts(x_td.shape[1], wg_edf.shape[2]):
    raise ValueError(f"routed_experts: hidden size {x_td.shape[1]} and expert width {wg_edf.shape[2]} must be "
                     f"multiples of the kernel's vector width {vector_width()}")
  return _routed_experts_fwd(x_td, idx_tk.astype(jnp.int32), w_tk, wg_edf, wu_edf, wd_efd)


def _attention_call(q_lat, q_pe, latent, k_rope, mask, scale):
  call = jax.ffi.ffi_call("r1jax_mla_decode_attention", jax.ShapeDtypeStruct(q_lat.shape, jnp.float32))
  return call(q_lat, q_pe, latent, k_rope, mask, scale=np.float32(scale))


_attention_fwd = _forward_only(_attention_call, "mla_decode_attention", nondiff_argnums=(5,))


def mla_decode_attention(q_lat_bnr, q_pe_bnp, latent_blr, k_rope_blp, mask_bl, scale: float) -> jax.Array:
  """f32[B, N, R]: absorbed MLA attention of one query token per row against the latent cache,

      o[b, n] = sum_s softmax_s(scale * (q_lat[b, n] . latent[b, s] + q_pe[b, n] . k_rope[b, s])) latent[b, s]

  over the slots with mask[b, s] (uniform over all slots for a row with none, as the XLA path does).
  Forward only, CPU only, one device; f32.
  """
  _check("mla_decode_attention", q_lat=q_lat_bnr, q_pe=q_pe_bnp, latent=latent_blr, k_rope=k_rope_blp)
  return _attention_fwd(q_lat_bnr, q_pe_bnp, latent_blr, k_rope_blp, mask_bl.astype(bool), float(scale))
