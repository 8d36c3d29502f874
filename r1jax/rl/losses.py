"""GRPO-family policy losses, KL estimators and log-prob helpers: pure functions of arrays.

One function, `grpo_loss`, covers the published variants through string arguments:

  * ratio_level   "token"    PPO/GRPO per-token ratio exp(logp - old_logp) (DeepSeekMath eq. 3).
                  "sequence" GSPO (arXiv 2507.18071), in its GSPO-token form, see `grpo_loss`.
  * clipping      epsilon_low / epsilon_high: clip-higher of DAPO (arXiv 2503.14476, eps_high=0.28);
                  clip_ratio_c: dual-clip for negative advantages (Ye et al. 2020, arXiv 1912.09729;
                  verl `clip_ratio_c`).
  * KL            beta * KL(pi_theta || pi_ref) in the loss, estimator k1, k2 or k3 (Schulman 2020,
                  "Approximating KL divergence"); k3 is DeepSeekMath eq. 4 and R1's choice.
  * aggregation   how per-token losses become a scalar, see AGGREGATIONS.
  * policy_loss   the surrogate, see POLICY_LOSSES: "clip" (above), or one of
                  "cispo"  CISPO, MiniMax-M1 (arXiv 2506.13585): -sg(clip(ratio, 1-eps_low, 1+eps_high)) * A * logp,
                           a REINFORCE step weighted by the clipped importance ratio; no token loses its gradient.
                  "gmpo"   GMPO (arXiv 2507.20673): -A * geometric mean over the sequence of the token ratios, each
                           log-ratio clipped pessimistically to [-eps_low, eps_high] (the paper: 0.4 both sides).
                  "sapo"   SAPO (arXiv 2511.20347): -(4/tau) * sigmoid(tau * (ratio - 1)) * A, a soft gate instead of
                           a hard clip, tau = sapo_tau_pos for A > 0 and sapo_tau_neg otherwise.
  * rollout IS    `rollout_correction`: when the sampler's log-probs (the behaviour policy mu) and the trainer's
                  (pi_old) differ, weights on the policy term: truncated IS, min(pi_old/mu, C) (Yao et al.
                  2025, "Your efficient RL framework secretly brings you off-policy RL training"), or masked IS
                  (tokens or sequences whose ratio leaves [1/C, C] get weight 0), per token or per sequence.
  * unbiased KL   kl_estimator="k3_unbiased": the DeepSeek-V3.2 report (2025): k3 weighted by the importance
                  ratio pi_theta / pi_old, whose gradient is unbiased when the samples come from pi_old.

Shapes: S = B*G sequences, T completion time steps, V vocab. Padding positions
(mask False) may hold any finite or non-finite garbage: every masked value is replaced with
`jnp.where` before it is used, so neither the loss nor its gradient picks up NaN from padding.
"""
from typing import Callable

import jax
import jax.numpy as jnp

from r1jax.model.transformer import token_logprobs as model_token_logprobs

# "seq_mean_token_mean":     mean over a sequence's valid tokens, then mean over the S sequences
#                            (original GRPO, DeepSeekMath eq. 3; verl seq-mean-token-mean;
#                            TRL "grpo").
# "token_mean":              sum over all valid tokens / number of valid tokens in the batch
#                            (DAPO token-level loss; verl token-mean, TRL "bnpo" / local "dapo").
# "seq_mean_token_sum_norm": sum over a sequence's tokens / max_len, then mean over sequences
#                            (Dr.GRPO, arXiv 2503.20783: a constant normaliser removes the
#                            length bias).
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")
RATIO_LEVELS = ("token", "sequence")
POLICY_LOSSES = ("clip", "cispo", "gmpo", "sapo")
# Rollout importance-sampling corrections: "off", or "<token|sequence>_<tis|mis>" (truncated / masked IS).
ROLLOUT_IS = ("off", "token_tis", "sequence_tis", "token_mis", "sequence_mis")
UNBIASED_KL = "k3_unbiased"        # k3 x (pi_theta / pi_old): DeepSeek-V3.2's estimate, needs old_logp


