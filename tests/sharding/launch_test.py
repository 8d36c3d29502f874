"""The local launcher (python -m r1jax.sharding.launch) and the main job as a real multi-process job.

The slow test is the check that the project runs on several hosts: the main job's smoke config as 2
processes x 4 fake CPU devices (jax.distributed over loopback) gives the metrics, evaluations, report and
checkpoints of 1 process with 8 devices on the same mesh.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from r1jax.checkpoint import CheckpointManager
from r1jax.sharding import launch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_process_env_names_the_coordinator_and_sets_the_device_count():
  env = launch.process_env({"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8", "A": "b"},
                           process_id=1, num_processes=2, coordinator="127.0.0.1:1234", devices_per_process=4)
  assert env["R1JAX_COORDINATOR"] == "127.0.0.1:1234" and env["R1JAX_NUM_PROCESSES"] == "2"
  assert env["R1JAX_PROCESS_ID"] == "1" and env["A"] == "b"
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=4"
  assert "XLA_FLAGS" not in launch.process_env({}, process_id=0, num_processes=1, coordinator="h:1",
                                               devices_per_process=None)


def test_a_failing_process_stops_the_others_and_sets_the_status(tmp_path):
  script = ("import os, sys, time\n"
            "i = int(os.environ['R1JAX_PROCESS_ID'])\n"
            "print('hello from', i, 'of', os.environ['R1JAX_NUM_PROCESSES'], flush=True)\n"
            "sys.exit(3) if i == 1 else time.sleep(120)\n")
  out = tmp_path / "out.txt"
  t0 = time.time()
  with open(out, "w") as f:
    rc = launch.launch([sys.executable, "-c", script], 3, out=f)
  assert rc == 3 and time.time() - t0 < 60                  # process 0 and 2 were stopped, not waited for
  text = out.read_text()
  for i in range(3):
    assert f"[{i}] hello from {i} of 3" in text
  assert "[launch] process 1 exited with status 3" in text
  with pytest.raises(ValueError, match="num_processes must be >= 1"):
    launch.launch(["true"], 0)


SMALL = ["--config.num_train_problems=64", "--config.num_eval_problems=16", "--config.pretrain.num_steps=4",
         "--config.pretrain.log_every=1", "--config.pretrain.checkpoint_every=2",
         "--config.pretrain.optim.total_steps=4", "--config.pretrain.optim.warmup_steps=1",
         "--config.rl.num_steps=2", "--config.rl.checkpoint_every=1", "--config.rl.eval.num_examples=16",
         "--config.rl.eval.batch_size=8", "--config.eval.num_examples=16", "--config.eval.batch_size=8",
         "--config.mesh.data=2", "--config.mesh.expert=4"]


def _main_job(workdir, launcher_args):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  job = [sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:runlocal", *SMALL,
         f"--workdir={workdir}"]
  command = [sys.executable, "-m", "r1jax.sharding.launch", *launcher_args, "--", *job] if launcher_args else job
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(path):
  return [json.loads(l) for l in open(path)]


@pytest.mark.slow
def test_the_main_job_as_two_processes_equals_one_process(tmp_path):
  procs = {"two": _main_job(tmp_path / "two", ["--num_processes=2", "--devices_per_process=4"]),
           "one": _main_job(tmp_path / "one", [])}
  for name, p in procs.items():
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, (name, out[-4000:])
  for part in ("pretrain", "rl"):
    a, b = _records(tmp_path / "one" / part / "metrics.jsonl"), _records(tmp_path / "two" / part / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 2     # one writer: no line twice
    for ra, rb in zip(a, b):
      assert ra.keys() == rb.keys()
      for k, v in ra.items():
        if "time" not in k and k != "it_per_s":
          assert rb[k] == (pytest.approx(v, rel=1e-4, abs=1e-6) if isinstance(v, float) else v), (part, k)
    ca = CheckpointManager(tmp_path / "one" / part / "checkpoints")
    cb = CheckpointManager(tmp_path / "two" / part / "checkpoints")
    assert ca.all_steps() == cb.all_steps() and ca.all_steps()
    sa, _ = ca.restore(ca.latest_step())
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])   # the 2-process layout cannot be rebuilt here
    target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), sa)
    sb, _ = cb.restore(cb.latest_step(), target=target)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=part), sa, sb)
  for name in ("eval_base.json", "eval_final.json"):
    assert json.loads((tmp_path / "one" / name).read_text()) == json.loads((tmp_path / "two" / name).read_text())
  strip = lambda p: [l for l in p.read_text().splitlines() if not l.startswith("Wall time")]
  assert strip(tmp_path / "one" / "report.md") == strip(tmp_path / "two" / "report.md")
  assert (tmp_path / "two" / "tokenizer.model").read_bytes() == (tmp_path / "one" / "tokenizer.model").read_bytes()
