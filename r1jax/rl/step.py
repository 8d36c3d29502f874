"""The jitted, sharded GRPO update and the log-prob passes it needs (old policy, reference).

One rollout of S = B x G completions becomes `num_iterations` (mu) epochs over `num_minibatches`
minibatches; each minibatch is one call of the jitted update. The old-policy log-probs come from the
sampler (same model code and parameters, so the first ratio is 1 up to float rounding); the reference
log-probs come from one forward of the reference variables and are skipped when beta == 0.

A GRPO batch is a dict of arrays, all sharded on the batch axis:
  tokens          int32[S, P + N]  left-padded prompt followed by the completion
  attention_mask  int32[S, P + N]  1 = real token (prompt padding and post-EOS tokens are 0)
  completion_mask int32[S, N]      1 = completion token the loss sees
  old_logp        f32[S, N]        sampler log-probs (temperature-scaled policy); with grpo.rollout_is on, the
                                   trainer's log-probs of the policy that sampled them
  behav_logp      f32[S, N]        with grpo.rollout_is on: the sampler's log-probs (the behaviour policy)
  ref_logp        f32[S, N]        reference log-probs (only when beta > 0)
and either
  rewards         f32[S]           each prompt's G samples contiguous: the update computes the group
                                   advantages itself, inside the jitted step, over the mesh
                                   (r1jax.rl.advantages.sharded_advantages)
  active          f32[S]           optional: 1 = the row counts, 0 = filler (its advantage is zeroed)
or
  advantages      f32[S]           computed by the caller.
A minibatch is the rollout batch plus `rows` int32[S / num_minibatches], the rows it trains on: the
advantages are those of the whole rollout (as GRPO defines them), then the step gathers its rows.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from r1jax.model.config import ModelConfig
from r1jax.model.runtime import Runtime
from r1jax.model.transformer import sequence_logprobs
from r1jax.rl.advantages import ADVANTAGE_ESTIMATORS, sharded_advantages
from r1jax.rl.losses import (AGGREGATIONS, KL_ESTIMATORS, POLICY_LOSSES, ROLLOUT_IS, UNBIASED_KL, grpo_loss,
                             rollout_correction)
from r1jax.sharding.mesh import mesh_rules
from r1jax.sharding.rules import get_rules
from r1jax.train.losses import add_balance_loss
from r1jax.train.step import make_update


@dataclasses.dataclass(frozen=True)
class GRPOConfig:
  """The loss and update knobs of GRPO (DeepSeekMath eq. 3) and its variants."""
  epsilon_low: float = 0.2             # clip: ratio >= 1 - epsilon_low
  epsilon_high: float = 0.2            # clip: ratio <= 1 + epsilon_high (DAPO clip-higher: 0.28)
  beta: float = 0.04                   # KL coefficient (DeepSeekMath 0.04, R1 0.001); 0 skips the reference
  kl_estimator: str = "k3"             # "k1" | "k2" | "k3" | "k3_unbiased" (DeepSeek-V3.2: k3 x pi/pi_old)
  aggregation: str = "seq_mean_token_mean"   # GRPO; "token_mean" (DAPO); "seq_mean_token_sum_norm" (Dr.GRPO)
  ratio_level: str = "token"           # "token" | "sequence" (GSPO)
  max_len: int | None = None           # Dr.GRPO normaliser (defaults to the completion length N)
  clip_ratio_c: float | None = None    # dual-clip bound for negative advantages
  policy_loss: str = "clip"            # "clip" (PPO/GRPO) | "cispo" | "gmpo" | "sapo": r1jax.rl.losses
  sapo_tau_pos: float = 1.0            # SAPO gate temperature, positive advantages
  sapo_tau_neg: float = 1.05           # SAPO gate temperature, other advantages
  # Sampler/trainer mismatch correction (r1jax.rl.losses.rollout_correction): "off" | "token_tis" |
  # "sequence_tis" | "token_mis" | "sequence_mis"; the stage then recomputes the old policy's log-probs
  rollout_is: str = "off"
  rollout_is_cap: float = 2.0          # C: truncation / masking threshold
  temperature: float = 1.0             # sampling temperature: log-probs are of the T-scaled policy
  num_iterations: int = 1              # mu: update epochs per rollout
  num_minibatches: int = 1             # minibatches per epoch
  grad_accum_steps: int = 1            # microbatches per minibatch update (the minibatch's loss, exactly)
  router_bias_rate: float = 0.0        # aux-loss-free balancing speed (0 keeps the bias frozen)
  balance_loss_coef: float = 0.0       # sequence-wise balance loss alpha (DeepSeek-V3: 1e-4)

  def __post_init__(self):
    checks = [
        ("epsilon_low", 0 <= self.epsilon_low < 1, "must be in [0, 1)"),
        ("epsilon_high", self.epsilon_high >= 0, "must be >= 0"),
        ("beta", self.beta >= 0, "must be >= 0"),
        ("kl_estimator", self.kl_estimator in (*KL_ESTIMATORS, UNBIASED_KL),
         f"must be one of {(*KL_ESTIMATORS, UNBIASED_KL)}"),
        ("policy_loss", self.policy_loss in POLICY_LOSSES, f"must be one of {POLICY_LOSSES}"),
        ("policy_loss", self.policy_loss == "clip" or (self.ratio_level == "token" and self.clip_ratio_c is None),
         "takes token ratios and no dual clip (ratio_level='token', clip_ratio_c=None)"),
        ("sapo_tau_pos", self.sapo_tau_pos > 0, "must be > 0"),
        ("sapo_tau_neg", self.sapo_tau_neg > 0, "must be > 0"),
        ("rollout_is", self.rollout_is in ROLLOUT_IS, f"must be one of {ROLLOUT_IS}"),
        ("rollout_is_cap", self.rollout_is_cap > 1, "must be > 1"),
        ("aggregation", self.aggregation in AGGREGATIONS, f"must be one of {tuple(AGGREGATIONS)}"),
        ("ratio_level", self.ratio_level in ("token", "sequence"), "must be 'token' or 'sequence'"),
        ("max_len", self.max_len is None or self.max_len >= 1, "must be None or >= 1"),
        ("clip_ratio_c", self.clip_ratio_c is None or self.clip_ratio_c > 1, "must be None or > 1"),
        ("temperature", self.temperature > 0, "must be > 0 (greedy rollouts give no exploration)"),
        ("num_iterations", self.num_iterations >= 1, "must be >= 1"),
        ("num_minibatches", self.num_minibatches >= 1, "must be >= 1"),
        ("grad_accum_steps", self.grad_accum_steps >= 1, "must be >= 1"),
        ("router_bias_rate", self.router_bias_rate >= 0, "must be >= 0"),
        ("balance_loss_coef", self.balance_loss_coef >= 0, "must be >= 0"),
    ]
    for name, ok, why in checks:
      if not ok:
        raise ValueError(f"GRPOConfig.{name}={getattr(self, name)!r}: {why}")


ROW_KEYS = ("tokens", "attention_mask", "completion_mask", "old_logp", "ref_logp", "behav_logp")


def _batch_axes(mesh, rules) -> tuple[str, ...]:
  """The mesh axes the batch is split over (the `batch` rule), for the advantages' collectives."""
  axes = dict(get_rules(rules) if isinstance(rules, str) else rules).get("batch")
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return tuple(a for a in axes if mesh is not None and a in mesh.axis_names)


