"""GRPO (the RL stage) from an exported model: configs/grpo.py.

    python -m experiments.grpo --config=configs/grpo.py --config.init=MODEL_DIR --config.tokenizer=T.model \
        --workdir=DIR

Every input is a config field (init, tokenizer); an empty one, or a path that does not exist, fails before
any work. Prompts from the task's train split -> the r1jax sampler (G per prompt) -> rule rewards -> group
advantages -> the sharded GRPO update; metrics to DIR/metrics.jsonl and TensorBoard, Orbax checkpoints in
DIR/checkpoints, the final policy exported to DIR/model. SIGTERM/SIGINT save and exit; rerunning the same
command resumes, and a finished run is skipped. The job itself is r1jax.stages.standalone.run_grpo.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import standalone


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "GRPO config (configs/grpo.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    print(standalone.run_grpo(flags.FLAGS.config, flags.FLAGS.workdir))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
