"""The long-running stages: the loops that sample, train, checkpoint, resume and log, and the jobs built on them.

The stages, on in-memory models:
  r1jax.stages.lm          the LM stage: pretraining, SFT and distillation on packed sequences
  r1jax.stages.grpo        the RL stage: GRPO with rule rewards, dynamic sampling and evaluation
  r1jax.stages.rejection   rejection sampling: a model's traces filtered by the rule rewards, as JSONL
  r1jax.stages.state       a TrainState as the tree the LM and GRPO stages checkpoint
  r1jax.stages.writers     JSONL / TensorBoard metrics, the progress line, preemption signals
The jobs, over exported model directories, each what one script in experiments/ runs:
  r1jax.stages.exported    LM and GRPO stages that end in an exported model and skip finished work
  r1jax.stages.standalone  SFT, distillation, GRPO and rejection sampling, inputs included in the config
  r1jax.stages.evaluate    exported models side by side on a held-out split, with a per-model cache
  r1jax.stages.r1_zero     R1-Zero end to end: pretraining, GRPO, evaluation and a report
  r1jax.stages.pipeline    the full DeepSeek-R1 pipeline, from pretraining to distillation, and its report

The stages build on r1jax.{rl, train, eval, sampling, model, data, rewards, checkpoint}; nothing in those
packages imports r1jax.stages, and nothing in r1jax imports configs/ or experiments/ (checked by
tests/stages/layering_test.py). This package imports none of its modules: import the one you need.
"""
