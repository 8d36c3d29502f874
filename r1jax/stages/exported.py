"""Stages over exported model directories: each ends in an exported model and skips finished work.

Every stage writes into its own directory and ends by exporting `<dir>/model` (r1jax.checkpoint.save_model,
written atomically, with the stage's fingerprint in its metadata: r1jax.stages.fingerprint). A stage whose
model exists with the same fingerprint (configs, data, tokenizer, and the starting and teacher weights by
content) is finished and is not run again; with another fingerprint it raises FingerprintMismatch naming what
changed (the R1 pipeline then moves the stage aside and runs it again). A stage that was killed resumes
from its own Orbax checkpoints, which carry the fingerprint too. So any script, and the whole pipeline, can be
killed at any moment and rerun with the same command. The standalone jobs (r1jax.stages.standalone) and the R1 pipeline
(r1jax.stages.pipeline) are built from these.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from r1jax.checkpoint import is_model, load_metadata, save_model
from r1jax.data import SentencePieceTokenizer
from r1jax.data.jsonl import write_json
from r1jax.model import ModelConfig
from r1jax.sharding import distributed
from r1jax.stages import fingerprint as fp_lib
from r1jax.stages.grpo import RLStageConfig, rl_fingerprint, run_rl_stage
from r1jax.stages.lm import LMStageConfig, lm_fingerprint, run_lm_stage
from r1jax.stages.models import ModelSource, as_source
from r1jax.stages.rejection import read_traces


def model_dir(stage_dir: str) -> str:
  return os.path.join(stage_dir, "model")


def tokenizer(path: str, texts: Sequence[str] | None = None, *, vocab_size: int = 0,
              model_type: str = "bpe") -> SentencePieceTokenizer:
  """Loads the tokenizer at `path`, or trains it on `texts` and saves it there first (in a multi-process
  job every process trains the same tokenizer and process 0 saves it). What it was trained on (the texts'
  SHA-256, vocab_size, model_type) is saved beside it in `path + ".fingerprint.json"`; loading it for other
  texts or settings raises FingerprintMismatch (every model trained with it would differ from a fresh run's)."""
  fp = fp_lib.fingerprint({"": {"vocab_size": vocab_size, "model_type": model_type}},
                          {"texts": fp_lib.records_digest(texts)} if texts is not None else {})
  side = path + ".fingerprint.json"
  if os.path.exists(path):
    if texts is not None and os.path.exists(side):
      with open(side) as f:
        fp_lib.check(json.load(f), fp, where=f"the tokenizer {path}", path=path,
                     hint="Use a new workdir, or move the tokenizer and everything trained with it away.")
    return SentencePieceTokenizer.load(path)
  if texts is None:
    raise FileNotFoundError(f"tokenizer {path} does not exist")
  tok = SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type=model_type)
  if distributed.is_writer():
    write_json(side, fp)
    tok.save(path)                                # the fingerprint first: a tokenizer never stands without it
  distributed.barrier("tokenizer saved")          # no process looks for the file before it is whole
  return tok


def sft_data(paths) -> list[dict]:
  """{"prompt", "completion"} records of one or more trace files (malformed lines name path:line)."""
  paths = [paths] if isinstance(paths, str) else list(paths)
  out = [{"prompt": r["prompt"], "completion": r["completion"]} for p in paths for r in read_traces(p)]
  if not out:
    raise ValueError(f"no traces in {paths} (did rejection sampling keep none?): SFT has no data")
  return out


def _finished(out: str, fingerprint: dict, override: str) -> bool:
  """Whether the export `out` exists and was made with `fingerprint` (FingerprintMismatch if it was not)."""
  if not is_model(out):
    return False
  fp_lib.check(load_metadata(out).get("fingerprint"), fingerprint, where=f"the finished model {out}",
               path=os.path.dirname(out), override=override, hint=fp_lib.RESUME_HINT)
  return True


def lm_stage(stage_dir: str, model_cfg: ModelConfig, sc: LMStageConfig, examples: Any, tok, *,
             init: ModelSource | str | None = None, teacher: ModelSource | str | None = None,
             metadata: Mapping | None = None, mesh=None, files: Mapping[str, str] | None = None) -> str:
  """Pretraining / SFT / distillation into stage_dir; returns the exported model dir.

  init: the model to start from (an export, hf:DIR or orbax:DIR; r1jax.stages.models; None: random init);
  teacher: the teacher for token-level KD; mesh: the device mesh the stage runs on (None: one device);
  files: what the export carries besides the model (r1jax.stages.models.export_files: the tokenizer).
  """
  out = model_dir(stage_dir)
  init = as_source(init) if init is not None else None
  teacher = as_source(teacher) if teacher is not None else None
  ident = lambda m: m.identity() if m is not None else None
  fingerprint = lm_fingerprint(model_cfg, sc, examples=examples, tokenizer=tok, init=ident(init) or "random",
                               teacher=ident(teacher))
  if _finished(out, fingerprint, sc.resume_override):
    return out
  init_vars = None
  if init is not None:
    init_cfg, init_vars, _ = init.load(mesh=mesh)
    if init_cfg != model_cfg:
      raise ValueError(f"{init.ref}: its model config differs from the stage's ({stage_dir})")
  teacher_pair = teacher.load(mesh=mesh)[:2] if teacher is not None and sc.distill.token_level else None
  variables = run_lm_stage(model_cfg, sc, examples=examples, tokenizer=tok, workdir=stage_dir,
                           initial_variables=init_vars, teacher=teacher_pair, mesh=mesh,
                           init_id=ident(init) or "random", teacher_id=ident(teacher))
  ref = lambda m: m.ref if m is not None else None
  return save_model(out, model_cfg, variables, files=files,
                    metadata={"init": ref(init), "teacher": ref(teacher), **dict(metadata or {}),
                              "fingerprint": fingerprint})


def rl_stage(stage_dir: str, sc: RLStageConfig, init: ModelSource | str, tok, train: Sequence,
             test: Sequence | None, *, metadata: Mapping | None = None, mesh=None,
             files: Mapping[str, str] | None = None) -> str:
  """GRPO from the model `init` (an export, hf:DIR or orbax:DIR) into stage_dir (on `mesh`, None: one
  device); returns the exported model dir, which carries `files` (the tokenizer) as lm_stage's does."""
  out = model_dir(stage_dir)
  init = as_source(init)
  cfg = init.config()
  fingerprint = rl_fingerprint(cfg, sc, train_examples=train, tokenizer=tok, init=init.identity())
  if _finished(out, fingerprint, sc.resume_override):
    return out
  cfg, variables, _ = init.load(mesh=mesh)
  variables = run_rl_stage(cfg, sc, initial_variables=variables, tokenizer=tok, train_examples=train,
                           eval_examples=test, workdir=stage_dir, mesh=mesh, init_id=init.identity())
  return save_model(out, cfg, variables, files=files,
                    metadata={"init": init.ref, **dict(metadata or {}), "fingerprint": fingerprint})