def _k1(log_r):
  # log_r = ref_logp - logp.  k1 = log(pi/pi_ref): unbiased, high variance, can be negative.
  return -log_r


def _k2(log_r):
  # k2 = (log r)^2 / 2: biased, low variance, >= 0.
  return 0.5 * jnp.square(log_r)


def _k3(log_r):
  # k3 = r - log r - 1 with r = pi_ref/pi: unbiased, >= 0, low variance (DeepSeekMath eq. 4).
  return jnp.expm1(log_r) - log_r


KL_ESTIMATORS: dict[str, Callable[[jax.Array], jax.Array]] = {"k1": _k1, "k2": _k2, "k3": _k3}


def _is_concrete_number(x) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def kl_penalty(logp_st: jax.Array, ref_logp_st: jax.Array, estimator: str = "k3") -> jax.Array:
  """Per-token estimate of KL(pi_theta || pi_ref) from the sampled tokens' log-probs.

  With log_r = ref_logp - logp (samples drawn from pi_theta):
    k1 = -log_r,   k2 = log_r**2 / 2,   k3 = exp(log_r) - log_r - 1.

  Args:
    logp_st: f32[S, T] log-probs of the sampled tokens under the current policy.
    ref_logp_st: f32[S, T] log-probs of the same tokens under the reference policy.
    estimator: "k1", "k2" or "k3".

  Returns:
    f32[S, T] per-token KL estimates (unmasked).
  """
  if estimator not in KL_ESTIMATORS:
    raise ValueError(f"Unknown kl_estimator {estimator!r}; valid: {sorted(KL_ESTIMATORS)}.")
  log_r = ref_logp_st.astype(jnp.float32) - logp_st.astype(jnp.float32)
  return KL_ESTIMATORS[estimator](log_r)


def aggregate_loss(
    loss_st: jax.Array, mask_st: jax.Array, aggregation: str, max_len: int | None = None
) -> jax.Array:
  """Reduces per-token losses to a scalar; see AGGREGATIONS for the definitions.

  Sequences with no valid token contribute 0 (and still count in the S of the sequence means,
  as in TRL and verl), and an all-padding batch gives 0, never NaN.

  Args:
    loss_st: f32[S, T] per-token losses.
    mask_st: bool[S, T] valid completion tokens.
    aggregation: one of AGGREGATIONS.
    max_len: the constant normaliser of "seq_mean_token_sum_norm" (the generation budget,
      TRL max_completion_length); required there, ignored otherwise.

  Returns:
    f32[] loss.
  """
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"Unknown aggregation {aggregation!r}; valid: {AGGREGATIONS}.")
  valid_st = mask_st.astype(bool)
  masked_st = jnp.where(valid_st, loss_st, 0.0)
  if aggregation == "token_mean":
    return masked_st.sum() / jnp.maximum(valid_st.sum(), 1)
  if aggregation == "seq_mean_token_mean":
    n_s = valid_st.sum(axis=-1)
    return jnp.mean(masked_st.sum(axis=-1) / jnp.maximum(n_s, 1))
  if max_len is None or max_len <= 0:
    raise ValueError(
        f"aggregation='seq_mean_token_sum_norm' (Dr.GRPO) needs max_len > 0, got {max_len}.")
  return jnp.mean(masked_st.sum(axis=-1) / max_len)


def _masked_mean(x_st, valid_st):
  return jnp.where(valid_st, x_st, 0.0).sum() / jnp.maximum(valid_st.sum(), 1)


