"""The single-stage jobs: SFT, distillation, GRPO and rejection sampling over exported model directories.

    c = sft_config.get_config()                   # configs/sft.py
    c.data, c.init = "runs/r1/rs_cold/traces.jsonl", "runs/r1/pretrain/model"   # or hf:DIR
    model_dir = run_sft(c, "runs/sft")

One job per script: experiments/sft.py, distill.py, grpo.py and rejection_sample.py call `run_<job>(config,
workdir)`. Every input is a config field (data, tokenizer, init, teacher, student_init, model), set on the
command line as --config.<field>=PATH; a model is an export, a Hugging Face directory (hf:DIR) or an Orbax
conversion (orbax:DIR), and the tokenizer comes with it unless config.tokenizer names one
(r1jax.stages.models); the `mesh` section (sizes of data, fsdp, expert, tensor) is
the device mesh the job runs on. Each `run_<job>` first calls `validate_<job>`, which builds the
config's dataclasses (a bad field fails before any data, tokenizer or model is loaded), then checks its
inputs: an empty required field or a path that does not exist fails naming the field. The training jobs
write DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported model DIR/model
(r1jax.stages.exported), carrying its tokenizer, and with config.export_hf also DIR/hf, a Hugging Face
directory: rerunning resumes a killed job and skips a finished one. Rejection sampling
writes DIR/traces.jsonl (with traces.jsonl.progress.json and traces.jsonl.stats.json beside it, as the
pipeline's rs_* stage directories) and resumes the same way (r1jax.stages.rejection).
"""
from __future__ import annotations

import os

import ml_collections

from r1jax.config_utils import ConfigFieldError, build, input_paths
from r1jax.data import tasks
from r1jax.eval import EvalConfig
from r1jax.model import ModelConfig
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import evaluate, exported, models
from r1jax.stages.grpo import RLStageConfig
from r1jax.stages.lm import LMStageConfig
from r1jax.stages.rejection import TRACES, RejectionConfig, rejection_sample
from r1jax.train.distill import check_compatible

# What each input field holds, for the errors of a missing or empty one.
DATA = "comma-separated JSONL trace files, one {\"prompt\", \"completion\"} record per line, e.g. a " \
       "rejection-sampling workdir's traces.jsonl"
TOKENIZER = "the tokenizer the models use (a SentencePiece .model file or a directory with a Hugging Face " \
            "tokenizer.json); empty: the one that comes with the model"


def model_input(c, field: str, what: str, *, required: bool = True) -> models.ModelSource | None:
  """The model named in `c.<field>` (an export, hf:DIR or orbax:DIR; r1jax.stages.models), loaded with the
  settings of `c.load` (dtype, param_dtype, remat), checked before any work; None when optional and empty."""
  return models.from_config(c, field, what, required=required, settings=models.load_settings(c))


def finish(c, workdir: str, model_dir: str) -> str:
  """The job's result: its exported model, also written as a Hugging Face directory WORKDIR/hf when
  config.export_hf is set (with the tokenizer files it carries)."""
  if c.get("export_hf", False):
    models.export_hf(model_dir, os.path.join(workdir, "hf"))
  return model_dir


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
  init = model_input(c, "init", "the model to fine-tune (DIR, hf:DIR or orbax:DIR); empty: config.model from "
                     "scratch", required=False)
  tokenizer_path = models.tokenizer_input(c, init, TOKENIZER)
  tok = models.load_tokenizer(tokenizer_path)
  data = exported.sft_data(data_paths)
  model_cfg, sc = validate_sft(c, tok.vocab_size)
  if init:
    model_cfg = init.config()
    models.check_vocab(tok, model_cfg, init.ref, tokenizer_path)
  out = exported.lm_stage(workdir, model_cfg, sc, data, tok, init=init, metadata={"stage": "sft"}, mesh=mesh,
                          files=models.export_files(tokenizer_path, init))
  return finish(c, workdir, out)


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
  teacher = model_input(c, "teacher", "the teacher model (DIR, hf:DIR or orbax:DIR)")
  student_init = model_input(c, "student_init", "the student to start from (DIR, hf:DIR or orbax:DIR); empty: "
                             "config.student from scratch", required=False)
  tokenizer_path = models.tokenizer_input(c, teacher, TOKENIZER + " (the teacher's, which the student shares)")
  teacher_cfg = teacher.config()
  tok = models.load_tokenizer(tokenizer_path)
  models.check_vocab(tok, teacher_cfg, teacher.ref, tokenizer_path)
  data = exported.sft_data(data_paths)
  student_cfg, sc = validate_distill(c, teacher_cfg.vocab_size)
  if student_init:
    student_cfg = student_init.config()
  check_compatible(student_cfg, teacher_cfg)
  out = exported.lm_stage(workdir, student_cfg, sc, data, tok, init=student_init, teacher=teacher,
                          metadata={"stage": "distill"}, mesh=mesh,
                          files=models.export_files(tokenizer_path, teacher))
  return finish(c, workdir, out)


