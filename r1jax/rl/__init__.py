"""GRPO: pure advantage and loss functions (this package's math) and the sharded update step.

`import r1jax.rl` also brings the jitted update (r1jax.rl.step), which depends on r1jax.model and
r1jax.train.step. The RL stage that drives it (sampling, rewards, checkpoints, resume) is
r1jax.stages.grpo; rejection sampling is r1jax.stages.rejection.
"""
from r1jax.rl.advantages import ADVANTAGE_ESTIMATORS
from r1jax.rl.advantages import get_advantage_fn
from r1jax.rl.advantages import group_advantages
from r1jax.rl.advantages import rloo_advantages
from r1jax.rl.advantages import sharded_advantages
from r1jax.rl.advantages import zero_variance_groups
from r1jax.rl.losses import AGGREGATIONS
from r1jax.rl.losses import KL_ESTIMATORS
from r1jax.rl.losses import aggregate_loss
from r1jax.rl.losses import grpo_loss
from r1jax.rl.losses import kl_penalty
from r1jax.rl.losses import token_entropy
from r1jax.rl.losses import token_logprobs
from r1jax.rl.step import GRPOConfig, grpo_objective, grpo_update_rollout, make_grpo_update, make_logprob_fn
