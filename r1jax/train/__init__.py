"""Supervised training: LM / SFT and distillation losses, the update step, the optimizer and TrainState.

LoRA adapters on a frozen base: `r1jax.train.lora`. The pure losses live in `r1jax.train.losses`; the jitted steps build on them. The LM stage that drives
them (pretraining, SFT, distillation: data, checkpoints, resume, metrics) is r1jax.stages.lm.
"""
from r1jax.train.losses import distill_loss
from r1jax.train.losses import lm_loss
from r1jax.train.lm import LMConfig, lm_objective, make_lm_update
from r1jax.train.lora import LoraConfig
from r1jax.train.optim import OptimConfig, learning_rate_schedule, make_optimizer
from r1jax.train.state import TrainState, create_train_state, state_shardings, variables_of
from r1jax.train.step import NonFiniteError, check_finite, make_update
