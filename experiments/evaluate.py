"""Evaluates exported models side by side on a held-out split: pass@1 (greedy, sampled), pass@k, maj@k.

    python -m experiments.evaluate --config=configs/evaluate.py --config.tokenizer=runs/r1/tokenizer.model \
        --config.models=base=runs/r1/pretrain/model,r1_zero=runs/r1/r1_zero/model --workdir=runs/r1/eval

Every input is a config field: `models` (name=DIR,..., exported by `r1jax.checkpoint.save_model`, in table
order) and `tokenizer`; an empty one, or a path that does not exist, fails before any work. Writes to the
workdir: <name>.json per model (a cache: a rerun skips models already evaluated with the same settings,
so a killed run resumes), results.json (every report), results.md (the table) and results.png (a bar
chart of the rates). The evaluation itself is r1jax.stages.evaluate.run_from_config.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import _common
from r1jax.stages.writers import workdir_lock
from r1jax.stages import evaluate


def _define_flags():
  """Defined only when run as a script, so that importing this module defines no flags."""
  config_flags.DEFINE_config_file("config", None, "Evaluation config (configs/evaluate.py).",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  _common.define_distributed_flags()


def main(argv):
  del argv
  _common.initialize()                     # first: joins a multi-process job, if any
  logging.set_verbosity(logging.WARNING)   # Orbax logs every restore at INFO
  with workdir_lock(flags.FLAGS.workdir):         # one run per workdir
    evaluate.run_from_config(flags.FLAGS.config, flags.FLAGS.workdir)


if __name__ == "__main__":
  _define_flags()
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
