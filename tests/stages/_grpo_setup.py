"""A tiny RL stage shared by grpo_test.py and its subprocess worker (kill/resume tests).

Run as a script: python tests/stages/_grpo_setup.py WORKDIR NUM_STEPS
"""
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from r1jax.config_utils import build  # noqa: E402
from r1jax.data import tasks  # noqa: E402
from r1jax.model import ModelConfig, init_variables  # noqa: E402
from r1jax.stages.grpo import RLStageConfig, run_rl_stage  # noqa: E402
from r1jax.testing import FakeTokenizer  # noqa: E402

import jax  # noqa: E402

MODEL = ModelConfig.preset("tiny")
TOKENIZER = FakeTokenizer(vocab_size=64)


def stage_config(num_steps=2, **overrides):
  base = dict(num_steps=num_steps, batch_size=2, group_size=4, max_prompt_len=24, max_new_tokens=6,
              checkpoint_every=1, log_every=1, eval_every=0, dynamic_sampling=False,
              grpo=dict(beta=0.04, num_iterations=2, num_minibatches=2, temperature=1.0),
              optim=dict(learning_rate=1e-2, total_steps=10, schedule="constant"),
              eval=dict(num_examples=4, batch_size=4, max_prompt_len=24, max_new_tokens=6, num_samples=2))
  base.update(overrides)
  return build(RLStageConfig, base, "config.rl")


def examples():
  task = tasks.get("arithmetic", digits=1, ops="+")
  return list(task.examples("train", seed=0, num=40)), list(task.examples("test", seed=0, num=4))


def run(workdir, num_steps, **overrides):
  train, test = examples()
  return run_rl_stage(MODEL, stage_config(num_steps, **overrides),
                      initial_variables=init_variables(MODEL, jax.random.key(0)),
                      tokenizer=TOKENIZER, train_examples=train, eval_examples=test, workdir=workdir, verbose=False)


if __name__ == "__main__":
  run(sys.argv[1], int(sys.argv[2]))
