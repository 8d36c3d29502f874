"""Supervised losses: next-token cross-entropy (pretraining, SFT) and top-k logit distillation.

Pure functions of arrays, float32 inside whatever the logits' dtype. Shapes: S sequences, T time steps, V vocab, K teacher top-k entries.
"""
import jax
import jax.numpy as jnp


def _masked_mean(x_st: jax.Array, valid_st: jax.Array) -> jax.Array:
  return jnp.where(valid_st, x_st, 0.0).sum() / jnp.maximum(valid_st.sum(), 1)


def lm_loss(
    logits_stv: jax.Array, targets_st: jax.Array, loss_mask_st: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Next-token cross-entropy averaged over the masked-in tokens.

  The caller aligns targets with logits (targets_st[:, t] is the token that follows position t);
  for SFT the mask keeps only completion tokens. nll = logsumexp(logits) - logits[target],
  which is stable for any logit scale and never materialises a [S, T, V] log_softmax.

  Args:
    logits_stv: [S, T, V] logits, any float dtype.
    targets_st: i32[S, T] target token ids.
    loss_mask_st: bool[S, T] (or {0, 1}) tokens that count.

  Returns:
    (loss, metrics): loss f32[] mean NLL over valid tokens (0 if none); metrics has f32[]
    loss, accuracy (argmax == target, ties resolved to the lowest id) and num_tokens.
  """
  if logits_stv.shape[:-1] != targets_st.shape or targets_st.shape != loss_mask_st.shape:
    raise ValueError(f"shape mismatch: logits {logits_stv.shape}, targets {targets_st.shape}, "
                     f"mask {loss_mask_st.shape}.")
  valid_st = loss_mask_st.astype(bool)
  logits_stv = logits_stv.astype(jnp.float32)
  picked_st = jnp.take_along_axis(logits_stv, targets_st[..., None].astype(jnp.int32), axis=-1)
  nll_st = jax.nn.logsumexp(logits_stv, axis=-1) - picked_st[..., 0]
  loss = _masked_mean(nll_st, valid_st)
  correct_st = (jnp.argmax(logits_stv, axis=-1) == targets_st).astype(jnp.float32)
  metrics = {
      "loss": jax.lax.stop_gradient(loss),
      "accuracy": _masked_mean(correct_st, valid_st),
      "num_tokens": valid_st.sum().astype(jnp.float32),
  }
  return loss, metrics


def distill_loss(
    student_logits_stv: jax.Array,
    teacher_topk_logprobs_stk: jax.Array,
    teacher_topk_ids_stk: jax.Array,
    mask_st: jax.Array,
    *,
    temperature: float = 1.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Token-level forward KL from the teacher's renormalised top-k distribution to the student.

  Definition. For each position, with the teacher's K stored log-probs l_k at ids v_k:
    q_k = softmax_k(l_k / temperature)                     (teacher on its top-k, renormalised)
    log p_v = log_softmax(student_logits / temperature)_v  (student over the FULL vocabulary)
    KL_t = sum_k q_k (log q_k - log p_{v_k})
  and the loss is the mean of KL_t over valid positions. Since l_k = teacher_logit - const,
  q equals softmax(teacher_logits / temperature) restricted to the top-k ids and renormalised,
  so storing log-probs instead of logits loses nothing. q is a proper distribution supported on
  the K ids, so KL_t is the exact KL(q || p) >= 0; it is 0 only if the student puts exactly q on
  those ids and nothing elsewhere (the student is not renormalised: mass off the teacher's
  support is penalised through log p). Gradient-wise this equals cross-entropy against the soft
  targets q (the teacher-entropy term is constant). No temperature**2 factor (Hinton et al.
  2015) is applied; fold it into the loss weight if wanted.

  Entries with l_k = -inf (padding when fewer than K ids were kept) get q_k = 0 and drop out;
  their ids must still be valid indices in [0, V).

  Args:
    student_logits_stv: [S, T, V] student logits, any float dtype.
    teacher_topk_logprobs_stk: f32[S, T, K] teacher log-probs of its top-k tokens.
    teacher_topk_ids_stk: i32[S, T, K] the corresponding token ids.
    mask_st: bool[S, T] positions that count.
    temperature: > 0, applied to both teacher and student.

  Returns:
    (loss, metrics): loss f32[]; metrics f32[] scalars: loss, num_tokens, teacher_topk_mass
    (mean sum_k exp(l_k) of the stored log-probs: how much teacher mass the top-k kept),
    student_topk_mass (mean student probability, at `temperature`, on the teacher's ids) and
    top1_agreement (student argmax == teacher's top id).
  """
  if isinstance(temperature, (int, float)) and temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}.")
  if teacher_topk_logprobs_stk.shape != teacher_topk_ids_stk.shape:
    raise ValueError(f"teacher log-probs {teacher_topk_logprobs_stk.shape} and ids "
                     f"{teacher_topk_ids_stk.shape} must have the same shape.")
  if (student_logits_stv.shape[:-1] != mask_st.shape
      or teacher_topk_ids_stk.shape[:-1] != mask_st.shape):
    raise ValueError(f"shape mismatch: student {student_logits_stv.shape}, teacher "
                     f"{teacher_topk_ids_stk.shape}, mask {mask_st.shape}.")
  valid_st = mask_st.astype(bool)
  ids_stk = teacher_topk_ids_stk.astype(jnp.int32)
  t_logp_stk = jax.lax.stop_gradient(teacher_topk_logprobs_stk.astype(jnp.float32))

  log_q_stk = jax.nn.log_softmax(t_logp_stk / temperature, axis=-1)
  q_stk = jnp.exp(log_q_stk)
  s_logp_stv = jax.nn.log_softmax(student_logits_stv.astype(jnp.float32) / temperature, axis=-1)
  s_logp_stk = jnp.take_along_axis(s_logp_stv, ids_stk, axis=-1)
  # q * (log q - log p) with q = 0 is 0; where() keeps -inf - x from turning it into NaN.
  kl_st = jnp.sum(jnp.where(q_stk > 0, q_stk * (log_q_stk - s_logp_stk), 0.0), axis=-1)
  loss = _masked_mean(kl_st, valid_st)

  s_logp_sg = jax.lax.stop_gradient(s_logp_stk)
  top_k_st = jnp.argmax(t_logp_stk, axis=-1)
  teacher_top_st = jnp.take_along_axis(ids_stk, top_k_st[..., None], axis=-1)[..., 0]
  agree_st = (jnp.argmax(student_logits_stv, axis=-1) == teacher_top_st).astype(jnp.float32)
  metrics = {
      "loss": jax.lax.stop_gradient(loss),
      "num_tokens": valid_st.sum().astype(jnp.float32),
      "teacher_topk_mass": _masked_mean(jnp.exp(t_logp_stk).sum(-1), valid_st),
      "student_topk_mass": _masked_mean(jnp.exp(s_logp_sg).sum(-1), valid_st),
      "top1_agreement": _masked_mean(agree_st, valid_st),
  }
  return loss, metrics


def add_balance_loss(loss: jax.Array, metrics: dict, aux, coef: float):
  """(loss + coef * the MoE layers' sequence-wise balance loss, metrics with it) when coef > 0 and the model
  reports one in `aux` (DeepSeek-V3's complementary balance loss; alpha = 1e-4 there); else unchanged."""
  if not coef or not aux:
    return loss, metrics
  balance = aux["balance_loss"].sum()
  return loss + coef * balance, {**metrics, "balance_loss": balance}
