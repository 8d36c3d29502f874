"""SFT (cold start, round-2 SFT) on JSONL traces: configs/sft.py.

    python -m experiments.sft --config=configs/sft.py --data=A.jsonl[,B.jsonl] --tokenizer=T.model \
        [--init=MODEL_DIR] --workdir=DIR

Writes DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported model DIR/model. Rerunning
resumes a killed run and skips a finished one.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from r1jax.checkpoint import load_config
from r1jax.config_utils import build
from r1jax.model import ModelConfig
from r1jax.stages.lm import LMStageConfig


def validate(c, vocab_size: int = 64):
  return build(ModelConfig, {**c.model.to_dict(), "vocab_size": vocab_size}, "config.model"), \
      build(LMStageConfig, c.sft, "config.sft")


def run(c, data_paths, tokenizer_path: str, workdir: str, init: str | None = None) -> str:
  """Returns the exported model directory."""
  validate(c)                                                      # fail fast, before any work
  tok = common.tokenizer(tokenizer_path)
  data = common.sft_data(data_paths)
  model_cfg, sc = validate(c, tok.vocab_size)
  if init:
    model_cfg = load_config(init)
  return common.lm_stage(workdir, model_cfg, sc, data, tok, init=init or None, metadata={"stage": "sft"})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(run(f.config, f.data.split(","), f.tokenizer, f.workdir, init=f.init))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "SFT config (configs/sft.py).", lock_config=True)
  flags.DEFINE_string("data", None, "Comma-separated JSONL trace files.")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file.")
  flags.DEFINE_string("init", "", "Exported model to fine-tune (empty: train config.model from scratch).")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "data", "tokenizer", "workdir"])
  app.run(main)