def rollout_correction(old_logp_st: jax.Array, behav_logp_st: jax.Array, mask_st: jax.Array, *, mode: str,
                       cap: float = 2.0) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Importance weights for the sampler/trainer mismatch, and the mismatch metrics.

  rho = pi_old / mu = exp(old_logp - behav_logp) per token ("token_*") or exp(sum over the sequence's valid
  tokens of old_logp - behav_logp) per sequence ("sequence_*", the weight broadcast to its tokens).
    *_tis: weight = min(rho, cap)                          (truncated IS)
    *_mis: weight = rho inside [1/cap, cap], else 0         (masked IS: those tokens / sequences are dropped)
  The weights are constants (stop-gradient) that multiply the policy term of the loss.

  Args:
    old_logp_st: f32[S, T] the trainer's log-probs of the sampled tokens under the policy that sampled them.
    behav_logp_st: f32[S, T] the sampler's log-probs of the same tokens.
    mask_st: [S, T] valid completion tokens.
    mode: one of ROLLOUT_IS other than "off".
    cap: C > 1.

  Returns:
    (weights f32[S, T] (0 on padding), metrics): mismatch_abs_mean / mismatch_abs_max (|old - behav| over
    valid tokens), mismatch_kl (mean k3 estimate of KL(mu || pi_old) on mu's samples), is_weight_mean (over
    valid tokens), is_clipped_frac (fraction of valid tokens truncated or masked).
  """
  if mode not in ROLLOUT_IS or mode == "off":
    raise ValueError(f"rollout_correction mode {mode!r}: must be one of {ROLLOUT_IS[1:]}.")
  if _is_concrete_number(cap) and cap <= 1:
    raise ValueError(f"rollout IS cap must be > 1, got {cap}.")
  valid_st = mask_st.astype(bool)
  diff_st = jnp.where(valid_st, old_logp_st.astype(jnp.float32) - behav_logp_st.astype(jnp.float32), 0.0)
  diff_st = jax.lax.stop_gradient(diff_st)
  level, kind = mode.split("_")
  log_rho_st = diff_st if level == "token" else jnp.broadcast_to(diff_st.sum(-1, keepdims=True), diff_st.shape)
  log_cap = jnp.log(jnp.float32(cap))
  rho_st = jnp.exp(jnp.minimum(log_rho_st, 80.0))          # exp stays finite; weights are capped below anyway
  if kind == "tis":
    w_st = jnp.minimum(rho_st, cap)
    clipped_st = log_rho_st > log_cap
  else:
    clipped_st = jnp.abs(log_rho_st) > log_cap
    w_st = jnp.where(clipped_st, 0.0, rho_st)
  w_st = jnp.where(valid_st, w_st, 0.0)
  metrics = {
      "mismatch_abs_mean": _masked_mean(jnp.abs(diff_st), valid_st),
      "mismatch_abs_max": jnp.max(jnp.where(valid_st, jnp.abs(diff_st), 0.0)),
      # samples from mu: E_mu[k3(log(pi_old/mu))] = KL(mu || pi_old)
      "mismatch_kl": _masked_mean(jnp.expm1(diff_st) - diff_st, valid_st),
      "is_weight_mean": _masked_mean(w_st, valid_st),
      "is_clipped_frac": _masked_mean(clipped_st.astype(jnp.float32), valid_st),
  }
  return jax.lax.stop_gradient(w_st), metrics


def grpo_loss(
    logp_st: jax.Array,
    old_logp_st: jax.Array,
    ref_logp_st: jax.Array | None,
    adv_s: jax.Array,
    mask_st: jax.Array,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.04,
    kl_estimator: str = "k3",
    aggregation: str = "seq_mean_token_mean",
    ratio_level: str = "token",
    max_len: int | None = None,
    clip_ratio_c: float | None = None,
    policy_loss: str = "clip",
    sapo_tau_pos: float = 1.0,
    sapo_tau_neg: float = 1.05,
    is_weights_st: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Clipped-surrogate GRPO loss plus beta * KL, with the DAPO / Dr.GRPO / GSPO variants.

  Per token (DeepSeekMath eq. 3, to be minimised):
    ratio = exp(logp - old_logp)
    surrogate = min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A)
    surrogate = max(surrogate, clip_ratio_c * A)  where A < 0, if clip_ratio_c is set (dual-clip)
    loss_tok = -surrogate + beta * KL_estimator(logp, ref_logp)
  then `aggregate_loss(loss_tok, mask, aggregation, max_len)`.

  ratio_level="sequence" is GSPO in its GSPO-token form (arXiv 2507.18071):
    s_i = exp(mean over valid t of (logp - old_logp))      (length-normalised sequence ratio)
    ratio_{i,t} = sg(s_i) * exp(logp_{i,t} - sg(logp_{i,t}))
  Every token's ratio has the value s_i, so the clip (and the min) act on the sequence ratio,
  and with a per-sequence advantage the gradient equals GSPO's sequence-level gradient
  sg(s_i) * A_i * mean_t grad logp_{i,t} when unclipped. The KL term stays per token.

  Args:
    logp_st: f32[S, T] log-probs of the sampled tokens under the policy being trained.
    old_logp_st: f32[S, T] the same under the policy that sampled them (treated as constant).
    ref_logp_st: f32[S, T] the same under the reference policy, or None when beta == 0.
    adv_s: f32[S] one advantage per sequence (see r1jax.rl.advantages).
    mask_st: bool[S, T] (or {0, 1}) valid completion tokens.
    epsilon_low: lower clip range, ratio >= 1 - epsilon_low.
    epsilon_high: upper clip range, ratio <= 1 + epsilon_high (DAPO clip-higher: 0.28).
    beta: KL coefficient (DeepSeekMath 0.04, R1 0.001, TRL default 0).
    kl_estimator: "k1", "k2" or "k3".
    aggregation: one of AGGREGATIONS.
    ratio_level: "token" or "sequence" (GSPO).
    max_len: normaliser for aggregation="seq_mean_token_sum_norm".
    clip_ratio_c: dual-clip bound (> 1, verl uses 3.0); None disables it.
    policy_loss: one of POLICY_LOSSES (see the module docstring); "cispo" and "gmpo" read their clip bounds
      from epsilon_low / epsilon_high, "sapo" its temperatures from sapo_tau_pos / sapo_tau_neg.
      ratio_level="sequence" and clip_ratio_c go with "clip" only.
    sapo_tau_pos, sapo_tau_neg: SAPO's gate temperatures for positive / other advantages (> 0).
    is_weights_st: f32[S, T] constant weights on the per-token policy term (`rollout_correction`), or None.

  Returns:
    (loss, metrics): loss f32[], and a dict of f32[] scalars, all masked to valid tokens:
      loss, pg_loss, kl: loss == pg_loss + beta * kl, both pieces aggregated like the loss
        (kl is computed whenever ref_logp_st is given, 0 otherwise);
      clip_frac_low / clip_frac_high: fraction of valid tokens where the low clip (A < 0,
        ratio < 1 - epsilon_low) or the high clip (A > 0, ratio > 1 + epsilon_high) is active,
        i.e. the token gets no policy gradient; clip_frac = their sum; clip_frac_dual: fraction
        where dual-clip is active (A < 0, ratio > clip_ratio_c), 0 when disabled;
      ratio_mean, ratio_min, ratio_max: of the per-token ratio (1 when no valid token);
      ppo_kl: mean of old_logp - logp, a k1 estimate of KL(old || current);
      logp_diff_abs_mean, logp_diff_abs_max, logp_diff_kl: of logp - old_logp (k3 estimate of KL(old ||
        current) for the last); on the first update of a rollout, the sampler/trainer mismatch;
      entropy_proxy: mean of -logp, the sampled-token NLL. It estimates the policy entropy only
        when the tokens were sampled on-policy from the distribution logp scores; it is not the
        full-vocabulary entropy (see `token_entropy` for that);
      adv_mean, adv_std, adv_min, adv_max: over the S sequences;
      num_tokens: number of valid tokens.
  """
  # --- Validation: all arguments but the arrays are static Python values.
  for name, value in (("epsilon_low", epsilon_low), ("epsilon_high", epsilon_high), ("beta", beta)):
    if _is_concrete_number(value) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  if kl_estimator not in KL_ESTIMATORS and kl_estimator != UNBIASED_KL:
    raise ValueError(f"Unknown kl_estimator {kl_estimator!r}; valid: {sorted(KL_ESTIMATORS) + [UNBIASED_KL]}.")
  if aggregation not in AGGREGATIONS:
    raise ValueError(f"Unknown aggregation {aggregation!r}; valid: {AGGREGATIONS}.")
  if policy_loss not in POLICY_LOSSES:
    raise ValueError(f"Unknown policy_loss {policy_loss!r}; valid: {POLICY_LOSSES}.")
  if policy_loss != "clip" and (ratio_level != "token" or clip_ratio_c is not None):
    raise ValueError(f"policy_loss={policy_loss!r} takes token ratios and no dual clip (ratio_level='token', "
                     f"clip_ratio_c=None); got ratio_level={ratio_level!r}, clip_ratio_c={clip_ratio_c}.")
  for name, value in (("sapo_tau_pos", sapo_tau_pos), ("sapo_tau_neg", sapo_tau_neg)):
    if _is_concrete_number(value) and value <= 0:
      raise ValueError(f"{name} must be > 0, got {value}.")
  if ratio_level not in RATIO_LEVELS:
    raise ValueError(f"Unknown ratio_level {ratio_level!r}; valid: {RATIO_LEVELS}.")
  if aggregation == "seq_mean_token_sum_norm" and (max_len is None or max_len <= 0):
    raise ValueError(
        f"aggregation='seq_mean_token_sum_norm' (Dr.GRPO) needs max_len > 0, got {max_len}.")
  if clip_ratio_c is not None and clip_ratio_c <= 1.0:
    raise ValueError(f"clip_ratio_c must be > 1 (dual-clip), got {clip_ratio_c}.")
  if ref_logp_st is None and not (_is_concrete_number(beta) and beta == 0):
    raise ValueError(f"ref_logp_st is None but beta={beta}; pass ref log-probs or set beta=0.")
  if logp_st.ndim != 2:
    raise ValueError(f"logp must be [S, T], got shape {logp_st.shape}.")
  others = [("old_logp", old_logp_st), ("mask", mask_st)]
  if ref_logp_st is not None:
    others.append(("ref_logp", ref_logp_st))
  for name, x in others:
    if x.shape != logp_st.shape:
      raise ValueError(f"{name} shape {x.shape} != logp shape {logp_st.shape}.")
  if adv_s.shape != logp_st.shape[:1]:
    raise ValueError(f"advantages shape {adv_s.shape} != ({logp_st.shape[0]},).")

  valid_st = mask_st.astype(bool)
  logp_st = logp_st.astype(jnp.float32)
  old_logp_st = jax.lax.stop_gradient(old_logp_st.astype(jnp.float32))
  adv_s = jax.lax.stop_gradient(adv_s.astype(jnp.float32))
  n_s = valid_st.sum(axis=-1)

  # --- Importance ratio.  where() first: padding may hold -inf/NaN, and exp of it must not
  # reach the loss or the gradient.
  log_ratio_st = jnp.where(valid_st, logp_st - old_logp_st, 0.0)
  if ratio_level == "sequence":
    seq_log_ratio_s = log_ratio_st.sum(axis=-1) / jnp.maximum(n_s, 1)
    masked_logp_st = jnp.where(valid_st, logp_st, 0.0)
    log_ratio_st = (jax.lax.stop_gradient(seq_log_ratio_s)[:, None]
                    + masked_logp_st - jax.lax.stop_gradient(masked_logp_st))
  ratio_st = jnp.exp(log_ratio_st)

  a_st = adv_s[:, None]
  if policy_loss == "clip":
    # --- Clipped surrogate (PPO, Schulman et al. 2017 eq. 7; GRPO keeps it per token).
    clipped_ratio_st = jnp.clip(ratio_st, 1.0 - epsilon_low, 1.0 + epsilon_high)
    surrogate_st = jnp.minimum(ratio_st * a_st, clipped_ratio_st * a_st)
    if clip_ratio_c is not None:
      # Dual-clip: for A < 0 the unclipped ratio*A is unbounded below as ratio grows; bound the
      # surrogate by c*A (verl compute_policy_loss, clip_ratio_c=3).
      surrogate_st = jnp.where(a_st < 0, jnp.maximum(surrogate_st, clip_ratio_c * a_st), surrogate_st)
    pg_loss_st = -surrogate_st
  elif policy_loss == "cispo":
    # The clipped ratio is a constant weight on a REINFORCE term: its gradient is -w * A * grad logp.
    weight_st = jax.lax.stop_gradient(jnp.clip(ratio_st, 1.0 - epsilon_low, 1.0 + epsilon_high))
    pg_loss_st = -weight_st * a_st * jnp.where(valid_st, logp_st, 0.0)
  elif policy_loss == "sapo":
    tau_st = jnp.where(a_st > 0, sapo_tau_pos, sapo_tau_neg)
    pg_loss_st = -(4.0 / tau_st) * jax.nn.sigmoid(tau_st * (ratio_st - 1.0)) * a_st
  else:  # gmpo
    # Pessimistic clip in log space: for A > 0 the smaller of log r and its clip, for A < 0 the larger.
    sign_st = jnp.sign(a_st)
    clipped_log_st = jnp.clip(log_ratio_st, -epsilon_low, epsilon_high)
    log_st = sign_st * jnp.minimum(sign_st * log_ratio_st, sign_st * clipped_log_st)
    seq_ratio_s = jnp.exp(jnp.where(valid_st, log_st, 0.0).sum(axis=-1) / jnp.maximum(n_s, 1))
    # One loss per sequence, on each of its tokens: seq_mean_token_mean gives the paper's mean over sequences.
    pg_loss_st = jnp.broadcast_to((-adv_s * seq_ratio_s)[:, None], logp_st.shape)

  if is_weights_st is not None:
    pg_loss_st = jax.lax.stop_gradient(is_weights_st.astype(jnp.float32)) * pg_loss_st

  # --- KL to the reference policy, in the loss (GRPO), not in the reward (PPO-RLHF).
  if ref_logp_st is not None:
    ref_logp_st = jax.lax.stop_gradient(ref_logp_st.astype(jnp.float32))
    if kl_estimator == UNBIASED_KL:
      # ratio (with its gradient) x k3: E_old[ratio * grad k3-term] is the exact gradient of KL(pi_theta || ref).
      kl_st = ratio_st * kl_penalty(jnp.where(valid_st, logp_st, 0.0), jnp.where(valid_st, ref_logp_st, 0.0), "k3")
    else:
      kl_st = kl_penalty(jnp.where(valid_st, logp_st, 0.0), jnp.where(valid_st, ref_logp_st, 0.0),
                         kl_estimator)
  else:
    kl_st = jnp.zeros_like(logp_st)

  pg_loss = aggregate_loss(pg_loss_st, valid_st, aggregation, max_len)
  kl = aggregate_loss(kl_st, valid_st, aggregation, max_len)
  loss = pg_loss + beta * kl

  # --- Metrics.  Clip activity as in TRL: the clip is active (zero gradient) on the low side
  # only for A < 0 and on the high side only for A > 0.
  ratio_sg = jax.lax.stop_gradient(ratio_st)
  low_st = (ratio_sg < 1.0 - epsilon_low) & (a_st < 0) & valid_st
  high_st = (ratio_sg > 1.0 + epsilon_high) & (a_st > 0) & valid_st
  if clip_ratio_c is not None:
    dual_st = (ratio_sg > clip_ratio_c) & (a_st < 0) & valid_st
  else:
    dual_st = jnp.zeros_like(valid_st)
  num_tokens = valid_st.sum()
  has_tokens = num_tokens > 0
  frac = lambda b_st: b_st.sum() / jnp.maximum(num_tokens, 1)
  clip_frac_low, clip_frac_high = frac(low_st), frac(high_st)
  logp_sg = jax.lax.stop_gradient(logp_st)
  metrics = {
      "loss": loss,
      "pg_loss": pg_loss,
      "kl": kl,
      "clip_frac_low": clip_frac_low,
      "clip_frac_high": clip_frac_high,
      "clip_frac": clip_frac_low + clip_frac_high,
      "clip_frac_dual": frac(dual_st),
      "ratio_mean": jnp.where(has_tokens, _masked_mean(ratio_sg, valid_st), 1.0),
      "ratio_min": jnp.where(has_tokens, jnp.min(jnp.where(valid_st, ratio_sg, jnp.inf)), 1.0),
      "ratio_max": jnp.where(has_tokens, jnp.max(jnp.where(valid_st, ratio_sg, -jnp.inf)), 1.0),
      "ppo_kl": _masked_mean(old_logp_st - logp_sg, valid_st),
      # |logp - old_logp| and a k3 estimate of KL(old || current) on old's samples. Before the first parameter
      # update of a rollout this is the sampler/trainer mismatch, at no extra cost (r1jax.stages.grpo logs it).
      "logp_diff_abs_mean": _masked_mean(jnp.abs(logp_sg - old_logp_st), valid_st),
      "logp_diff_abs_max": jnp.max(jnp.where(valid_st, jnp.abs(logp_sg - old_logp_st), 0.0)),
      "logp_diff_kl": _masked_mean(jnp.expm1(logp_sg - old_logp_st) - (logp_sg - old_logp_st), valid_st),
      "entropy_proxy": _masked_mean(-logp_sg, valid_st),
      "adv_mean": adv_s.mean(),
      "adv_std": adv_s.std(),
      "adv_min": adv_s.min(),
      "adv_max": adv_s.max(),
      "num_tokens": num_tokens.astype(jnp.float32),
  }
  metrics = {k: jax.lax.stop_gradient(v).astype(jnp.float32) for k, v in metrics.items()}
  return loss, metrics


