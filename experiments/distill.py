"""Distil a dense student from a teacher's traces (+ token-level KD): configs/distill.py.

    python -m experiments.distill --config=configs/distill.py --data=traces.jsonl --tokenizer=T.model \
        --teacher=TEACHER_DIR [--student_init=MODEL_DIR] --workdir=DIR

The student trains on the traces with a completion-only loss; with `distill.distill.top_k > 0` the loss
mixes in the KL to the teacher's top-k next-token distribution, computed on the same packed batch.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from r1jax.checkpoint import load_config
from r1jax.config_utils import build
from r1jax.model import ModelConfig
from r1jax.train.distill import check_compatible
from r1jax.stages.lm import LMStageConfig


def validate(c, vocab_size: int = 64):
  return build(ModelConfig, {**c.student.to_dict(), "vocab_size": vocab_size}, "config.student"), \
      build(LMStageConfig, c.distill, "config.distill")


def run(c, data_paths, tokenizer_path: str, teacher: str, workdir: str, student_init: str | None = None) -> str:
  """Returns the exported student directory."""
  validate(c)                                                      # fail fast, before any work
  teacher_cfg = load_config(teacher)
  tok = common.tokenizer(tokenizer_path)
  data = common.sft_data(data_paths)
  student_cfg, sc = validate(c, teacher_cfg.vocab_size)
  if student_init:
    student_cfg = load_config(student_init)
  check_compatible(student_cfg, teacher_cfg)
  return common.lm_stage(workdir, student_cfg, sc, data, tok, init=student_init or None, teacher=teacher,
                         metadata={"stage": "distill"})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(run(f.config, f.data.split(","), f.tokenizer, f.teacher, f.workdir, student_init=f.student_init))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "Distillation config (configs/distill.py).", lock_config=True)
  flags.DEFINE_string("data", None, "Comma-separated JSONL trace files (the teacher's).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file shared by teacher and student.")
  flags.DEFINE_string("teacher", None, "Exported teacher model directory.")
  flags.DEFINE_string("student_init", "", "Exported student to start from (empty: config.student from scratch).")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "data", "tokenizer", "teacher", "workdir"])
  app.run(main)