# ------------------------------------------------------------------------------------------ GRPO
def validate_grpo(c):
  """(RLStageConfig, task) of configs/grpo.py."""
  rl = build(RLStageConfig, c.rl, "config.rl")
  task = tasks.from_config(c.task)
  return rl, task


def run_grpo(c, workdir: str) -> str:
  """GRPO from the model c.init (also the reference policy); returns the exported policy's directory. With
  config.final_eval, the source and the policy are then evaluated side by side (WORKDIR/eval_<task>)."""
  rl, task = validate_grpo(c)                                     # fail fast, before any work
  final_evals(c)
  mesh = mesh_from_config(c.get("mesh"))
  init = model_input(c, "init", "the model to start from (DIR, hf:DIR or orbax:DIR), also the reference policy")
  tokenizer_path = models.tokenizer_input(c, init, TOKENIZER)
  tok = models.load_tokenizer(tokenizer_path)
  models.check_vocab(tok, init.config(), init.ref, tokenizer_path)
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  test = list(task.examples("test", seed=c.seed, num=c.num_eval_problems)) if c.num_eval_problems else None
  out = exported.rl_stage(workdir, rl, init, tok, train, test, metadata={"stage": "grpo"}, mesh=mesh,
                          files=models.export_files(tokenizer_path, init))
  finish(c, workdir, out)
  for name, section in final_evals(c):
    evaluate.run(section, {"base": init.ref, "grpo": out}, tokenizer_path, os.path.join(workdir, f"eval_{name}"),
                 mesh=mesh)
  return out


def final_evals(c) -> list[tuple[str, ml_collections.ConfigDict]]:
  """The evaluations config.final_eval asks for after a run ({tasks: "name:split,...", num_problems, and the
  sampling fields of r1jax.eval.EvalConfig}), each as a configs/evaluate.py-style section with the run's
  template, seed and load settings; [] without the section. Checked before any work."""
  fe = c.get("final_eval")
  if not fe or not fe.get("tasks"):
    return []
  fe = dict(fe)
  out = []
  for item in filter(None, (t.strip() for t in str(fe.pop("tasks")).split(","))):
    name, _, split = item.partition(":")
    task = tasks.from_config({"name": name}, "config.final_eval.tasks")
    split = split or "test"
    if split not in task.splits:
      raise ConfigFieldError(f"config.final_eval.tasks: {item!r}: {name} has splits {list(task.splits)}")
    num = fe.get("num_problems", 200)
    eval_fields = {k: v for k, v in fe.items() if k != "num_problems"}
    section = ml_collections.ConfigDict(dict(
        task={"name": name}, split=split, num_problems=num, seed=c.seed, template=c.rl.template,
        load=dict(c.get("load") or {}), eval=dict(num_examples=num, **eval_fields)))
    build(EvalConfig, section.eval, "config.final_eval")
    out.append((name, section))
  return out


# ------------------------------------------------------------------------------------------ rejection sampling
def validate_rejection_sample(c):
  """(RejectionConfig, task): a bad field fails here, before any tokenizer or model is loaded."""
  rc = build(RejectionConfig, c.rejection, "config.rejection")
  try:
    task = tasks.from_config(c.task)
  except ValueError as e:
    raise ConfigFieldError(str(e)) from e
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
  model = model_input(c, "model", "the model to sample from (DIR, hf:DIR or orbax:DIR)")
  tokenizer_path = models.tokenizer_input(c, model, TOKENIZER)
  examples = list(task.examples(c.split, seed=c.seed, num=c.num_problems))
  tok = models.load_tokenizer(tokenizer_path)
  cfg = model.config()                               # the config alone: check before loading weights
  models.check_vocab(tok, cfg, model.ref, tokenizer_path)
  if rc.max_prompt_len + rc.max_new_tokens > cfg.max_position_embeddings:
    raise ConfigFieldError(f"config.rejection: max_prompt_len + max_new_tokens = "
                           f"{rc.max_prompt_len + rc.max_new_tokens} > the model's max_position_embeddings="
                           f"{cfg.max_position_embeddings}")
  cfg, variables, _ = model.load(mesh=mesh)
  return rejection_sample(cfg, variables, tok, examples, rc, os.path.join(workdir, TRACES),
                          source=model.ref, mesh=mesh, model_id=model.identity())
