"""configs/r1_zero.py validates for its documented args; the main job runs end to end in smoke mode."""
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


@pytest.mark.slow
def test_smoke_run_writes_the_report(tmp_path):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  subprocess.run([sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:runlocal",
                  f"--workdir={tmp_path}"], cwd=ROOT, env=env, check=True, timeout=900)
  for name in ("report.md", "curves.png", "eval_base.json", "eval_final.json", "tokenizer.model"):
    assert (tmp_path / name).exists(), name
  with open(tmp_path / "eval_final.json") as f:
    assert 0.0 <= json.load(f)["pass@1_greedy"] <= 1.0


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


@pytest.mark.slow
def test_the_main_job_on_a_mesh_gives_the_one_device_metrics(tmp_path):
  """--config.mesh.data=2 --config.mesh.expert=4 on 8 fake devices: every stage runs on the mesh (routed
  experts exchanged by all-to-all) and each step's metrics equal the one-device run's to float rounding."""
  from r1jax.stages import r1_zero
  # On the mesh each of the 2 data slices reads its own input shard: the one-device run reads the same 2.
  one = r1_zero.run(_small({}, input_shards=2), str(tmp_path / "one"))
  eight = r1_zero.run(_small({"data": 2, "expert": 4}), str(tmp_path / "eight"))
  assert one["final"]["pass@1_sampled"] == eight["final"]["pass@1_sampled"]
  assert one["base"]["samples"] == eight["base"]["samples"] and one["final"]["samples"] == eight["final"]["samples"]
  for part in ("pretrain", "rl"):
    a, b = _metrics(tmp_path / "one" / part / "metrics.jsonl"), _metrics(tmp_path / "eight" / part / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] and len(a) >= 2
    for ra, rb in zip(a, b):
      assert ra.keys() == rb.keys()
      for k, v in ra.items():
        if isinstance(v, float):
          assert rb[k] == pytest.approx(v, rel=1e-4, abs=1e-6), (part, ra["step"], k)
        else:
          assert rb[k] == v, (part, ra["step"], k)
    # The same checkpoints: steps, and every array of the state (and the RL reference) to float rounding.
    ca = CheckpointManager(tmp_path / "one" / part / "checkpoints")
    cb = CheckpointManager(tmp_path / "eight" / part / "checkpoints")
    assert ca.all_steps() == cb.all_steps() and ca.all_steps()
    (sa, _), (sb, _) = ca.restore(ca.latest_step()), cb.restore(cb.latest_step())
    assert jax.tree.structure(sa) == jax.tree.structure(sb)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=part), sa, sb)


def test_a_mesh_that_does_not_fit_fails_before_any_work(tmp_path):
  from r1jax.stages import r1_zero
  c = _small({"data": 3, "expert": 4})
  with pytest.raises(ValueError, match="config.mesh: .*needs 12 devices, have 8"):
    r1_zero.run(c, str(tmp_path))
  assert not os.listdir(tmp_path)
  c = _small({"expert": 0})
  with pytest.raises(ValueError, match="config.mesh.expert=0: must be a positive integer or -1"):
    r1_zero.run(c, str(tmp_path))
