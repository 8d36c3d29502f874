"""Tests for r1jax.rl.losses: numpy references, closed-form gradients, hand-built clip cases."""
import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.rl import losses

S, T = 6, 7
MAX_LEN = 10


def _inputs(seed=0):
  """Random log-probs with padding (garbage values there), including an all-masked row."""
  rng = np.random.default_rng(seed)
  logp = -rng.uniform(0.05, 3.0, size=(S, T))
  old = logp + 0.3 * rng.normal(size=(S, T))  # ratios roughly in [0.4, 2.5]: both clips fire.
  ref = logp + 0.5 * rng.normal(size=(S, T))
  lengths = np.array([7, 5, 0, 3, 1, 6])
  mask = np.arange(T)[None, :] < lengths[:, None]
  adv = rng.normal(size=S)
  adv[4] = 0.0
  # Padding holds garbage; a finite one here so the numpy reference stays warning-free.
  logp, old, ref = (np.where(mask, x, 37.0) for x in (logp, old, ref))
  return tuple(x.astype(np.float32) for x in (logp, old, ref, adv)) + (mask,)


def np_grpo_loss(logp, old, ref, adv, mask, *, el, eh, beta, est, agg, level, max_len=None,
                 c=None):
  """Independent float64 reference of grpo_loss; returns (loss, pg, kl, ratio)."""
  logp, old, ref, adv = (np.asarray(x, np.float64) for x in (logp, old, ref, adv))
  m = mask.astype(bool)
  n = m.sum(1)
  if level == "token":
    ratio = np.exp(np.where(m, logp - old, 0.0))
  else:
    seq = np.array([(logp[i, m[i]] - old[i, m[i]]).mean() if n[i] else 0.0 for i in range(S)])
    ratio = np.repeat(np.exp(seq)[:, None], T, axis=1)
  a = adv[:, None]
  surr = np.minimum(ratio * a, np.clip(ratio, 1 - el, 1 + eh) * a)
  if c is not None:
    surr = np.where(a < 0, np.maximum(surr, c * a), surr)
  lr = np.where(m, ref - logp, 0.0)
  kl = {"k1": -lr, "k2": 0.5 * lr**2, "k3": np.exp(lr) - lr - 1}[est]

  def agg_fn(x):
    x = np.where(m, x, 0.0)
    if agg == "token_mean":
      return x.sum() / max(m.sum(), 1)
    if agg == "seq_mean_token_mean":
      return np.mean([x[i].sum() / n[i] if n[i] else 0.0 for i in range(S)])
    return np.mean(x.sum(1) / max_len)

  pg, klv = agg_fn(-surr), agg_fn(kl)
  return pg + beta * klv, pg, klv, ratio


AGGS = list(losses.AGGREGATIONS)
# Each XLA compile of grpo_loss costs ~1 s on CPU, so the full matrix runs eagerly and these
# cases, which cover every aggregation, estimator and ratio level, also run under jit.
JIT_CASES = {("seq_mean_token_mean", "k3", "token"), ("token_mean", "k1", "sequence"),
             ("seq_mean_token_sum_norm", "k2", "token")}


@pytest.mark.parametrize("agg,est,level",
                         list(itertools.product(AGGS, ["k1", "k2", "k3"], ["token", "sequence"])))
