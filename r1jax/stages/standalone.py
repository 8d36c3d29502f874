"""The single-stage jobs: SFT, distillation, GRPO and rejection sampling over exported model directories.

    model_dir = run_sft(c, ["runs/r1/rs_cold/traces.jsonl"], "runs/r1/tokenizer.model", "runs/sft",
                        init="runs/r1/pretrain/model")       # c: configs/sft.py's get_config()

One job per script: experiments/sft.py, distill.py, grpo.py and rejection_sample.py call `run_<job>`
with their flags. Each `validate_<job>` builds the config's dataclasses, so a bad field fails before any
data, tokenizer or model is loaded; each `run_<job>` calls it first. The training jobs write
DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported model DIR/model (r1jax.stages.exported):
rerunning resumes a killed job and skips a finished one. Rejection sampling writes a traces JSONL and
resumes the same way (r1jax.stages.rejection).
"""
from __future__ import annotations

import os

from r1jax.checkpoint import is_model, load_config, load_model
from r1jax.config_utils import ConfigFieldError, build
from r1jax.data import SentencePieceTokenizer, tasks
from r1jax.model import ModelConfig
from r1jax.stages import exported
from r1jax.stages.grpo import RLStageConfig
from r1jax.stages.lm import LMStageConfig
from r1jax.stages.rejection import RejectionConfig, rejection_sample
from r1jax.train.distill import check_compatible


# ------------------------------------------------------------------------------------------ SFT
def validate_sft(c, vocab_size: int = 64):
  """(ModelConfig, LMStageConfig) of configs/sft.py."""
  return build(ModelConfig, {**c.model.to_dict(), "vocab_size": vocab_size}, "config.model"), \
      build(LMStageConfig, c.sft, "config.sft")


def run_sft(c, data_paths, tokenizer_path: str, workdir: str, init: str | None = None) -> str:
  """SFT (cold start, round-2 SFT) on JSONL traces; returns the exported model directory.

  init: exported model to fine-tune (its config replaces config.model); empty or None: config.model
  from scratch.
  """
  validate_sft(c)                                                  # fail fast, before any work
  tok = exported.tokenizer(tokenizer_path)
  data = exported.sft_data(data_paths)
  model_cfg, sc = validate_sft(c, tok.vocab_size)
  if init:
    model_cfg = load_config(init)
  return exported.lm_stage(workdir, model_cfg, sc, data, tok, init=init or None, metadata={"stage": "sft"})


# ------------------------------------------------------------------------------------------ distillation
def validate_distill(c, vocab_size: int = 64):
  """(student ModelConfig, LMStageConfig) of configs/distill.py."""
  return build(ModelConfig, {**c.student.to_dict(), "vocab_size": vocab_size}, "config.student"), \
      build(LMStageConfig, c.distill, "config.distill")


def run_distill(c, data_paths, tokenizer_path: str, teacher: str, workdir: str,
                student_init: str | None = None) -> str:
  """Distils a dense student from a teacher's traces (+ token-level KD); returns the exported student directory.

  The student trains on the traces with a completion-only loss; with `distill.distill.top_k > 0` the loss
  mixes in the KL to the teacher's top-k next-token distribution, computed on the same packed batch.
  """
  validate_distill(c)                                              # fail fast, before any work
  teacher_cfg = load_config(teacher)
  tok = exported.tokenizer(tokenizer_path)
  data = exported.sft_data(data_paths)
  student_cfg, sc = validate_distill(c, teacher_cfg.vocab_size)
  if student_init:
    student_cfg = load_config(student_init)
  check_compatible(student_cfg, teacher_cfg)
  return exported.lm_stage(workdir, student_cfg, sc, data, tok, init=student_init or None, teacher=teacher,
                           metadata={"stage": "distill"})


# ------------------------------------------------------------------------------------------ GRPO
def validate_grpo(c):
  """(RLStageConfig, task) of configs/grpo.py."""
  rl = build(RLStageConfig, c.rl, "config.rl")
  task = tasks.get(c.task.name, **{k: v for k, v in c.task.items() if k != "name"})
  return rl, task


def run_grpo(c, init: str, tokenizer_path: str, workdir: str) -> str:
  """GRPO from the exported model `init` (also the reference policy); returns the exported policy's directory."""
  rl, task = validate_grpo(c)                                     # fail fast, before any work
  if not is_model(init):
    raise FileNotFoundError(f"--init={init} is not an exported r1jax model (r1jax.checkpoint.save_model)")
  tok = exported.tokenizer(tokenizer_path)
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  test = list(task.examples("test", seed=c.seed, num=c.num_eval_problems)) if c.num_eval_problems else None
  return exported.rl_stage(workdir, rl, init, tok, train, test, metadata={"stage": "grpo"})


# ------------------------------------------------------------------------------------------ rejection sampling
def validate_rejection_sample(c):
  """(RejectionConfig, task): a bad field fails here, before any tokenizer or model is loaded."""
  rc = build(RejectionConfig, c.rejection, "config.rejection")
  try:
    task = tasks.get(c.task.name, **{k: v for k, v in c.task.items() if k != "name"})
  except (ValueError, TypeError) as e:
    raise ConfigFieldError(f"config.task: {e}") from e
  if c.split not in task.splits:
    raise ConfigFieldError(f"config.split={c.split!r}: {c.task.name} has splits {list(task.splits)}")
  if c.num_problems < 1:
    raise ConfigFieldError(f"config.num_problems={c.num_problems!r}: must be >= 1")
  return rc, task


def run_rejection_sample(c, model_dir: str, tokenizer_path: str, out_path: str) -> dict:
  """Samples, filters and writes the traces; returns the stats (see r1jax.stages.rejection.rejection_sample)."""
  rc, task = validate_rejection_sample(c)
  examples = list(task.examples(c.split, seed=c.seed, num=c.num_problems))
  tok = SentencePieceTokenizer.load(tokenizer_path)
  cfg = load_config(model_dir)                        # the config alone: check before loading weights
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"tokenizer {tokenizer_path} has {tok.vocab_size} ids but the model {model_dir} only "
                     f"{cfg.vocab_size}: not the tokenizer it was trained with")
  if rc.max_prompt_len + rc.max_new_tokens > cfg.max_position_embeddings:
    raise ConfigFieldError(f"config.rejection: max_prompt_len + max_new_tokens = "
                           f"{rc.max_prompt_len + rc.max_new_tokens} > the model's max_position_embeddings="
                           f"{cfg.max_position_embeddings}")
  cfg, variables, _ = load_model(model_dir)
  return rejection_sample(cfg, variables, tok, examples, rc, out_path, source=os.path.abspath(model_dir))
