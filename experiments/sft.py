"""SFT (cold start, round-2 SFT) on JSONL traces: configs/sft.py.

    python -m experiments.sft --config=configs/sft.py --config.data=A.jsonl[,B.jsonl] \
        --config.tokenizer=T.model [--config.init=MODEL_DIR] --workdir=DIR

Every input is a config field (data, tokenizer, init); an empty required one, or a path that does not
exist, fails before any work. Writes DIR/checkpoints, DIR/metrics.jsonl and, when finished, the exported
model DIR/model. Rerunning resumes a killed run and skips a finished one. The job itself is
r1jax.stages.standalone.run_sft.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import standalone


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "SFT config (configs/sft.py).", lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    print(standalone.run_sft(flags.FLAGS.config, flags.FLAGS.workdir))


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
