"""The single-stage jobs: SFT, distillation, GRPO and rejection sampling over exported model directories.

    c = sft_config.get_config()                   # configs/sft.py
    c.data, c.tokenizer = "runs/r1/rs_cold/traces.jsonl", "runs/r1/tokenizer.model"
    c.init = "runs/r1/pretrain/model"
    model_dir = run_sft(c, "runs/sft")

One job per script: experiments/sft.py, distill.py, grpo.py and rejection_sample.py call `run_<job>(config,
workdir)`. Every input is a config field (data, tokenizer, init, teacher, student_init, model), set on the
command line as --config.<field>=PATH; the `mesh` section (sizes of data, fsdp, expert, tensor) is
the device mesh the job runs on. Each `run_<job>` first calls `validate_<job>`, which builds the
config's dataclasses (a bad field fails before any data, tokenizer or model is loaded), then checks its
inputs: an empty required field or a path that does not exist fails naming the field. The training jobs
write DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported model DIR/model
(r1jax.stages.exported): rerunning resumes a killed job and skips a finished one. Rejection sampling
writes DIR/traces.jsonl (with traces.jsonl.progress.json and traces.jsonl.stats.json beside it, as the
pipeline's rs_* stage directories) and resumes the same way (r1jax.stages.rejection).
"""
from __future__ import annotations

import os

from r1jax.checkpoint import is_model, load_config, load_model
from r1jax.config_utils import ConfigFieldError, build, input_path, input_paths
from r1jax.data import SentencePieceTokenizer, tasks
from r1jax.model import ModelConfig
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import exported
from r1jax.stages.grpo import RLStageConfig
from r1jax.stages.lm import LMStageConfig
from r1jax.stages.rejection import TRACES, RejectionConfig, rejection_sample
from r1jax.train.distill import check_compatible

# What each input field holds, for the errors of a missing or empty one.
DATA = "comma-separated JSONL trace files, one {\"prompt\", \"completion\"} record per line, e.g. a " \
       "rejection-sampling workdir's traces.jsonl"
TOKENIZER = "the SentencePiece .model file the models use, e.g. runs/r1/tokenizer.model"


def model_input(c, field: str, what: str, *, required: bool = True) -> str | None:
  """The exported model directory in `c.<field>` (None when optional and empty), checked as input_path
  does and, in addition, to be a finished export (r1jax.checkpoint.save_model)."""
  path = input_path(c, field, what, required=required)
  if path and not is_model(path):
    raise FileNotFoundError(f"config.{field}={path!r} is not an exported r1jax model, as "
                            f"r1jax.checkpoint.save_model writes (model_config.json + variables/): {what}")
  return path or None


# ------------------------------------------------------------------------------------------ SFT
def validate_sft(c, vocab_size: int = 64):
  """(ModelConfig, LMStageConfig) of configs/sft.py."""
  return build(ModelConfig, {**c.model.to_dict(), "vocab_size": vocab_size}, "config.model"), \
      build(LMStageConfig, c.sft, "config.sft")


def run_sft(c, workdir: str) -> str:
  """SFT (cold start, round-2 SFT) on the traces c.data; returns the exported model directory.

  c.init: exported model to fine-tune (its config replaces config.model); empty: config.model from
  scratch.
  """
  validate_sft(c)                                                  # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))
  data_paths = input_paths(c, "data", DATA)
  tokenizer_path = input_path(c, "tokenizer", TOKENIZER)
  init = model_input(c, "init", "the exported model to fine-tune; empty: config.model from scratch",
                     required=False)
  tok = exported.tokenizer(tokenizer_path)
  data = exported.sft_data(data_paths)
  model_cfg, sc = validate_sft(c, tok.vocab_size)
  if init:
    model_cfg = load_config(init, ModelConfig)
  return exported.lm_stage(workdir, model_cfg, sc, data, tok, init=init, metadata={"stage": "sft"}, mesh=mesh)