def minibatch_in_step(batch: dict, *, group_size: int | None, estimator: str = "grpo", mesh=None,
                      rules="fsdp_tp") -> dict:
  """Inside the jitted step: the batch the loss sees, with its advantages.

  From `rewards` the group advantages are computed over the whole rollout where the rewards lie
  (r1jax.rl.advantages.sharded_advantages) and zeroed where `active` is 0; given `advantages` are
  used as they are. With `rows`, the minibatch's rows are then gathered (and kept on the batch axes)."""
  if "rewards" in batch:
    if group_size is None:
      raise ValueError("the GRPO batch has rewards: make_grpo_update needs group_size to compute advantages")
    adv = sharded_advantages(batch["rewards"], group_size, estimator, mesh=mesh, axes=_batch_axes(mesh, rules))
    if "active" in batch:
      adv = adv * batch["active"]
  elif "advantages" in batch:
    adv = batch["advantages"]
  else:
    raise ValueError(f"the GRPO batch needs rewards or advantages; it has {sorted(batch)}")
  out = {k: batch[k] for k in ROW_KEYS if batch.get(k) is not None}
  out["advantages"] = adv
  rows = batch.get("rows")
  if rows is not None:
    out = {k: nn.with_logical_constraint(jnp.take(v, rows, axis=0), ("batch",) + (None,) * (v.ndim - 1))
           for k, v in out.items()}
  return out


def grpo_objective(cfg: ModelConfig, rl: GRPOConfig, runtime: Runtime | None = None, *,
                   group_size: int | None = None, advantage_estimator: str = "grpo", mesh=None,
                   rules="fsdp_tp"):
  """loss_fn(variables, batch) -> (loss, (metrics, aux)) for r1jax.train.step.make_update."""

  def loss_fn(variables, batch):
    batch = minibatch_in_step(batch, group_size=group_size, estimator=advantage_estimator, mesh=mesh,
                              rules=rules)
    n = batch["completion_mask"].shape[1]
    logp, aux = sequence_logprobs(cfg, variables, batch["tokens"], batch["attention_mask"], n, rl.temperature,
                                  runtime=runtime)
    is_weights, is_metrics = None, {}
    if rl.rollout_is != "off":
      if batch.get("behav_logp") is None:
        raise ValueError(f"grpo.rollout_is={rl.rollout_is!r} needs the sampler's log-probs in batch['behav_logp']")
      is_weights, is_metrics = rollout_correction(batch["old_logp"], batch["behav_logp"], batch["completion_mask"],
                                                  mode=rl.rollout_is, cap=rl.rollout_is_cap)
    loss, metrics = grpo_loss(
        logp, batch["old_logp"], batch.get("ref_logp"), batch["advantages"], batch["completion_mask"],
        epsilon_low=rl.epsilon_low, epsilon_high=rl.epsilon_high, beta=rl.beta, kl_estimator=rl.kl_estimator,
        aggregation=rl.aggregation, ratio_level=rl.ratio_level, max_len=rl.max_len or n,
        clip_ratio_c=rl.clip_ratio_c, policy_loss=rl.policy_loss, sapo_tau_pos=rl.sapo_tau_pos,
        sapo_tau_neg=rl.sapo_tau_neg, is_weights_st=is_weights)
    metrics = {**metrics, **is_metrics}
    loss, metrics = add_balance_loss(loss, metrics, aux, rl.balance_loss_coef)
    # What the loss is a mean over (for gradient accumulation): tokens for token_mean, else sequences.
    weight = metrics["num_tokens"] if rl.aggregation == "token_mean" else jnp.float32(batch["advantages"].shape[0])
    return loss, (metrics, {**(aux or {}), "loss_weight": weight})

  return loss_fn