def test_matches_numpy_reference(agg, est, level):
  logp, old, ref, adv, mask = _inputs()
  kw = dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.1, kl_estimator=est, aggregation=agg,
            ratio_level=level, max_len=MAX_LEN)
  fn = functools.partial(losses.grpo_loss, **kw)
  if (agg, est, level) in JIT_CASES:
    fn = jax.jit(fn)
  loss, metrics = fn(logp, old, ref, adv, mask)
  want, pg, kl, ratio = np_grpo_loss(logp, old, ref, adv, mask, el=0.2, eh=0.28, beta=0.1,
                                     est=est, agg=agg, level=level, max_len=MAX_LEN)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["pg_loss"], pg, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(metrics["loss"], metrics["pg_loss"] + 0.1 * metrics["kl"], rtol=1e-6)
  m = mask
  np.testing.assert_allclose(metrics["ratio_mean"], ratio[m].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["ratio_min"], ratio[m].min(), rtol=1e-5)
  np.testing.assert_allclose(metrics["ratio_max"], ratio[m].max(), rtol=1e-5)
  np.testing.assert_allclose(metrics["entropy_proxy"], -logp[m].mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["ppo_kl"], (old - logp)[m].mean(), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(metrics["num_tokens"], m.sum())
  np.testing.assert_allclose(metrics["adv_mean"], adv.mean(), rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(metrics["adv_std"], adv.std(), rtol=1e-5)
  a = np.broadcast_to(adv[:, None], m.shape)
  np.testing.assert_allclose(metrics["clip_frac_low"], ((ratio < 0.8) & (a < 0))[m].mean())
  np.testing.assert_allclose(metrics["clip_frac_high"], ((ratio > 1.28) & (a > 0))[m].mean())


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_dual_clip_matches_numpy(level):
  logp, old, ref, adv, mask = _inputs(seed=3)
  old = old - 0.8 * mask  # push ratios up so the dual clip (ratio > c) fires for A < 0.
  loss, metrics = losses.grpo_loss(logp, old, ref, adv, mask, beta=0.0, ratio_level=level,
                                   clip_ratio_c=1.5)
  want, _, _, ratio = np_grpo_loss(logp, old, ref, adv, mask, el=0.2, eh=0.2, beta=0.0, est="k3",
                                   agg="seq_mean_token_mean", level=level, c=1.5)
  np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
  a = np.broadcast_to(adv[:, None], mask.shape)
  dual = ((ratio > 1.5) & (a < 0))[mask].mean()
  assert dual > 0
  np.testing.assert_allclose(metrics["clip_frac_dual"], dual)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("agg", AGGS)
def test_gradient_at_ratio_one_is_policy_gradient(agg, level):
  # logp == old_logp and beta == 0: the clip is inactive and dL/dlogp_{i,t} = -A_i m_{i,t} / Z_i
  # with Z_i = n_i S (GRPO), N_total (DAPO) or max_len S (Dr.GRPO).
  logp, _, _, adv, mask = _inputs(seed=1)
  logp = np.where(mask, logp, 0.0).astype(np.float32)
  grad_fn = jax.grad(lambda lp: losses.grpo_loss(
      lp, lp, None, adv, mask, beta=0.0, aggregation=agg, ratio_level=level,
      max_len=MAX_LEN)[0])
  if (agg, level) == ("seq_mean_token_mean", "token"):
    grad_fn = jax.jit(grad_fn)
  n = mask.sum(1, keepdims=True)
  z = {"seq_mean_token_mean": np.maximum(n, 1) * S, "token_mean": mask.sum(),
       "seq_mean_token_sum_norm": MAX_LEN * S}[agg]
  want = -adv[:, None] * mask / z
  np.testing.assert_allclose(grad_fn(logp), want, rtol=1e-5, atol=1e-7)
  assert np.all(np.asarray(grad_fn(logp))[2] == 0)  # the all-masked row.


def test_gspo_token_form_matches_sequence_objective():
  # GSPO eq.: J = mean_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp - old)).  The
  # GSPO-token form must give the same value and gradient at ratios != 1, clipped or not.
  logp, old, _, adv, mask = _inputs(seed=2)
  m = jnp.asarray(mask, jnp.float32)

  def direct(lp):
    lp = jnp.where(mask, lp, 0.0)
    s = jnp.exp(((lp - jnp.where(mask, old, 0.0)) * m).sum(1) / jnp.maximum(m.sum(1), 1))
    # A row without valid tokens contributes 0 (but counts in S), as in the token form.
    return -jnp.mean((m.sum(1) > 0) * jnp.minimum(s * adv, jnp.clip(s, 0.8, 1.2) * adv))

  ours = lambda lp: losses.grpo_loss(lp, old, None, adv, mask, beta=0.0, ratio_level="sequence")[0]
  np.testing.assert_allclose(ours(logp), direct(logp), rtol=1e-5)
  grads = jax.jit(lambda lp: (jax.grad(ours)(lp), jax.grad(direct)(lp)))(logp)
  np.testing.assert_allclose(*grads, rtol=1e-5, atol=1e-7)
  s = np.exp([(lp[m_i] - o[m_i]).mean() if m_i.any() else 0 for lp, o, m_i in zip(logp, old, mask)])
  assert np.any(np.abs(s - 1) > 0.2), "test inputs should exercise the sequence clip"


def test_clip_fractions_hand_built():
  # Row 0, A=+1: ratios 1.5 (high clip), 1.1 (none), 0.5 (none: low clip only counts for A<0).
  # Row 1, A=-1: ratios 0.5 (low clip), 1.5 (none; dual-clip with c=1.4), 0.9 (masked).
  ratio = np.array([[1.5, 1.1, 0.5], [0.5, 1.5, 0.9]])
  old = np.zeros((2, 3), np.float32)
  logp = np.log(ratio).astype(np.float32)
  adv = np.array([1.0, -1.0], np.float32)
  mask = np.array([[1, 1, 1], [1, 1, 0]], bool)
  _, m = losses.grpo_loss(logp, old, None, adv, mask, beta=0.0)
  np.testing.assert_allclose([m["clip_frac_low"], m["clip_frac_high"], m["clip_frac"]],
                             [0.2, 0.2, 0.4], rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_dual"], 0.0)
  # Surrogates: row 0: min(1.5,1.2)=1.2, 1.1, min(.5,.8)=.5; row 1: min(-.5,-.8)=-.8, -1.5.
  _, m = losses.grpo_loss(logp, old, None, adv, mask, beta=0.0, aggregation="token_mean")
  np.testing.assert_allclose(m["pg_loss"], -(1.2 + 1.1 + 0.5 - 0.8 - 1.5) / 5, rtol=1e-6)
  # Dual clip c=1.4 bounds row 1's second token at c*A = -1.4.
  _, m = losses.grpo_loss(logp, old, None, adv, mask, beta=0.0, aggregation="token_mean",
                          clip_ratio_c=1.4)
  np.testing.assert_allclose(m["pg_loss"], -(1.2 + 1.1 + 0.5 - 0.8 - 1.4) / 5, rtol=1e-6)
  np.testing.assert_allclose(m["clip_frac_dual"], 0.2, rtol=1e-6)
  # Clip-higher (DAPO): epsilon_high=0.6 releases the 1.5 token.
  _, m = losses.grpo_loss(logp, old, None, adv, mask, beta=0.0, epsilon_high=0.6)
  np.testing.assert_allclose([m["clip_frac_low"], m["clip_frac_high"]], [0.2, 0.0], rtol=1e-6)


def test_kl_estimators_hand_computed():
  # pi = 0.5, pi_ref = 0.25: log_r = log(0.5) = -0.693147.
  logp = np.full((1, 1), np.log(0.5), np.float32)
  ref = np.full((1, 1), np.log(0.25), np.float32)
  want = {"k1": np.log(2.0), "k2": 0.5 * np.log(2.0) ** 2, "k3": 0.5 + np.log(0.5) * -1 - 1}
  np.testing.assert_allclose(want["k3"], 0.19314718, rtol=1e-6)
  for est, val in want.items():
    np.testing.assert_allclose(losses.kl_penalty(logp, ref, est), [[val]], rtol=1e-5)
    # Through the loss: A = 0 and ratio 1, so loss = beta * KL.
    loss, m = losses.grpo_loss(logp, logp, ref, np.zeros(1, np.float32), np.ones((1, 1), bool),
                               beta=0.5, kl_estimator=est)
    np.testing.assert_allclose([loss, m["kl"], m["pg_loss"]], [0.5 * val, val, 0.0], rtol=1e-5,
                               atol=1e-7)
  # k3 and k2 vanish and are non-negative; k3's gradient at pi == pi_ref is 0.
  g = jax.grad(lambda lp: losses.kl_penalty(lp, ref, "k3").sum())(ref)
  np.testing.assert_allclose(g, 0.0, atol=1e-7)


def test_padding_garbage_and_empty_batch_are_finite():
  logp, old, ref, adv, mask = _inputs()
  bad = lambda x, v: np.where(mask, x, v).astype(np.float32)
  logp_b, old_b, ref_b = bad(logp, np.nan), bad(old, -np.inf), bad(ref, np.inf)
  for level in ("token", "sequence"):
    for agg in AGGS:
      fn = lambda lp: losses.grpo_loss(lp, old_b, ref_b, adv, mask, aggregation=agg,
                                       ratio_level=level, max_len=MAX_LEN)
      (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp_b)
      ref_loss = fn(logp)[0]
      np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
      assert np.all(np.isfinite(grad)) and all(np.isfinite(v) for v in metrics.values())
      assert np.all(np.asarray(grad)[~mask] == 0)
  # No valid token at all: loss 0, ratio stats 1, no NaN.
  empty = np.zeros_like(mask)
  loss, m = losses.grpo_loss(logp_b, old_b, ref_b, adv, empty)
  assert float(loss) == 0.0 and all(np.isfinite(v) for v in m.values())
  np.testing.assert_allclose([m["ratio_min"], m["ratio_max"], m["ratio_mean"]], 1.0)


def test_argument_errors():
  logp, old, ref, adv, mask = _inputs()
  call = functools.partial(losses.grpo_loss, logp, old, ref, adv, mask)
  with pytest.raises(ValueError, match="epsilon_low"):
    call(epsilon_low=-0.1)
  with pytest.raises(ValueError, match="k1"):
    call(kl_estimator="k4")
  with pytest.raises(ValueError, match="token_mean"):
    call(aggregation="sum")
  with pytest.raises(ValueError, match="token"):
    call(ratio_level="segment")
  with pytest.raises(ValueError, match="max_len"):
    call(aggregation="seq_mean_token_sum_norm")
  with pytest.raises(ValueError, match="clip_ratio_c"):
    call(clip_ratio_c=1.0)
  with pytest.raises(ValueError, match="ref_logp"):
    losses.grpo_loss(logp, old, None, adv, mask, beta=0.04)
  with pytest.raises(ValueError, match="shape"):
    losses.grpo_loss(logp, old[:, :3], ref, adv, mask)
  with pytest.raises(ValueError, match="advantages"):
    losses.grpo_loss(logp, old, ref, adv[:3], mask)
  with pytest.raises(ValueError, match="valid"):
    losses.aggregate_loss(logp, mask, "mean")
  loss, m = losses.grpo_loss(logp, old, None, adv, mask, beta=0.0)  # beta=0 needs no ref.
  assert float(m["kl"]) == 0.0 and np.isfinite(loss)


def test_token_logprobs_matches_numpy_and_is_stable():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 4, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, size=(3, 4))
  for temp in (1.0, 0.7):
    z = logits.astype(np.float64) / temp
    z = z - z.max(-1, keepdims=True)
    want = np.take_along_axis(z - np.log(np.exp(z).sum(-1, keepdims=True)), targets[..., None],
                              -1)[..., 0]
    got = jax.jit(functools.partial(losses.token_logprobs, temperature=temp))(logits, targets)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # Large logits and bf16 inputs stay finite and upcast.
  big = jax.jit(losses.token_logprobs)(jnp.asarray(logits * 1e4, jnp.bfloat16), targets)
  assert big.dtype == jnp.float32 and np.all(np.isfinite(big)) and np.all(np.asarray(big) <= 0)
  with pytest.raises(ValueError, match="temperature"):
    losses.token_logprobs(logits, targets, temperature=0.0)


def test_token_entropy():
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(2, 3, 5)).astype(np.float32)
  logits[0, 0, :2] = -np.inf  # masked vocabulary entries.
  mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ent = -(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)).sum(-1)
  entropy_and_grad = jax.jit(jax.value_and_grad(losses.token_entropy))
  ent_jax, g = entropy_and_grad(jnp.asarray(logits), mask)
  np.testing.assert_allclose(ent_jax, ent[mask].mean(), rtol=1e-5)
  assert np.all(np.isfinite(g))
  # Uniform over V has entropy log V.
  np.testing.assert_allclose(entropy_and_grad(jnp.zeros((2, 3, 5)), mask)[0], np.log(5),
                             rtol=1e-6)


