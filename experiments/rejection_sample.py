"""Rejection sampling: traces of an exported model, filtered by the rule rewards, as SFT-ready JSONL.

    python -m experiments.rejection_sample --config=configs/rejection_sample.py \
        --config.model=runs/r1/r1_zero/model --config.tokenizer=runs/r1/tokenizer.model --workdir=runs/rs

Every input is a config field (model, tokenizer); an empty one, or a path that does not exist, fails
before any work. Writes WORKDIR/traces.jsonl, with traces.jsonl.progress.json and traces.jsonl.stats.json
beside it (the layout of the R1 pipeline's rs_* stage directories). Rerunning the same command after a
kill continues where it stopped; once the stats file exists the stage is finished and a rerun only prints
its acceptance rates. The job itself is r1jax.stages.standalone.run_rejection_sample.
"""
from __future__ import annotations

import json

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import standalone


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Experiment config (configs/rejection_sample.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory: traces.jsonl and its progress and stats files.")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)   # Orbax logs every restore at INFO
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    stats = standalone.run_rejection_sample(flags.FLAGS.config, flags.FLAGS.workdir)
  print(json.dumps({"all": stats["all"], "tasks": stats["tasks"]}, indent=1))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
