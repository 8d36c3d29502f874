"""Distil a dense student from a teacher's traces (+ token-level KD): configs/distill.py.

    python -m experiments.distill --config=configs/distill.py --data=traces.jsonl --tokenizer=T.model \
        --teacher=TEACHER_DIR [--student_init=MODEL_DIR] --workdir=DIR

The student trains on the traces with a completion-only loss; with `distill.distill.top_k > 0` the loss
mixes in the KL to the teacher's top-k next-token distribution, computed on the same packed batch. The
job itself is r1jax.stages.standalone.run_distill.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.stages import standalone


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(standalone.run_distill(f.config, f.data.split(","), f.tokenizer, f.teacher, f.workdir,
                               student_init=f.student_init))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Distillation config (configs/distill.py).", lock_config=True)
  flags.DEFINE_string("data", None, "Comma-separated JSONL trace files (the teacher's).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file shared by teacher and student.")
  flags.DEFINE_string("teacher", None, "Exported teacher model directory.")
  flags.DEFINE_string("student_init", "", "Exported student to start from (empty: config.student from scratch).")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "data", "tokenizer", "teacher", "workdir"])
  app.run(main)