# ------------------------------------------------------------------------------------------ newer policy losses
def _np_new_losses(logp, old, ref, adv, mask, *, el, eh, policy, tau_pos=1.0, tau_neg=1.05):
  """float64 references of the per-token losses and their gradients d loss_tok / d logp (closed form):
  (loss_tok[S, T], grad_tok[S, T]); for GMPO the per-sequence loss broadcast and its gradient per token."""
  logp, old, adv = (np.asarray(x, np.float64) for x in (logp, old, adv))
  m = mask.astype(bool)
  x = np.where(m, logp - old, 0.0)
  r = np.exp(x)
  a = adv[:, None]
  if policy == "cispo":
    w = np.clip(r, 1 - el, 1 + eh)
    return -w * a * np.where(m, logp, 0.0), -w * a * np.ones_like(r)
  if policy == "sapo":
    tau = np.where(a > 0, tau_pos, tau_neg)
    sig = 1 / (1 + np.exp(-tau * (r - 1)))
    return -(4 / tau) * sig * a, -4 * sig * (1 - sig) * r * a
  # gmpo: for A > 0 min(x, clip(x)), for A < 0 max(x, clip(x)); the gradient flows where x itself is chosen
  c = np.clip(x, -el, eh)
  chosen = np.where(a >= 0, np.minimum(x, c), np.maximum(x, c))
  passes = np.where(a >= 0, x <= c, x >= c) & m
  n = np.maximum(m.sum(1), 1)
  rho = np.exp(np.where(m, chosen, 0.0).sum(1) / n)
  loss_s = -adv * rho
  return np.repeat(loss_s[:, None], T, 1), np.where(passes, (-adv * rho / n)[:, None], 0.0)


