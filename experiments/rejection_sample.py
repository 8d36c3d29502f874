"""Rejection sampling: traces of an exported model, filtered by the rule rewards, as SFT-ready JSONL.

    python -m experiments.rejection_sample --config=configs/rejection_sample.py \
        --model=runs/r1_zero/model --tokenizer=runs/r1_zero/tokenizer.model --out=runs/r1_zero/traces.jsonl

Rerunning the same command after a kill continues where it stopped; once OUT.stats.json exists the stage
is finished and a rerun only prints its acceptance rates. The job itself is
r1jax.stages.standalone.run_rejection_sample.
"""
from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.stages import standalone


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Experiment config (configs/rejection_sample.py).",
                                  lock_config=True)
  flags.DEFINE_string("model", None, "Exported model directory (r1jax.checkpoint.save_model).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file the model was trained with.")
  flags.DEFINE_string("out", None, "Output JSONL (OUT.progress.json and OUT.stats.json beside it).")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # Orbax logs every restore at INFO
  stats = standalone.run_rejection_sample(flags.FLAGS.config, flags.FLAGS.model, flags.FLAGS.tokenizer,
                                          flags.FLAGS.out)
  print(json.dumps({"all": stats["all"], "tasks": stats["tasks"]}, indent=1))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "model", "tokenizer", "out"])
  app.run(main)
