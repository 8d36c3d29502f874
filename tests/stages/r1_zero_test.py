"""configs/r1_zero.py validates for its documented args; the main job (the script, as 2 processes, and in process)
runs end to end on a mesh and on one device with the same results."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import r1_zero as r1_zero_config
from r1jax.checkpoint import CheckpointManager
from r1jax.config_utils import ConfigFieldError
from r1jax.stages.r1_zero import validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_validates(arg):
  model, pretrain, rl, ev = validate(r1_zero_config.get_config(arg))
  assert model.is_moe and rl.group_size >= 2 and ev.num_samples >= 1


def test_bad_config_fails_before_any_work():
  c = r1_zero_config.get_config("runlocal")
  c.unlock()
  c.rl.group_size = 1
  with pytest.raises(ConfigFieldError, match="config.rl: RLStageConfig.group_size=1"):
    validate(c)
  c.rl.group_size = 8
  c.model.n_group = 3
  with pytest.raises(ConfigFieldError, match="config.model: ModelConfig.n_group=3"):
    validate(c)


def _small(mesh, input_shards=0):
  c = r1_zero_config.get_config("runlocal")
  c.num_train_problems, c.num_eval_problems = 64, 16
  c.pretrain.update(num_steps=4, log_every=1, checkpoint_every=2)
  c.pretrain.optim.update(total_steps=4, warmup_steps=1)
  c.rl.update(num_steps=2, checkpoint_every=1)
  c.rl.eval.update(num_examples=16, batch_size=8)
  c.eval.update(num_examples=16, batch_size=8)
  c.pretrain.input_shards = c.rl.input_shards = input_shards
  c.mesh.update(mesh)
  return c


def _metrics(path):
  with open(path) as f:
    return [{k: v for k, v in json.loads(l).items() if "time" not in k} for l in f]


def _two_processes(workdir, audit_dir):
  """The same job as _small({"data": 2, "expert": 4}) started as 2 processes x 4 fake CPU devices by the local
  launcher (jax.distributed over loopback); each process logs the files it writes to audit_dir
  (tests/stages/_write_audit)."""
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("SLURM_", "R1JAX_", "TPU_", "JAX_COMPILATION_CACHE", "XLA_FLAGS"))}
  env.update(PYTHONPATH=os.pathsep.join([os.path.join(ROOT, "tests", "stages", "_write_audit"), ROOT]),
             JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8", R1JAX_WRITE_AUDIT=audit_dir)
  small = ["--config.num_train_problems=64", "--config.num_eval_problems=16", "--config.pretrain.num_steps=4",
           "--config.pretrain.log_every=1", "--config.pretrain.checkpoint_every=2",
           "--config.pretrain.optim.total_steps=4", "--config.pretrain.optim.warmup_steps=1",
           "--config.rl.num_steps=2", "--config.rl.checkpoint_every=1", "--config.rl.eval.num_examples=16",
           "--config.rl.eval.batch_size=8", "--config.eval.num_examples=16", "--config.eval.batch_size=8",
           "--config.mesh.data=2", "--config.mesh.expert=4"]
  command = [sys.executable, "-m", "r1jax.sharding.launch", "--num_processes=2", "--devices_per_process=4", "--",
             sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:runlocal", *small,
             f"--workdir={workdir}"]
  return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _same_run(a_dir, b_dir, *, restore_b_on_one_device=False):
  """Two runs of the main job wrote the same per-step metrics (rel 1e-4) and checkpoints (every array)."""
  for part in ("pretrain", "rl"):
    a, b = _metrics(a_dir / part / "metrics.jsonl"), _metrics(b_dir / part / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 2     # one writer: no line twice
    for ra, rb in zip(a, b):
      assert ra.keys() == rb.keys()
      for k, v in ra.items():
        if k == "it_per_s":
          continue
        assert rb[k] == (pytest.approx(v, rel=1e-4, abs=1e-6) if isinstance(v, float) else v), (part, ra["step"], k)
    ca, cb = CheckpointManager(a_dir / part / "checkpoints"), CheckpointManager(b_dir / part / "checkpoints")
    assert ca.all_steps() == cb.all_steps() and ca.all_steps()
    sa, _ = ca.restore(ca.latest_step())
    target = None
    if restore_b_on_one_device:                     # a 2-process layout cannot be rebuilt in this process
      one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), sa)
    sb, _ = cb.restore(cb.latest_step(), target=target)
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5, err_msg=part), sa, sb)


@pytest.mark.slow
def test_the_main_job_on_a_mesh_and_as_two_processes_gives_the_one_device_run(tmp_path):
  """--config.mesh.data=2 --config.mesh.expert=4 on 8 fake devices: every stage runs on the mesh (routed
  experts exchanged by all-to-all) and each step's metrics and the checkpoints equal the one-device run's to
  float rounding. The same job as 2 processes x 4 devices (the check that the project runs on several
  hosts) writes what the one process with 8 devices writes: metrics, checkpoints, both evaluations, the
  report and the tokenizer; process 1 writes nothing in the workdir but its share of the checkpoints."""
  from r1jax.stages import r1_zero
  (tmp_path / "audit").mkdir()
  two = _two_processes(tmp_path / "two", str(tmp_path / "audit"))                     # runs beside the in-process runs
  # On the mesh each of the 2 data slices reads its own input shard: the one-device run reads the same 2.
  one = r1_zero.run(_small({}, input_shards=2), str(tmp_path / "one"))
  eight = r1_zero.run(_small({"data": 2, "expert": 4}), str(tmp_path / "eight"))
  assert one["final"]["pass@1_sampled"] == eight["final"]["pass@1_sampled"]
  assert one["base"]["samples"] == eight["base"]["samples"] and one["final"]["samples"] == eight["final"]["samples"]
  _same_run(tmp_path / "one", tmp_path / "eight")
  out, _ = two.communicate(timeout=900)
  assert two.returncode == 0, out[-4000:]
  _same_run(tmp_path / "eight", tmp_path / "two", restore_b_on_one_device=True)
  for name in ("eval_base.json", "eval_final.json"):
    # eval_setup names the weights by their bytes, which float rounding on another layout changes
    report = lambda p: {k: v for k, v in json.loads(p.read_text()).items() if k != "eval_setup"}
    assert report(tmp_path / "eight" / name) == report(tmp_path / "two" / name)
  for name in ("report.md", "curves.png", "eval_base.json", "eval_final.json", "tokenizer.model"):
    assert (tmp_path / "two" / name).exists(), name              # what the script writes (run as 2 processes)
  assert 0.0 <= json.loads((tmp_path / "two" / "eval_final.json").read_text())["pass@1_greedy"] <= 1.0
  strip = lambda p: [l for l in p.read_text().splitlines() if not l.startswith("Wall time")]
  assert strip(tmp_path / "eight" / "report.md") == strip(tmp_path / "two" / "report.md")
  assert (tmp_path / "two" / "tokenizer.model").read_bytes() == (tmp_path / "eight" / "tokenizer.model").read_bytes()
  # Only process 0 writes the job's files; process 1 writes only inside checkpoint directories (Orbax: each
  # process its own shards).
  workdir = str(tmp_path / "two") + os.sep
  logged = {i: [l.split(" ", 1) for l in (tmp_path / "audit" / f"process_{i}.log").read_text().splitlines()]
            for i in (0, 1)}
  in_workdir = {i: [(e, p) for e, p in lines if p.startswith(workdir)] for i, lines in logged.items()}
  written0 = {os.path.relpath(p, workdir) for _, p in in_workdir[0]}
  assert {"eval_base.json", "eval_final.json", "report.md", os.path.join("pretrain", "metrics.jsonl"),
          os.path.join("rl", "metrics.jsonl")} <= written0
  outside = [(e, p) for e, p in in_workdir[1] if "checkpoints" not in os.path.relpath(p, workdir).split(os.sep)]
  assert not outside, outside
  assert any("checkpoints" in p for _, p in in_workdir[1])        # the audit saw process 1 write (its shards)


def test_a_mesh_that_does_not_fit_fails_before_any_work(tmp_path):
  from r1jax.stages import r1_zero
  c = _small({"data": 3, "expert": 4})
  with pytest.raises(ValueError, match="config.mesh: .*needs 12 devices, have 8"):
    r1_zero.run(c, str(tmp_path))
  assert not os.listdir(tmp_path)
  c = _small({"expert": 0})
  with pytest.raises(ValueError, match="config.mesh.expert=0: must be a positive integer or -1"):
    r1_zero.run(c, str(tmp_path))
