"""GRPO (the RL stage) from an exported model: configs/grpo.py.

    python -m experiments.grpo --config=configs/grpo.py --init=MODEL_DIR --tokenizer=T.model --workdir=DIR

Prompts from the task's train split -> the r1jax sampler (G per prompt) -> rule rewards -> group
advantages -> the sharded GRPO update; metrics to DIR/metrics.jsonl and TensorBoard, Orbax checkpoints in
DIR/checkpoints, the final policy exported to DIR/model. SIGTERM/SIGINT save and exit; rerunning the same
command resumes, and a finished run is skipped. The job itself is r1jax.stages.standalone.run_grpo.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from r1jax.stages import standalone


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(standalone.run_grpo(f.config, f.init, f.tokenizer, f.workdir))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "GRPO config (configs/grpo.py).", lock_config=True)
  flags.DEFINE_string("init", None, "Exported model to start from (and the reference policy).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file.")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "init", "tokenizer", "workdir"])
  app.run(main)
