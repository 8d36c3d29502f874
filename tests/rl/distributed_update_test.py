"""Two GRPO updates in a real 2-process jax.distributed job (2 CPU devices each, loopback) equal the
same updates in one process with 4 devices: same mesh {"data": 2, "expert": 2}, same global batch.

Both runs are subprocesses of _distributed_update_worker.py (the device count is fixed when jax starts).
"""
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

_WORKER = pathlib.Path(__file__).with_name("_distributed_update_worker.py")
_TIMEOUT_S = 300


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(out: pathlib.Path, local_devices: int, env: dict) -> subprocess.Popen:
  env = dict(env, XLA_FLAGS=f"--xla_force_host_platform_device_count={local_devices}", JAX_PLATFORMS="cpu")
  return subprocess.Popen([sys.executable, str(_WORKER), str(out)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_two_process_grpo_update_equals_one_process(tmp_path):
  # No SLURM/TPU detection and no persistent compilation cache (as in the sharding 2-process test).
  base = {k: v for k, v in os.environ.items()
          if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
  multi = dict(base, R1JAX_COORDINATOR=f"127.0.0.1:{_free_port()}", R1JAX_NUM_PROCESSES="2")
  # All three at once: the two workers spend much of their time waiting on each other.
  procs = [_launch(tmp_path / "ref.npz", 4, base)]
  procs += [_launch(tmp_path / "multi.npz", 2, dict(multi, R1JAX_PROCESS_ID=str(i))) for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=_TIMEOUT_S))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for name, p, (out, err) in zip(("reference", "process 0", "process 1"), procs, outputs):
    assert p.returncode == 0, f"{name} failed:\n{out[-2000:]}\n{err[-4000:]}"

  ref, multi = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "multi.npz")
  assert sorted(ref.files) == sorted(multi.files)
  assert any(k.startswith("params/layers_1/mlp/") for k in ref.files)
  assert int(ref["step"]) == int(multi["step"]) == 2
  np.testing.assert_allclose(multi["old_logp"], ref["old_logp"], rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(multi["losses"], ref["losses"], rtol=1e-5, atol=1e-7)
  assert ref["losses"][1] != ref["losses"][0]          # the first update moved the policy
  for k in ref.files:
    if k.startswith(("params/", "router_bias/")):
      np.testing.assert_allclose(multi[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
