"""configs/r1_zero.py validates for its documented args; the main job runs end to end in smoke mode."""
import json
import os
import subprocess
import sys

import pytest

from configs import r1_zero as r1_zero_config
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
