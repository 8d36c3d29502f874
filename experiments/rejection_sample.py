"""Rejection sampling: traces of an exported model, filtered by the rule rewards, as SFT-ready JSONL.

    python -m experiments.rejection_sample --config=configs/rejection_sample.py \
        --model=runs/r1_zero/model --tokenizer=runs/r1_zero/tokenizer.model --out=runs/r1_zero/traces.jsonl

Rerunning the same command after a kill continues where it stopped; once OUT.stats.json exists the stage
is finished and a rerun only prints its acceptance rates.
"""
from __future__ import annotations

import json
import os

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.checkpoint import load_config, load_model
from r1jax.config_utils import ConfigFieldError, build
from r1jax.data import SentencePieceTokenizer
from r1jax.data import tasks
from r1jax.stages.rejection import RejectionConfig, rejection_sample

def _define_flags():
  """Defined only when run as a script, so that other experiments can import this module."""
  config_flags.DEFINE_config_file("config", None, "Experiment config (configs/rejection_sample.py).",
                                  lock_config=True)
  flags.DEFINE_string("model", None, "Exported model directory (r1jax.checkpoint.save_model).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file the model was trained with.")
  flags.DEFINE_string("out", None, "Output JSONL (OUT.progress.json and OUT.stats.json beside it).")


def validate(c):
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


def run(c, model_dir: str, tokenizer_path: str, out_path: str) -> dict:
  """Samples, filters and writes the traces; returns the stats (see r1jax.stages.rejection.rejection_sample)."""
  rc, task = validate(c)
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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # Orbax logs every restore at INFO
  stats = run(flags.FLAGS.config, flags.FLAGS.model, flags.FLAGS.tokenizer, flags.FLAGS.out)
  print(json.dumps({"all": stats["all"], "tasks": stats["tasks"]}, indent=1))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "model", "tokenizer", "out"])
  app.run(main)
