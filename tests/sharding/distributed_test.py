"""Tests for r1jax.sharding.distributed: settings from args / env / SLURM, and a real 2-process run."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax.sharding import distributed, make_mesh
from r1jax.sharding.distributed import DistributedConfig, resolve_config

_WORKER = pathlib.Path(__file__).with_name("_two_process_worker.py")

# An `srun -N2 --ntasks-per-node=4` step, task 5 (second node, local id 1).
SLURM_ENV = {
    "SLURM_JOB_ID": "123456", "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
    "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[01-08]",
    "SLURM_STEP_NUM_NODES": "2",
}


# --- nodelists ------------------------------------------------------------------------------------


@pytest.mark.parametrize("nodelist, first", [
    ("node[01-04,07]", "node01"),
    ("node07", "node07"),
    ("node07,node01", "node07"),
    ("a-b[9-11]", "a-b9"),
    ("rack[2-3]-n[005,1]", "rack2-n005"),
    ("gpu[003,007-015],cpu1", "gpu003"),
])
def test_slurm_first_host(nodelist, first):
  assert distributed.slurm_first_host(nodelist) == first


def test_expand_slurm_nodelist():
  assert distributed.expand_slurm_nodelist("node[01-03,10],login,r[1-2]-n[8,9]") == [
      "node01", "node02", "node03", "node10", "login", "r1-n8", "r1-n9", "r2-n8", "r2-n9"]
  assert distributed.expand_slurm_nodelist("n[098-101]") == ["n098", "n099", "n100", "n101"]
  for bad in ("node[01-03", "node]1[", "node[a-b]", "node[3-1]", ""):
    with pytest.raises(ValueError):
      distributed.expand_slurm_nodelist(bad)


# --- resolving the settings -----------------------------------------------------------------------


def test_single_process_by_default():
  assert resolve_config(env={}, on_tpu=False) == DistributedConfig("single")
  assert resolve_config(env={"R1JAX_NUM_PROCESSES": "1"}, on_tpu=False).source == "single"
  # One srun task is a single process too.
  one_task = {"SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_STEP_NODELIST": "n1"}
  assert resolve_config(env=one_task, on_tpu=False).source == "single"


def test_slurm():
  cfg = resolve_config(env=SLURM_ENV, on_tpu=False)
  # Port as JAX derives it: 123456 % 4096 + 61440 = 576 + 61440.
  assert cfg == DistributedConfig("slurm", "gpu07:62016", 8, 5, (1,))
  # The step nodelist wins over the job's; the job's is the fallback.
  env = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_STEP_NODELIST"}
  assert resolve_config(env=env, on_tpu=False).coordinator_address == "gpu01:62016"
  # One task per node keeps every local device.
  env = dict(SLURM_ENV, SLURM_NTASKS="2", SLURM_PROCID="1", SLURM_LOCALID="0")
  assert resolve_config(env=env, on_tpu=False).local_device_ids is None
  assert resolve_config(env=dict(SLURM_ENV, R1JAX_COORDINATOR_PORT="999"),
                        on_tpu=False).coordinator_address == "gpu07:999"


def test_precedence_args_then_env_then_slurm():
  env = dict(SLURM_ENV, R1JAX_COORDINATOR="10.0.0.1:1234", R1JAX_PROCESS_ID="3")
  cfg = resolve_config(env=env, on_tpu=False)
  assert (cfg.coordinator_address, cfg.num_processes, cfg.process_id) == ("10.0.0.1:1234", 8, 3)
  cfg = resolve_config("host:1", 4, 2, [0, 1], env=env, on_tpu=False)
  assert cfg == DistributedConfig("explicit", "host:1", 4, 2, (0, 1))
  # JAX's own variable for the address, R1JAX_* for the rest, no SLURM.
  env = {"JAX_COORDINATOR_ADDRESS": "h:9", "R1JAX_NUM_PROCESSES": "2", "R1JAX_PROCESS_ID": "1",
         "JAX_LOCAL_DEVICE_IDS": "2,3"}
  assert resolve_config(env=env, on_tpu=False) == DistributedConfig("explicit", "h:9", 2, 1, (2, 3))
  assert resolve_config(env=dict(env, R1JAX_COORDINATOR="r:8"),
                        on_tpu=False).coordinator_address == "r:8"


def test_tpu_is_left_to_jax():
  assert resolve_config(env={}, on_tpu=True) == DistributedConfig("tpu", None, None, None)
  assert resolve_config(env={"TPU_WORKER_HOSTNAMES": "t0,t1"}).source == "tpu"
  # Explicit settings still win on a TPU VM.
  assert resolve_config("h:1", 2, 0, env={}, on_tpu=True).source == "explicit"


def test_bad_settings_raise():
  with pytest.raises(ValueError, match="R1JAX_COORDINATOR"):
    resolve_config(num_processes=2, process_id=0, env={}, on_tpu=False)
  with pytest.raises(ValueError, match="R1JAX_PROCESS_ID"):
    resolve_config("h:1", 2, env={}, on_tpu=False)
  with pytest.raises(ValueError, match="not an integer"):
    resolve_config(env={"R1JAX_NUM_PROCESSES": "two"}, on_tpu=False)
  with pytest.raises(ValueError, match="host:port"):
    resolve_config("h", 2, 0, env={}, on_tpu=False)
  with pytest.raises(ValueError, match=r"not in \[0, 2\)"):
    resolve_config("h:1", 2, 2, env={}, on_tpu=False)


def test_initialize_single_process_is_a_noop(monkeypatch):
  for var in list(os.environ):
    if var.startswith(("SLURM_", "R1JAX_", "TPU_")) or var == "JAX_COORDINATOR_ADDRESS":
      monkeypatch.delenv(var)
  assert distributed.initialize() == DistributedConfig("single")
  assert not jax.distributed.is_initialized()


# --- batches --------------------------------------------------------------------------------------


def test_host_local_batch_to_global_single_process():
  mesh = make_mesh({"data": 2, "fsdp": 2, "expert": 2})
  tokens = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
  batch = {"tokens": tokens, "mask": tokens > 4, "examples": [{"q": "1+1"}], "prompts": ["a", "b"]}
  out = distributed.host_local_batch_to_global(batch, mesh)
  np.testing.assert_array_equal(out["tokens"], tokens)
  assert out["tokens"].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"), None)
  assert out["tokens"].sharding.shard_shape((8, 3)) == (2, 3)
  assert out["mask"].dtype == bool
  assert out["examples"] == [{"q": "1+1"}] and out["prompts"] == ["a", "b"]
  with pytest.raises(ValueError, match="0-d"):
    distributed.host_local_batch_to_global({"x": np.float32(1.0)}, mesh)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_over_loopback(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE"))}
  env.update(XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
             R1JAX_COORDINATOR=f"127.0.0.1:{_free_port()}", R1JAX_NUM_PROCESSES="2")
  procs = [subprocess.Popen([sys.executable, str(_WORKER), str(tmp_path)],
                            env=dict(env, R1JAX_PROCESS_ID=str(i)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=120))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  results = []
  for p, (out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
    results.append(json.loads(out.split("RESULT ", 1)[1]))

  # Process p holds 100*p + [[0, 1, 2], [3, 4, 5]]: total 15 + 615.
  for pid, r in enumerate(results):
    assert r["source"] == "explicit" and r["process_id"] == pid
    assert (r["num_processes"], r["local_devices"], r["devices"]) == (2, 2, 4)
    for name in ("data4", "data2_expert2"):
      assert r[name]["shape"] == [4, 3] and r[name]["sum"] == 630.0, (name, r)
      assert r[name]["note"] == f"p{pid}"  # non-array leaves stay per process
    # The checkpoint restores the global array and each process's own data position.
    assert r["ckpt"] == {"sum": 630.0, "next": pid + 1}
  assert sorted(p.name for p in (tmp_path / "1" / "data").glob("process_*")) == [
      "process_0-of-2.json", "process_1-of-2.json"]
