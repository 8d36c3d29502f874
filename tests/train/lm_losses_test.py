"""Tests for r1jax.train.losses: LM cross-entropy and top-k distillation vs numpy references."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.train import losses


def np_log_softmax(z, axis=-1):
  z = np.asarray(z, np.float64)
  z = z - z.max(axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis, keepdims=True))


def test_lm_loss_matches_numpy():
  rng = np.random.default_rng(0)
  logits = (3 * rng.normal(size=(3, 5, 13))).astype(np.float32)
  targets = rng.integers(0, 13, size=(3, 5))
  mask = np.array([[1, 1, 1, 1, 0], [0, 0, 0, 0, 0], [1, 0, 1, 1, 1]], bool)
  targets[0, :2] = logits[0, :2].argmax(-1)  # a few guaranteed hits for accuracy.
  loss, m = jax.jit(losses.lm_loss)(logits, targets, mask)
  nll = -np.take_along_axis(np_log_softmax(logits), targets[..., None], -1)[..., 0]
  np.testing.assert_allclose(loss, nll[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["loss"], loss)
  np.testing.assert_allclose(m["accuracy"], (logits.argmax(-1) == targets)[mask].mean())
  np.testing.assert_allclose(m["num_tokens"], mask.sum())
  # Gradient: (softmax - onehot) / N on valid tokens, 0 elsewhere.
  g = jax.jit(jax.grad(lambda l: losses.lm_loss(l, targets, mask)[0]))(logits)
  want = (np.exp(np_log_softmax(logits)) - np.eye(13)[targets]) * mask[..., None] / mask.sum()
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)


def test_lm_loss_stable_and_empty():
  logits = jnp.asarray([[[1e4, 0.0, -1e4]]], jnp.bfloat16)
  lm_loss = jax.jit(losses.lm_loss)
  loss, _ = lm_loss(logits, np.array([[1]]), np.ones((1, 1), bool))
  np.testing.assert_allclose(loss, 1e4, rtol=1e-2)
  loss, m = lm_loss(np.zeros((2, 3, 4)), np.zeros((2, 3), int), np.zeros((2, 3), bool))
  assert float(loss) == 0.0 and float(m["num_tokens"]) == 0.0
  with pytest.raises(ValueError, match="shape"):
    losses.lm_loss(np.zeros((2, 3, 4)), np.zeros((2, 2), int), np.zeros((2, 3), bool))


def np_distill(student, t_lp, t_ids, mask, temp):
  """KL(q || p): q = teacher top-k renormalised at temperature, p = full student softmax."""
  log_q = np_log_softmax(np.asarray(t_lp, np.float64) / temp)
  q = np.exp(log_q)
  log_p = np.take_along_axis(np_log_softmax(np.asarray(student, np.float64) / temp), t_ids, -1)
  kl = np.where(q > 0, q * (log_q - log_p), 0.0).sum(-1)
  return kl[mask].mean()


@pytest.mark.parametrize("temp", [1.0, 2.0])
def test_distill_matches_numpy(temp):
  rng = np.random.default_rng(1)
  s, t, v, k = 2, 4, 9, 3
  student = rng.normal(size=(s, t, v)).astype(np.float32)
  teacher_logits = 2 * rng.normal(size=(s, t, v))
  t_ids = np.argsort(-teacher_logits, -1)[..., :k]
  t_lp = np.take_along_axis(np_log_softmax(teacher_logits), t_ids, -1).astype(np.float32)
  mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
  fn = jax.jit(functools.partial(losses.distill_loss, temperature=temp))
  loss, m = fn(student, t_lp, t_ids, mask)
  np.testing.assert_allclose(loss, np_distill(student, t_lp, t_ids, mask, temp), rtol=1e-5)
  # q from stored log-probs at temperature T == teacher softmax(logits / T) restricted to top-k.
  q_direct = np.take_along_axis(np.exp(np_log_softmax(teacher_logits / temp)), t_ids, -1)
  q_direct /= q_direct.sum(-1, keepdims=True)
  np.testing.assert_allclose(np.exp(np_log_softmax(t_lp / temp)), q_direct, rtol=1e-5)
  np.testing.assert_allclose(m["teacher_topk_mass"], np.exp(t_lp).sum(-1)[mask].mean(), rtol=1e-5)
  s_p = np.exp(np_log_softmax(student / temp))  # the student at the distillation temperature.
  np.testing.assert_allclose(m["student_topk_mass"],
                             np.take_along_axis(s_p, t_ids, -1).sum(-1)[mask].mean(), rtol=1e-5)
  np.testing.assert_allclose(m["top1_agreement"],
                             (student.argmax(-1) == t_ids[..., 0])[mask].mean())
  np.testing.assert_allclose(m["num_tokens"], mask.sum())


def test_distill_toy_hand_computed_and_padding():
  # V=4, teacher top-2 = ids (2, 0) with probs .6, .2 -> q = (.75, .25).
  t_lp = np.array([[[np.log(0.6), np.log(0.2), -np.inf]]], np.float32)  # third entry padded.
  t_ids = np.array([[[2, 0, 3]]])
  mask = np.ones((1, 1), bool)
  # Student uniform: p = .25 everywhere; KL = .75 log(.75/.25) + .25 log(.25/.25) = .75 log 3.
  distill_loss = jax.jit(losses.distill_loss)
  loss, _ = distill_loss(np.zeros((1, 1, 4), np.float32), t_lp, t_ids, mask)
  np.testing.assert_allclose(loss, 0.75 * np.log(3.0), rtol=1e-6)
  # Student equal to q on the support and ~0 elsewhere: KL ~ 0.
  student = np.log(np.array([[[0.25, 1e-12, 0.75, 1e-12]]], np.float32))
  loss, _ = distill_loss(student, t_lp, t_ids, mask)
  np.testing.assert_allclose(loss, 0.0, atol=1e-6)
  grad_fn = jax.jit(jax.grad(lambda x: losses.distill_loss(x, t_lp, t_ids, mask)[0]))
  g = grad_fn(jnp.zeros((1, 1, 4)))
  assert np.all(np.isfinite(g))
  # Gradient of KL(q||softmax(x)) w.r.t. x is softmax(x) - q (q zero off-support).
  np.testing.assert_allclose(g[0, 0], [0.25 - 0.25, 0.25, 0.25 - 0.75, 0.25], atol=1e-6)
  with pytest.raises(ValueError, match="temperature"):
    losses.distill_loss(student, t_lp, t_ids, mask, temperature=0.0)
