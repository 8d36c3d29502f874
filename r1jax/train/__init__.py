"""Supervised training: LM / SFT loss, step and stage (pretraining, cold-start SFT, distillation).

The pure losses live in `r1jax.train.losses`; steps and stages build on them.
"""
from r1jax.train.losses import distill_loss
from r1jax.train.losses import lm_loss