def split_rollout_rows(batch: dict, k: int) -> tuple[dict, dict]:
  """Gradient-accumulation split of a GRPO batch: microbatch i trains on rows i, i + k, ... of the minibatch's
  `rows` (all rows when there are none); the rollout itself is shared, so every microbatch computes the
  group advantages over the whole rollout, as the one-batch update does."""
  rows = batch.get("rows")
  if rows is None:
    rows = jnp.arange(next(v.shape[0] for name, v in batch.items() if name in ("rewards", "advantages")),
                      dtype=jnp.int32)
  if rows.shape[0] % k:
    raise ValueError(f"gradient accumulation: a minibatch of {rows.shape[0]} rows is not divisible into "
                     f"grpo.grad_accum_steps={k} microbatches")
  shared = {name: v for name, v in batch.items() if name != "rows"}
  return {"rows": rows.reshape(rows.shape[0] // k, k).T}, shared


def make_grpo_update(cfg: ModelConfig, rl: GRPOConfig, tx: optax.GradientTransformation, *, mesh=None,
                     rules="fsdp_tp", donate: bool = True, runtime: Runtime | None = None,
                     group_size: int | None = None, advantage_estimator: str = "grpo"):
  """The jitted GRPO minibatch update: `update(state, batch) -> (state, metrics)`; runtime: r1jax.model.Runtime.

  group_size and advantage_estimator (a name in r1jax.rl.ADVANTAGE_ESTIMATORS) are used when the
  batch brings `rewards`: the advantages are then computed inside the step, sharded like the batch."""
  if advantage_estimator not in ADVANTAGE_ESTIMATORS:
    raise ValueError(f"advantage_estimator={advantage_estimator!r}: must be one of {sorted(ADVANTAGE_ESTIMATORS)}")
  loss_fn = grpo_objective(cfg, rl, runtime, group_size=group_size, advantage_estimator=advantage_estimator,
                           mesh=mesh, rules=rules)
  return make_update(cfg, tx, loss_fn, router_bias_rate=rl.router_bias_rate, mesh=mesh, rules=rules,
                     donate=donate, accum_steps=rl.grad_accum_steps, split=split_rollout_rows)


def make_logprob_fn(cfg: ModelConfig, temperature: float = 1.0, *, mesh=None, rules="fsdp_tp",
                    runtime: Runtime | None = None):
  """Jitted `logprob_fn(variables, tokens, attention_mask, num_completion) -> f32[S, N]` (reference pass)."""
  fn = jax.jit(lambda v, t, m, n: sequence_logprobs(cfg, v, t, m, n, temperature, runtime=runtime)[0],
               static_argnums=3)

  def logprob_fn(variables, tokens, attention_mask, num_completion: int):
    with mesh_rules(mesh, rules):
      return fn(variables, tokens, attention_mask, num_completion)

  return logprob_fn


def minibatch_rows(num_rows: int, num_minibatches: int, rng: np.random.Generator | None = None):
  """The rows of each of `num_minibatches` equal minibatches (int32 arrays; shuffled when rng is given)."""
  if num_rows % num_minibatches:
    raise ValueError(f"rollout of {num_rows} sequences is not divisible into num_minibatches={num_minibatches}")
  order = (np.arange(num_rows) if rng is None else rng.permutation(num_rows)).astype(np.int32)
  return np.split(order, num_minibatches)


def grpo_update_rollout(update, state, batch: dict, rl: GRPOConfig, rng: np.random.Generator | None = None):
  """mu epochs x minibatches of `update` over one rollout. Returns (state, list of per-update metrics).

  The whole rollout stays on device; each update gets it with the `rows` of its minibatch (none when
  there is one minibatch in the rollout's order)."""
  num_rows = next(v.shape[0] for k, v in batch.items() if k in ("rewards", "advantages"))
  history = []
  for _ in range(rl.num_iterations):
    for rows in minibatch_rows(num_rows, rl.num_minibatches, rng):
      mb = batch if rng is None and rl.num_minibatches == 1 else {**batch, "rows": rows}
      state, metrics = update(state, mb)
      history.append(metrics)
  return state, history
