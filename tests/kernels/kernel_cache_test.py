"""The compiled-kernel cache loads only what this user built: a private directory, the library's SHA-256
checked against the digest recorded at build time, and shared or tampered files never used."""
import os
import stat

import pytest

from r1jax.kernels import cpu

pytestmark = pytest.mark.skipif(cpu._compiler() is None, reason="no C++ compiler on this machine")


@pytest.fixture
def tiny_source(tmp_path, monkeypatch):
  """A one-function library instead of the real kernels (which take ~15 s to compile)."""
  src = tmp_path / "tiny.cc"
  src.write_text('extern "C" int R1jaxTiny() { return 7; }\n')
  monkeypatch.setattr(cpu, "_SOURCE", src)
  return src


def test_a_private_cache_is_built_once_and_reused(tmp_path, monkeypatch, tiny_source):
  cache = tmp_path / "cache"
  monkeypatch.setenv("R1JAX_KERNEL_CACHE", str(cache))
  lib = cpu._build(cpu._compiler())
  assert lib.parent == cache and stat.S_IMODE(cache.stat().st_mode) == 0o700
  assert not lib.stat().st_mode & 0o077 and (cache / (lib.name + ".sha256")).exists()
  mtime = lib.stat().st_mtime_ns
  assert cpu._build(cpu._compiler()) == lib and lib.stat().st_mtime_ns == mtime      # not rebuilt


def test_a_tampered_or_linked_library_is_rebuilt_not_loaded(tmp_path, monkeypatch, tiny_source):
  monkeypatch.setenv("R1JAX_KERNEL_CACHE", str(tmp_path / "cache"))
  lib = cpu._build(cpu._compiler())
  good = lib.read_bytes()
  with open(lib, "ab") as f:
    f.write(b"injected")
  assert cpu._build(cpu._compiler()) == lib and lib.read_bytes() == good
  elsewhere = tmp_path / "elsewhere.so"
  elsewhere.write_bytes(good)
  lib.unlink()
  lib.symlink_to(elsewhere)                                  # same bytes, but a link: not trusted
  assert cpu._build(cpu._compiler()) == lib and not lib.is_symlink()


def test_a_cache_others_can_write_is_not_used(tmp_path, monkeypatch, tiny_source, capsys):
  shared = tmp_path / "shared"
  shared.mkdir()
  os.chmod(shared, 0o777)
  monkeypatch.setenv("R1JAX_KERNEL_CACHE", str(shared))
  monkeypatch.setattr(cpu.tempfile, "tempdir", str(tmp_path / "tmp"))      # the per-user fallback lives here
  (tmp_path / "tmp").mkdir()
  lib = cpu._build(cpu._compiler())
  assert lib.parent == tmp_path / "tmp" / f"r1jax-kernels-{os.getuid()}"
  assert stat.S_IMODE(lib.parent.stat().st_mode) == 0o700 and not list(shared.iterdir())
  assert f"kernel cache {shared} is not private" in capsys.readouterr().err
