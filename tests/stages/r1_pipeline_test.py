"""configs/r1_pipeline.py validates; bad fields fail before any work; the whole pipeline runs on a tiny
setting, and a pipeline killed mid-way continues where it stopped when rerun with the same command."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs import r1_pipeline as pipeline_config
from r1jax.config_utils import ConfigFieldError
from r1jax.stages.pipeline import ROWS, validate

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize("arg", [None, "runlocal", "tiny"])
def test_config_validates(arg):
  cfgs = validate(pipeline_config.get_config(arg))
  assert cfgs["model"].is_moe and not cfgs["student"].is_moe and cfgs["student"].attention == "gqa"
  assert cfgs["student"].num_params() < cfgs["model"].num_params()
  assert dict(cfgs["rl2"].reward_weights)["language_consistency"] > 0
  assert "language_consistency" not in dict(cfgs["r1_zero"].reward_weights)


@pytest.mark.parametrize("field,value,match", [
    ("rl2.group_size", 1, "config.rl2: RLStageConfig.group_size=1"),
    ("student.num_key_value_heads", 3, "config.student: ModelConfig.num_key_value_heads=3"),
    ("rs_cold.config.prefer", "longest", "config.rs_cold.config: RejectionConfig.prefer='longest'"),
    ("distill.distill.kd_weight", -1.0, "config.distill.distill: DistillConfig.kd_weight=-1.0"),
])
def test_bad_field_fails_before_any_work(field, value, match, tmp_path):
  c = pipeline_config.get_config("tiny")
  node = c
  *path, last = field.split(".")
  for p in path:
    node = node[p]
  node[last] = value
  from r1jax.stages.pipeline import run
  with pytest.raises((ConfigFieldError, ValueError), match=match.replace("(", r"\(").replace(")", r"\)")):
    run(c, str(tmp_path / "r1"))
  assert not os.listdir(tmp_path / "r1")                 # nothing trained, not even the tokenizer


def _pipeline(workdir):
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT)
  return subprocess.Popen([sys.executable, "-m", "experiments.r1_pipeline", "--config=configs/r1_pipeline.py:tiny",
                           f"--workdir={workdir}"], cwd=ROOT, env=env)


@pytest.mark.slow
def test_tiny_pipeline_killed_and_rerun_finishes(tmp_path):
  workdir = tmp_path / "r1"
  proc = _pipeline(workdir)
  deadline = time.time() + 600
  while time.time() < deadline and not (workdir / "rs_cold" / "traces.jsonl.stats.json").exists():
    assert proc.poll() is None, "the pipeline ended before the kill"
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  pretrain_model = (workdir / "pretrain" / "model" / "model_config.json").stat().st_mtime_ns
  assert not (workdir / "report.md").exists()

  assert _pipeline(workdir).wait(timeout=900) == 0
  # Finished stages were not redone; every stage produced its output.
  assert (workdir / "pretrain" / "model" / "model_config.json").stat().st_mtime_ns == pretrain_model
  for stage in ("pretrain", "r1_zero", "sft_cold", "rl2", "sft_r1", "student_pretrain", "distill"):
    assert (workdir / stage / "model" / "model_config.json").exists(), stage
  with open(workdir / "eval" / "results.json") as f:
    results = json.load(f)
  assert set(results) == set(ROWS)
  for rep in results.values():
    assert {"pass@1_greedy", "pass@1_sampled", "language_consistent_greedy", "format_greedy"} <= set(rep)
  report = (workdir / "report.md").read_text()
  assert "R1-Zero" in report and "acceptance" in report
  for name in ("curves_r1_zero.png", "curves_rl2.png", "eval/results.png", "eval/results.md"):
    assert (workdir / name).exists(), name
