"""Every config validates the argument after the colon in `--config=FILE:ARG`; input fields are checked."""
import importlib
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from r1jax.config_utils import ConfigFieldError, input_path, input_paths

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = sorted(p.stem for p in (ROOT / "configs").glob("*.py") if not p.stem.startswith("_"))
# The arguments each config documents; anything else must be refused.
VALID = {"r1_pipeline": ("runlocal", "tiny"),
         "grpo_gsm8k": ("qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "r1-distill-qwen-1.5b", "qwen3-0.6b",
                        "qwen3-30b-a3b", "tiny"),
         "sft_hf": ("qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "r1-distill-qwen-1.5b", "qwen3-0.6b",
                    "qwen3-30b-a3b", "tiny"),
         "distill_hf": ("qwen2.5-0.5b", "qwen2.5-1.5b", "qwen3-0.6b", "tiny"),
         "rejection_sample": ("runlocal", "gsm8k")}


def test_every_config_is_listed():
  assert set(CONFIGS) == {"distill", "distill_hf", "evaluate", "grpo", "grpo_gsm8k", "r1_pipeline", "r1_zero",
                          "rejection_sample", "sft", "sft_hf"}


def test_every_grpo_gsm8k_preset_builds_its_stage_and_evaluations():
  from configs import grpo_gsm8k
  from r1jax.stages import models, standalone
  for preset in VALID["grpo_gsm8k"]:
    c = grpo_gsm8k.get_config(preset)
    rl, task = standalone.validate_grpo(c)
    assert task.name == "gsm8k" and rl.template == "chat_boxed" and rl.max_prompt_len + rl.max_new_tokens <= 4352
    assert [name for name, _ in standalone.final_evals(c)] == ["gsm8k", "math500"]
    settings = dict(models.load_settings(c))
    assert settings == ({} if preset == "tiny" else {"dtype": "bfloat16", "param_dtype": "float32", "remat": "full"})
  c = grpo_gsm8k.get_config("tiny")
  c.final_eval.tasks = "gsm8k:validation"
  with pytest.raises(ConfigFieldError, match="config.final_eval.tasks: 'gsm8k:validation': gsm8k has splits"):
    standalone.final_evals(c)
  c.load.dtype = "bf16"
  with pytest.raises(ConfigFieldError, match="config.load.dtype='bf16': must be one of"):
    models.load_settings(c)


def test_every_sft_and_distill_preset_builds_its_stage():
  from configs import distill_hf, sft_hf
  from r1jax.stages import standalone
  for preset in VALID["sft_hf"]:
    c = sft_hf.get_config(preset)
    _, sc = standalone.validate_sft(c)
    assert c.export_hf and sc.lora.enabled == (preset == "qwen3-30b-a3b")
  for preset in VALID["distill_hf"]:
    _, sc = standalone.validate_distill(distill_hf.get_config(preset))
    assert sc.distill.top_k == 0


@pytest.mark.parametrize("name", CONFIGS)
def test_valid_arguments_load_and_typos_are_refused(name):
  module = importlib.import_module(f"configs.{name}")
  for arg in (None, *VALID.get(name, ("runlocal",))):
    assert module.get_config(arg) is not None
  for typo in ("runlocl", "RUNLOCAL", "", "tiny_moe"):
    if typo in VALID.get(name, ("runlocal",)):
      continue
    with pytest.raises(ConfigFieldError) as e:
      module.get_config(typo)
    message = str(e.value)
    assert f"configs/{name}.py" in message and repr(typo) in message
    for arg in VALID.get(name, ("runlocal",)):
      assert repr(arg) in message


def test_the_main_job_refuses_a_typo_before_doing_anything(tmp_path):
  workdir = tmp_path / "run"
  env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": ""}
  proc = subprocess.run([sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:runlocl",
                         f"--workdir={workdir}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode != 0
  assert "unknown config argument 'runlocl'" in proc.stderr and "'runlocal'" in proc.stderr
  assert not workdir.exists()


def test_input_fields_fail_naming_the_field_and_the_path(tmp_path):
  a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
  a.write_text("")
  b.write_text("")
  c = ml_collections.ConfigDict(dict(tokenizer="", init="", data=f"{a}, {b},", count=3))
  with pytest.raises(ConfigFieldError, match=r"^config\.tokenizer is required: the .model file \(set "
                     r"--config\.tokenizer=PATH\)$"):
    input_path(c, "tokenizer", "the .model file")
  assert input_path(c, "init", "a model", required=False) == ""
  c.init = str(tmp_path / "nope")
  with pytest.raises(FileNotFoundError, match=r"^config\.init='.*nope' does not exist \(a model\)$"):
    input_path(c, "init", "a model", required=False)
  c.init = str(tmp_path)
  assert input_path(c, "init", "a model") == str(tmp_path)
  with pytest.raises(ConfigFieldError, match=r"^config\.count=3: must be a path"):
    input_path(c, "count", "a file")
  assert input_paths(c, "data", "traces") == [str(a), str(b)]
  c.data = f"{a},{tmp_path}/gone.jsonl"
  with pytest.raises(FileNotFoundError, match=r"^config\.data: '.*gone\.jsonl' does not exist \(traces\)$"):
    input_paths(c, "data", "traces")
  c.data = " , "
  with pytest.raises(ConfigFieldError, match=r"^config\.data is required: traces"):
    input_paths(c, "data", "traces")


def test_the_gsm8k_rejection_sampling_config_builds_and_keeps_correct_boxed_answers():
  from configs import rejection_sample
  from r1jax.stages import standalone
  c = rejection_sample.get_config("gsm8k")
  rc, task = standalone.validate_rejection_sample(c)
  assert task.name == "gsm8k" and rc.template == "chat_boxed" and c.split == "train"
  assert dict(rc.min_rewards) == {"accuracy": 1.0} and dict(rc.reward_weights) == {"accuracy": 1.0}
