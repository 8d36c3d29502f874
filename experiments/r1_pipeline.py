"""The full DeepSeek-R1 pipeline, every stage, on one config (configs/r1_pipeline.py).

    python -m experiments.r1_pipeline --config=configs/r1_pipeline.py --workdir=runs/r1

Each stage gets its own directory under the workdir and ends in an exported model (or a traces file); a
finished stage is skipped and a killed stage resumes from its checkpoints, so rerunning the same command
after a kill continues where it stopped. The stages and what they write: r1jax.stages.pipeline.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import pipeline, seeds


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Pipeline config (configs/r1_pipeline.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    seeds.run_seeds(pipeline.JOB, flags.FLAGS.config, flags.FLAGS.workdir)   # one seed: the plain job


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
