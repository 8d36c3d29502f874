"""The long-running stages: the loops that sample, train, checkpoint, resume and log.

  r1jax.stages.lm         the LM stage: pretraining, SFT and distillation on packed sequences
  r1jax.stages.grpo       the RL stage: GRPO with rule rewards, dynamic sampling and evaluation
  r1jax.stages.rejection  rejection sampling: a model's traces filtered by the rule rewards, as JSONL
  r1jax.stages.state      a TrainState as the tree the LM and GRPO stages checkpoint
  r1jax.stages.writers    JSONL / TensorBoard metrics, the progress line, preemption signals

The stages build on r1jax.{rl, train, eval, sampling, model, data, rewards, checkpoint}; nothing in
those packages imports r1jax.stages. Import the modules themselves: this package imports none of them.
"""
