"""Group-relative advantage estimators for GRPO and its variants.

All functions are pure `jax.numpy` over a flat reward vector `rewards_s: f32[S]`, S = B*G, where
the G samples of one prompt are contiguous (`rewards_s.reshape(B, G)[b]` is prompt b's group).
They reshape to `[B, G]` and reduce over the last axis, so they run unchanged under `jax.jit` with
`rewards_s` sharded over a mesh: when a group straddles devices (e.g. G=4 on 8 devices with S=16)
XLA inserts the cross-device reduction. Nothing here assumes a group lives on one device.

Estimators (all return f32[S]):
  * "grpo"      (r - mean_g) / (std_g + eps)      DeepSeekMath (arXiv 2402.03300) §4.1.2.
  * "batch_std" (r - mean_g) / (std_batch + eps)  Lite-PPO (arXiv 2508.08221), TRL "batch".
  * "dr_grpo"   r - mean_g                        Dr.GRPO (arXiv 2503.20783): no std division.
  * "rloo"      r - mean of the other G-1 rewards RLOO (Ahmadian et al. 2024, arXiv 2402.14740).

Standard deviation convention: `std_ddof=1` (sample std, Bessel-corrected) by default, because
TRL and verl (`torch.std`, unbiased by default) and Tunix (`std(ddof=1)`) all use it;
DeepSeekMath does not say. Pass `std_ddof=0` for the population std (the `jnp.std` default). For
G=2 and rewards {0, 1} the two give advantages of +-0.707 (ddof=1) and +-1 (ddof=0).
"""
from typing import Callable

import jax
import jax.numpy as jnp

SCALES = ("group", "batch", "none")


def _grouped(rewards_s: jax.Array, group_size: int) -> jax.Array:
  """Reshapes f32[B*G] rewards to f32[B, G], validating the static shapes."""
  if group_size < 1:
    raise ValueError(f"group_size must be >= 1, got {group_size}.")
  if rewards_s.ndim != 1:
    raise ValueError(f"rewards must be 1-D f32[B*G], got shape {rewards_s.shape}.")
  if rewards_s.shape[0] % group_size:
    raise ValueError(
        f"len(rewards)={rewards_s.shape[0]} is not a multiple of group_size={group_size}.")
  return rewards_s.astype(jnp.float32).reshape(-1, group_size)


def group_advantages(
    rewards_s: jax.Array,
    group_size: int,
    *,
    scale: str = "group",
    eps: float = 1e-6,
    std_ddof: int = 1,
) -> jax.Array:
  """Group-relative advantages: reward minus its group mean, optionally divided by a std.

  Args:
    rewards_s: f32[S] scalar rewards, S = B*G, the G samples of each prompt contiguous.
    group_size: G, samples per prompt.
    scale: "group" (GRPO: divide by the group's std), "batch" (Lite-PPO: divide by the std of
      all S rewards; the mean subtracted is still the group's) or "none" (Dr.GRPO: no division).
    eps: added to the std before dividing; a zero-variance group gets advantage 0, not NaN.
    std_ddof: delta degrees of freedom of the std: 1 = sample std (TRL, verl, Tunix; default),
      0 = population std. Ignored when scale="none".

  Returns:
    adv_s: f32[S] advantages, in the input order.
  """
  if scale not in SCALES:
    raise ValueError(f"Unknown scale {scale!r}; valid: {SCALES}.")
  if eps < 0:
    raise ValueError(f"eps must be >= 0, got {eps}.")
  if std_ddof not in (0, 1):
    raise ValueError(f"std_ddof must be 0 or 1, got {std_ddof}.")
  r_bg = _grouped(rewards_s, group_size)
  centered_bg = r_bg - r_bg.mean(axis=-1, keepdims=True)
  if scale == "none":
    return centered_bg.reshape(-1)
  if scale == "group":
    if group_size <= std_ddof:
      raise ValueError(f"scale='group' with std_ddof={std_ddof} needs group_size > {std_ddof}.")
    std = jnp.std(r_bg, axis=-1, keepdims=True, ddof=std_ddof)
  else:  # "batch"
    if r_bg.size <= std_ddof:
      raise ValueError(f"scale='batch' with std_ddof={std_ddof} needs > {std_ddof} rewards.")
    std = jnp.std(r_bg, ddof=std_ddof)
  return (centered_bg / (std + eps)).reshape(-1)


def rloo_advantages(rewards_s: jax.Array, group_size: int) -> jax.Array:
  """REINFORCE leave-one-out: A_i = r_i - mean_{j != i} r_j = G/(G-1) * (r_i - mean_g).

  Args:
    rewards_s: f32[S] rewards, S = B*G, groups contiguous.
    group_size: G >= 2.

  Returns:
    adv_s: f32[S].
  """
  if group_size < 2:
    raise ValueError(f"RLOO needs group_size >= 2, got {group_size}.")
  r_bg = _grouped(rewards_s, group_size)
  loo_mean_bg = (r_bg.sum(axis=-1, keepdims=True) - r_bg) / (group_size - 1)
  return (r_bg - loo_mean_bg).reshape(-1)


def zero_variance_groups(rewards_s: jax.Array, group_size: int, *, atol: float = 0.0) -> jax.Array:
  """Flags groups whose G rewards are all equal (max - min <= atol).

  Such groups carry zero advantage under every estimator above, hence zero policy gradient;
  DAPO's dynamic sampling (arXiv 2503.14476: keep a group only if 0 < #correct < G) drops them and
  samples more prompts.

  Args:
    rewards_s: f32[S] rewards, S = B*G, groups contiguous.
    group_size: G.
    atol: tolerance on max - min; 0 compares exactly, right for discrete rule rewards.

  Returns:
    bool[B], True where the group has zero variance.
  """
  r_bg = _grouped(rewards_s, group_size)
  return (r_bg.max(axis=-1) - r_bg.min(axis=-1)) <= atol


def _grpo(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="group", **kw)


def _batch_std(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="batch", **kw)


def _dr_grpo(rewards_s, group_size, **kw):
  return group_advantages(rewards_s, group_size, scale="none", **kw)


# name -> fn(rewards_s, group_size, **kwargs) -> adv_s.  Configs pick one by name.
ADVANTAGE_ESTIMATORS: dict[str, Callable[..., jax.Array]] = {
    "grpo": _grpo,
    "batch_std": _batch_std,
    "dr_grpo": _dr_grpo,
    "rloo": rloo_advantages,
}


def get_advantage_fn(name: str) -> Callable[..., jax.Array]:
  """Looks up an estimator in ADVANTAGE_ESTIMATORS; ValueError listing the names if unknown."""
  try:
    return ADVANTAGE_ESTIMATORS[name]
  except KeyError:
    raise ValueError(
        f"Unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}.") from None
