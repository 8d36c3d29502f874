"""GRPO (the RL stage) from an exported model: configs/grpo.py.

    python -m experiments.grpo --config=configs/grpo.py --init=MODEL_DIR --tokenizer=T.model --workdir=DIR

Prompts from the task's train split -> the r1jax sampler (G per prompt) -> rule rewards -> group
advantages -> the sharded GRPO update; metrics to DIR/metrics.jsonl and TensorBoard, Orbax checkpoints in
DIR/checkpoints, the final policy exported to DIR/model. SIGTERM/SIGINT save and exit; rerunning the same
command resumes, and a finished run is skipped.
"""
from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags

from experiments import common
from r1jax.checkpoint import is_model
from r1jax.config_utils import build
from r1jax.data import tasks
from r1jax.stages.grpo import RLStageConfig


def validate(c):
  rl = build(RLStageConfig, c.rl, "config.rl")
  task = tasks.get(c.task.name, **{k: v for k, v in c.task.items() if k != "name"})
  return rl, task


def run(c, init: str, tokenizer_path: str, workdir: str) -> str:
  """Returns the exported policy's directory."""
  rl, task = validate(c)                                          # fail fast, before any work
  if not is_model(init):
    raise FileNotFoundError(f"--init={init} is not an exported r1jax model (r1jax.checkpoint.save_model)")
  tok = common.tokenizer(tokenizer_path)
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  test = list(task.examples("test", seed=c.seed, num=c.num_eval_problems)) if c.num_eval_problems else None
  return common.rl_stage(workdir, rl, init, tok, train, test, metadata={"stage": "grpo"})


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(run(f.config, f.init, f.tokenizer, f.workdir))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "GRPO config (configs/grpo.py).", lock_config=True)
  flags.DEFINE_string("init", None, "Exported model to start from (and the reference policy).")
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file.")
  flags.DEFINE_string("workdir", None, "Output directory (resumed if it exists).")
  flags.mark_flags_as_required(["config", "init", "tokenizer", "workdir"])
  app.run(main)
