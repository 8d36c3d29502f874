"""GRPO: pure advantage and loss functions (this package's math); the sharded update step and the
RL stage build on them.

Only the pure modules are imported here, so `import r1jax.rl` pulls in nothing but jax.
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
