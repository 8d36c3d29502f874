"""GRPO: pure advantage and loss functions (this package's math); the sharded update step and the
RL stage build on them.

`import r1jax.rl` also brings the jitted update (r1jax.rl.step), which depends on r1jax.model and
r1jax.train.step; the RL stage (the loop with sampling and rewards) lives in r1jax.rl.loop.
"""
from r1jax.rl.advantages import ADVANTAGE_ESTIMATORS
from r1jax.rl.advantages import get_advantage_fn
from r1jax.rl.advantages import group_advantages
from r1jax.rl.advantages import rloo_advantages
from r1jax.rl.advantages import zero_variance_groups
from r1jax.rl.losses import AGGREGATIONS
from r1jax.rl.losses import KL_ESTIMATORS
from r1jax.rl.losses import aggregate_loss
from r1jax.rl.losses import grpo_loss
from r1jax.rl.losses import kl_penalty
from r1jax.rl.losses import token_entropy
from r1jax.rl.losses import token_logprobs
from r1jax.rl.step import GRPOConfig, grpo_objective, grpo_update_rollout, make_grpo_update, make_logprob_fn
