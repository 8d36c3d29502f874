"""SFT, distillation, GRPO, rejection sampling and evaluation as a 2-process job (2 x 4 fake CPU devices,
jax.distributed over loopback, started by python -m r1jax.sharding.launch) write what the same jobs write
as 1 process with 8 devices on the same mesh: per-step metrics, exported models, traces, evaluations."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from r1jax.checkpoint import load_model
from r1jax.model import ModelConfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = pathlib.Path(__file__).with_name("_jobs_worker.py")


def _start(root, launcher_args):
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
  env.update(PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8")
  job = [sys.executable, str(WORKER), str(root)]
  command = [sys.executable, "-m", "r1jax.sharding.launch", *launcher_args, "--", *job] if launcher_args else job
  root.mkdir()
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_every_job_as_two_processes_equals_one_process(tmp_path):
  procs = {"two": _start(tmp_path / "two", ["--num_processes=2", "--devices_per_process=4"]),
           "one": _start(tmp_path / "one", [])}
  for name, p in procs.items():
    out, _ = p.communicate(timeout=900)
    assert p.returncode == 0, (name, out[-4000:])
    assert out.count("DONE") == (2 if name == "two" else 1), out[-2000:]
  # SFT, distillation and GRPO read 2 input shards (one per data slice of the mesh): each of the 2 processes
  # reads only its own, the single process both.
  reads = lambda d, p: [json.loads(l) for l in open(d / f"shards-{p}.jsonl")]
  assert reads(tmp_path / "two", 0) == [{"shards": [0], "count": 2}] * 3
  assert reads(tmp_path / "two", 1) == [{"shards": [1], "count": 2}] * 3
  assert reads(tmp_path / "one", 0) == [{"shards": [0, 1], "count": 2}] * 3
  one, two = tmp_path / "one" / "run", tmp_path / "two" / "run"
  for job in ("sft", "distill", "grpo"):
    va, vb = load_model(one / job / "model", ModelConfig)[1], load_model(two / job / "model", ModelConfig)[1]
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=job), va, vb)
    ma = [json.loads(l) for l in open(one / job / "metrics.jsonl")]
    mb = [json.loads(l) for l in open(two / job / "metrics.jsonl")]
    assert len(ma) == len(mb) >= 2, job                     # process 0 alone wrote: no line twice
    for ra, rb in zip(ma, mb):
      for k, v in ra.items():
        if "time" not in k and k != "it_per_s":
          assert rb[k] == (pytest.approx(v, rel=1e-4, abs=1e-5) if isinstance(v, float) else v), (job, k)
  traces = lambda d: [{k: v for k, v in json.loads(l).items() if k != "source"} for l in open(d / "rs" / "traces.jsonl")]
  assert traces(one) == traces(two) and traces(one)
  results = lambda d: {name: {k: v for k, v in rep.items() if k not in ("eval_setup", "model_metadata")}
                       for name, rep in json.loads((d / "eval" / "results.json").read_text()).items()}
  assert results(one) == results(two)