@pytest.mark.parametrize("policy,agg", [("cispo", "token_mean"), ("sapo", "token_mean"),
                                        ("sapo", "seq_mean_token_mean"), ("gmpo", "seq_mean_token_mean")])
def test_new_policy_losses_match_numpy_values_and_gradients(policy, agg):
  logp, old, ref, adv, mask = _inputs(3)
  el, eh = (0.2, 0.28) if policy != "gmpo" else (0.4, 0.4)
  loss_fn = lambda lp: losses.grpo_loss(lp, old, None, adv, mask, epsilon_low=el, epsilon_high=eh, beta=0.0,
                                        aggregation=agg, policy_loss=policy)[0]
  loss, grad = jax.value_and_grad(loss_fn)(jnp.asarray(logp))
  tok, dtok = _np_new_losses(logp, old, ref, adv, mask, el=el, eh=eh, policy=policy)
  m = mask.astype(bool)
  n = m.sum(1)
  if agg == "token_mean":
    want, wgrad = np.where(m, tok, 0).sum() / m.sum(), np.where(m, dtok, 0) / m.sum()
  elif policy == "gmpo":          # one loss per sequence: the mean over the S sequences (rows without tokens: 0)
    want = np.mean([tok[i, 0] if n[i] else 0.0 for i in range(S)])
    wgrad = np.where(m, dtok, 0) / S
  else:
    want = np.mean([np.where(m[i], tok[i], 0).sum() / n[i] if n[i] else 0.0 for i in range(S)])
    wgrad = np.where(m, dtok / np.maximum(n, 1)[:, None], 0) / S
  np.testing.assert_allclose(float(loss), want, rtol=2e-5, atol=1e-6)
  np.testing.assert_allclose(np.asarray(grad), wgrad, rtol=2e-4, atol=1e-6)
  if policy == "gmpo":   # the inputs clip some tokens: the test sees both branches
    x = np.where(m, logp - old, 0.0)
    assert ((np.abs(x) > 0.4) & m).any() and ((np.abs(x) < 0.4) & m).any()


