"""R1-Zero end to end on a CPU: pretrain a tiny MoE base, then GRPO with rule rewards; evaluate both.

    python -m experiments.r1_zero --config=configs/r1_zero.py --workdir=runs/r1_zero

Each stage resumes from its checkpoints and skips finished work, so rerunning the same command after a
kill (or SIGTERM) continues where it stopped. Writes to the workdir: tokenizer.model, pretrain/, rl/,
eval_base.json, eval_final.json, curves.png, report.md. The run itself is r1jax.stages.r1_zero.run.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import r1_zero, seeds


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Experiment config (configs/r1_zero.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    seeds.run_seeds(r1_zero.JOB, flags.FLAGS.config, flags.FLAGS.workdir)   # one seed: the plain job


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
