"""Distil a dense student from a teacher's traces (+ token-level KD): configs/distill.py.

    python -m experiments.distill --config=configs/distill.py --config.data=traces.jsonl \
        --config.tokenizer=T.model --config.teacher=TEACHER_DIR [--config.student_init=MODEL_DIR] --workdir=DIR

Every input is a config field (data, tokenizer, teacher, student_init); an empty required one, or a path
that does not exist, fails before any work. The student trains on the traces with a completion-only loss;
with `distill.distill.top_k > 0` the loss mixes in the KL to the teacher's top-k next-token distribution,
computed on the same packed batch. The job itself is r1jax.stages.standalone.run_distill.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import standalone


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Distillation config (configs/distill.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    print(standalone.run_distill(flags.FLAGS.config, flags.FLAGS.workdir))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