def test_sapo_and_cispo_at_ratio_one_give_the_policy_gradient():
  """At ratio 1 SAPO's gate has slope 1 and CISPO's weight is 1: both gradients equal -A / N per token."""
  logp, _, _, adv, mask = _inputs(4)
  m = mask.astype(bool)
  for policy in ("sapo", "cispo"):
    g = jax.grad(lambda lp: losses.grpo_loss(lp, jnp.asarray(logp), None, adv, mask, beta=0.0, aggregation="token_mean",
                                             policy_loss=policy)[0])(jnp.asarray(logp))
    np.testing.assert_allclose(np.asarray(g), np.where(m, -adv[:, None] / m.sum(), 0), rtol=1e-5, atol=1e-7)


def test_unbiased_kl_is_k3_times_the_ratio_with_the_exact_kl_gradient():
  """kl_estimator="k3_unbiased": value ratio * k3 per token; gradient ratio * (logp - ref_logp), which under
  samples from pi_old is the gradient of KL(pi_theta || pi_ref)."""
  logp, old, ref, adv, mask = _inputs(5)
  m = mask.astype(bool)
  kl_fn = lambda lp: losses.grpo_loss(lp, old, ref, adv, mask, beta=1.0, kl_estimator="k3_unbiased",
                                      aggregation="token_mean")[1]["kl"]
  f64 = lambda x: np.asarray(x, np.float64)
  r = np.exp(np.where(m, f64(logp) - f64(old), 0))
  d = np.where(m, f64(ref) - f64(logp), 0)
  np.testing.assert_allclose(float(kl_fn(jnp.asarray(logp))), np.where(m, r * (np.exp(d) - d - 1), 0).sum() / m.sum(),
                             rtol=2e-5)
  # the gradient of the loss's KL part (beta = 1, no policy term: A = 0)
  g = jax.grad(lambda lp: losses.grpo_loss(lp, old, ref, np.zeros_like(adv), mask, beta=1.0,
                                           kl_estimator="k3_unbiased", aggregation="token_mean")[0])(jnp.asarray(logp))
  np.testing.assert_allclose(np.asarray(g), np.where(m, r * -d, 0) / m.sum(), rtol=2e-4, atol=1e-7)