def token_logprobs(
    logits_stv: jax.Array, targets_st: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
  """log softmax(logits / temperature) at the target ids, in float32.

  The sampler and the update both call this, so old and new log-probs are computed by the same
  expression, and the log-probs the update recomputes match the sampler's. It
  computes logit[target] - logsumexp(logits) rather than materialising a second [S, T, V]
  log_softmax array.

  Args:
    logits_stv: [S, T, V] logits, any float dtype (upcast to f32 before the temperature).
    targets_st: i32[S, T] token ids in [0, V).
    temperature: > 0; the sampling temperature the tokens were drawn at.

  Returns:
    f32[S, T] log-probabilities.
  """
  if _is_concrete_number(temperature) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  # One expression for sampler and update: r1jax.model owns it (the sampler sits below r1jax.rl).
  return model_token_logprobs(logits_stv, targets_st, temperature)


def token_entropy(
    logits_stv: jax.Array, mask_st: jax.Array, *, temperature: float = 1.0
) -> jax.Array:
  """Mean over valid tokens of the full next-token entropy H = -sum_v p_v log p_v, in float32.

  Args:
    logits_stv: [S, T, V] logits; -inf entries (masked vocabulary) are allowed.
    mask_st: bool[S, T] valid positions.
    temperature: > 0, applied to the logits first.

  Returns:
    f32[] mean entropy in nats (0 when no position is valid).
  """
  if _is_concrete_number(temperature) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  logp_stv = jax.nn.log_softmax(logits_stv.astype(jnp.float32) / temperature, axis=-1)
  p_stv = jnp.exp(logp_stv)
  # p * log p is 0 * -inf = NaN for -inf logits; the limit is 0.
  ent_st = -jnp.sum(p_stv * jnp.where(p_stv > 0, logp_stv, 0.0), axis=-1)
  return _masked_mean(ent_st, mask_st.astype(bool))