# ------------------------------------------------------------------------------------------ distillation
def validate_distill(c, vocab_size: int = 64):
  """(student ModelConfig, LMStageConfig) of configs/distill.py."""
  return build(ModelConfig, {**c.student.to_dict(), "vocab_size": vocab_size}, "config.student"), \
      build(LMStageConfig, c.distill, "config.distill")


def run_distill(c, workdir: str) -> str:
  """Distils a dense student from a teacher's traces (+ token-level KD); returns the exported student directory.

  The student trains on the traces c.data with a completion-only loss; with `distill.distill.top_k > 0`
  the loss mixes in the KL to the teacher's (c.teacher) top-k next-token distribution, computed on the
  same packed batch. c.student_init: exported student to start from; empty: config.student from scratch.
  """
  validate_distill(c)                                              # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))
  data_paths = input_paths(c, "data", DATA)
  tokenizer_path = input_path(c, "tokenizer", TOKENIZER)
  teacher = model_input(c, "teacher", "the exported teacher model directory")
  student_init = model_input(c, "student_init", "the exported student to start from; empty: config.student "
                             "from scratch", required=False)
  teacher_cfg = load_config(teacher, ModelConfig)
  tok = exported.tokenizer(tokenizer_path)
  data = exported.sft_data(data_paths)
  student_cfg, sc = validate_distill(c, teacher_cfg.vocab_size)
  if student_init:
    student_cfg = load_config(student_init, ModelConfig)
  check_compatible(student_cfg, teacher_cfg)
  return exported.lm_stage(workdir, student_cfg, sc, data, tok, init=student_init, teacher=teacher,
                           metadata={"stage": "distill"}, mesh=mesh)


# ------------------------------------------------------------------------------------------ GRPO
def validate_grpo(c):
  """(RLStageConfig, task) of configs/grpo.py."""
  rl = build(RLStageConfig, c.rl, "config.rl")
  task = tasks.get(c.task.name, **{k: v for k, v in c.task.items() if k != "name"})
  return rl, task


def run_grpo(c, workdir: str) -> str:
  """GRPO from the exported model c.init (also the reference policy); returns the exported policy's directory."""
  rl, task = validate_grpo(c)                                     # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))
  init = model_input(c, "init", "the exported model to start from, also the reference policy")
  tok = exported.tokenizer(input_path(c, "tokenizer", TOKENIZER))
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  test = list(task.examples("test", seed=c.seed, num=c.num_eval_problems)) if c.num_eval_problems else None
  return exported.rl_stage(workdir, rl, init, tok, train, test, metadata={"stage": "grpo"}, mesh=mesh)


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


def run_rejection_sample(c, workdir: str) -> dict:
  """Samples c.model, filters and writes the traces to workdir/traces.jsonl; returns the stats (see
  r1jax.stages.rejection.rejection_sample)."""
  rc, task = validate_rejection_sample(c)                         # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))
  model_dir = model_input(c, "model", "the exported model to sample from")
  tokenizer_path = input_path(c, "tokenizer", TOKENIZER)
  examples = list(task.examples(c.split, seed=c.seed, num=c.num_problems))
  tok = SentencePieceTokenizer.load(tokenizer_path)
  cfg = load_config(model_dir, ModelConfig)          # the config alone: check before loading weights
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"config.tokenizer={tokenizer_path!r} has {tok.vocab_size} ids but config.model="
                     f"{model_dir!r} only {cfg.vocab_size}: not the tokenizer it was trained with")
  if rc.max_prompt_len + rc.max_new_tokens > cfg.max_position_embeddings:
    raise ConfigFieldError(f"config.rejection: max_prompt_len + max_new_tokens = "
                           f"{rc.max_prompt_len + rc.max_new_tokens} > the model's max_position_embeddings="
                           f"{cfg.max_position_embeddings}")
  cfg, variables, _ = load_model(model_dir, ModelConfig)
  return rejection_sample(cfg, variables, tok, examples, rc, os.path.join(workdir, TRACES),
                          source=os.path.abspath(model_dir), mesh=mesh)