def test_new_policy_loss_arguments_are_checked():
  logp, old, ref, adv, mask = _inputs(0)
  with pytest.raises(ValueError, match="Unknown policy_loss 'ppo2'"):
    losses.grpo_loss(logp, old, ref, adv, mask, policy_loss="ppo2")
  with pytest.raises(ValueError, match="policy_loss='gmpo' takes token ratios"):
    losses.grpo_loss(logp, old, ref, adv, mask, policy_loss="gmpo", ratio_level="sequence")
  with pytest.raises(ValueError, match="sapo_tau_neg must be > 0"):
    losses.grpo_loss(logp, old, ref, adv, mask, policy_loss="sapo", sapo_tau_neg=0.0)
  from r1jax.rl import GRPOConfig
  with pytest.raises(ValueError, match="GRPOConfig.policy_loss='cispo': takes token ratios"):
    GRPOConfig(policy_loss="cispo", clip_ratio_c=3.0)
  with pytest.raises(ValueError, match="GRPOConfig.kl_estimator='k4'"):
    GRPOConfig(kl_estimator="k4")
  assert GRPOConfig(policy_loss="sapo", kl_estimator="k3_unbiased").policy_loss == "sapo"


# ------------------------------------------------------------------------------------------ rollout IS correction
@pytest.mark.parametrize("mode", ["token_tis", "sequence_tis", "token_mis", "sequence_mis"])
def test_rollout_correction_matches_numpy(mode):
  logp, old, _, _, mask = _inputs(6)
  behav = old - 0.4 * np.random.default_rng(1).normal(size=old.shape).astype(np.float32)   # some ratios past 2
  cap = 1.5
  w, met = losses.rollout_correction(jnp.asarray(old), jnp.asarray(behav), mask, mode=mode, cap=cap)
  m = mask.astype(bool)
  d = np.where(m, np.float64(old) - np.float64(behav), 0.0)
  log_rho = d if mode.startswith("token") else np.repeat(d.sum(1, keepdims=True), T, 1)
  rho = np.exp(log_rho)
  if mode.endswith("tis"):
    want, clipped = np.minimum(rho, cap), rho > cap
  else:
    clipped = (rho > cap) | (rho < 1 / cap)
    want = np.where(clipped, 0.0, rho)
  want = np.where(m, want, 0.0)
  np.testing.assert_allclose(np.asarray(w), want, rtol=2e-5, atol=1e-7)
  assert 0 < (clipped & m).sum() < m.sum()                       # both branches are exercised
  np.testing.assert_allclose(float(met["is_clipped_frac"]), (clipped & m).sum() / m.sum(), rtol=1e-6)
  np.testing.assert_allclose(float(met["mismatch_abs_mean"]), np.abs(d)[m].mean(), rtol=1e-5)
  np.testing.assert_allclose(float(met["mismatch_abs_max"]), np.abs(d)[m].max(), rtol=1e-5)
  np.testing.assert_allclose(float(met["mismatch_kl"]), (np.expm1(d) - d)[m].mean(), rtol=1e-4)
  np.testing.assert_allclose(float(met["is_weight_mean"]), want[m].mean(), rtol=1e-5)


