"""Stages over exported model directories: each ends in an exported model and skips finished work.

Every stage writes into its own directory and ends by exporting `<dir>/model` (r1jax.checkpoint.save_model,
written atomically). A stage whose model exists is finished and is not run again; a stage that was killed
resumes from its own Orbax checkpoints. So any script, and the whole pipeline, can be killed at any moment
and rerun with the same command. The standalone jobs (r1jax.stages.standalone) and the R1 pipeline
(r1jax.stages.pipeline) are built from these.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from r1jax.checkpoint import is_model, save_model
from r1jax.data import SentencePieceTokenizer
from r1jax.model import ModelConfig
from r1jax.sharding import distributed
from r1jax.stages.grpo import RLStageConfig, run_rl_stage
from r1jax.stages.lm import LMStageConfig, run_lm_stage
from r1jax.stages.models import ModelSource, as_source
from r1jax.stages.rejection import read_traces


def model_dir(stage_dir: str) -> str:
  return os.path.join(stage_dir, "model")


def tokenizer(path: str, texts: Sequence[str] | None = None, *, vocab_size: int = 0,
              model_type: str = "bpe") -> SentencePieceTokenizer:
  """Loads the tokenizer at `path`, or trains it on `texts` and saves it there first (in a multi-process
  job every process trains the same tokenizer and process 0 saves it)."""
  if os.path.exists(path):
    return SentencePieceTokenizer.load(path)
  if texts is None:
    raise FileNotFoundError(f"tokenizer {path} does not exist")
  tok = SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=model_type)
  if distributed.is_writer():
    tok.save(path)
  distributed.barrier("tokenizer saved")          # no process looks for the file before it is whole
  return tok


def sft_data(paths) -> list[dict]:
  """{"prompt", "completion"} records of one or more trace files (malformed lines name path:line)."""
  paths = [paths] if isinstance(paths, str) else list(paths)
  out = [{"prompt": r["prompt"], "completion": r["completion"]} for p in paths for r in read_traces(p)]
  if not out:
    raise ValueError(f"no traces in {paths} (did rejection sampling keep none?): SFT has no data")
  return out


def lm_stage(stage_dir: str, model_cfg: ModelConfig, sc: LMStageConfig, examples: Any, tok, *,
             init: ModelSource | str | None = None, teacher: ModelSource | str | None = None,
             metadata: Mapping | None = None, mesh=None, files: Mapping[str, str] | None = None) -> str:
  """Pretraining / SFT / distillation into stage_dir; returns the exported model dir.

  init: the model to start from (an export, hf:DIR or orbax:DIR; r1jax.stages.models; None: random init);
  teacher: the teacher for token-level KD; mesh: the device mesh the stage runs on (None: one device);
  files: what the export carries besides the model (r1jax.stages.models.export_files: the tokenizer).
  """
  out = model_dir(stage_dir)
  if is_model(out):
    return out
  init_vars = None
  if init is not None:
    init = as_source(init)
    init_cfg, init_vars, _ = init.load(mesh=mesh)
    if init_cfg != model_cfg:
      raise ValueError(f"{init.ref}: its model config differs from the stage's ({stage_dir})")
  teacher = as_source(teacher) if teacher is not None else None
  teacher_pair = teacher.load(mesh=mesh)[:2] if teacher is not None and sc.distill.token_level else None
  variables = run_lm_stage(model_cfg, sc, examples=examples, tokenizer=tok, workdir=stage_dir,
                           initial_variables=init_vars, teacher=teacher_pair, mesh=mesh)
  ref = lambda m: m.ref if m is not None else None
  return save_model(out, model_cfg, variables, files=files,
                    metadata={"init": ref(init), "teacher": ref(teacher), **dict(metadata or {})})


def rl_stage(stage_dir: str, sc: RLStageConfig, init: ModelSource | str, tok, train: Sequence,
             test: Sequence | None, *, metadata: Mapping | None = None, mesh=None,
             files: Mapping[str, str] | None = None) -> str:
  """GRPO from the model `init` (an export, hf:DIR or orbax:DIR) into stage_dir (on `mesh`, None: one
  device); returns the exported model dir, which carries `files` (the tokenizer) as lm_stage's does."""
  out = model_dir(stage_dir)
  if is_model(out):
    return out
  init = as_source(init)
  cfg, variables, _ = init.load(mesh=mesh)
  variables = run_rl_stage(cfg, sc, initial_variables=variables, tokenizer=tok, train_examples=train,
                           eval_examples=test, workdir=stage_dir, mesh=mesh)
  return save_model(out, cfg, variables, files=files, metadata={"init": init.ref, **dict(metadata or {})})
