"""SFT (cold start, round-2 SFT) on JSONL traces: configs/sft.py.

    python -m experiments.sft --config=configs/sft.py --data=A.jsonl[,B.jsonl] --tokenizer=T.model \
        [--init=MODEL_DIR] --workdir=DIR

Writes DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported model DIR/model. Rerunning
resumes a killed run and skips a finished one. The job itself is r1jax.stages.standalone.run_sft.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.stages import standalone


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(standalone.run_sft(f.config, f.data.split(","), f.tokenizer, f.workdir, init=f.init))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "SFT config (configs/sft.py).", lock_config=True)
  flags.DEFINE_string("data", None, "Comma-separated JSONL trace files.")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file.")
  flags.DEFINE_string("init", "", "Exported model to fine-tune (empty: train config.model from scratch).")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "data", "tokenizer", "workdir"])
  app.run(main)