def test_is_weights_scale_the_policy_term_only():
  logp, old, ref, adv, mask = _inputs(7)
  w = np.random.default_rng(2).uniform(0, 2, size=logp.shape).astype(np.float32)
  kw = dict(beta=0.1, aggregation="token_mean", epsilon_low=0.2, epsilon_high=0.28)
  _, plain = losses.grpo_loss(logp, old, ref, adv, mask, **kw)
  loss, weighted = losses.grpo_loss(logp, old, ref, adv, mask, is_weights_st=w, **kw)
  m = mask.astype(bool)
  r = np.exp(np.where(m, np.float64(logp) - old, 0))
  a = np.float64(adv)[:, None]
  pg_tok = -np.minimum(r * a, np.clip(r, 0.8, 1.28) * a)
  np.testing.assert_allclose(float(weighted["pg_loss"]), (w * pg_tok)[m].sum() / m.sum(), rtol=2e-5, atol=1e-7)
  np.testing.assert_allclose(float(weighted["kl"]), float(plain["kl"]), rtol=1e-6)
  np.testing.assert_allclose(float(loss), float(weighted["pg_loss"]) + 0.1 * float(weighted["kl"]), rtol=1e-5)
  with pytest.raises(ValueError, match="rollout_correction mode 'off'"):
    losses.rollout_correction(old, old, mask, mode="off")
  with pytest.raises(ValueError, match="cap must be > 1"):
    losses.rollout_correction(old, old, mask, mode="token_tis", cap=1.0)


def test_logp_diff_metrics_match_numpy():
  logp, old, ref, adv, mask = _inputs(8)
  _, met = losses.grpo_loss(logp, old, ref, adv, mask, beta=0.04)
  m = mask.astype(bool)
  d = (np.float64(logp) - old)[m]
  np.testing.assert_allclose(float(met["logp_diff_abs_mean"]), np.abs(d).mean(), rtol=1e-5)
  np.testing.assert_allclose(float(met["logp_diff_abs_max"]), np.abs(d).max(), rtol=1e-5)
  np.testing.assert_allclose(float(met["logp_diff_kl"]), (np.expm1(d) - d).mean(), rtol=1e-4)
