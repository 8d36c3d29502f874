"""LM/SFT step: padding is ignored, packed examples never see each other, the update trains."""
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model import ModelConfig, init_variables
from r1jax.train import LMConfig, OptimConfig, create_train_state, lm_objective, make_lm_update, make_optimizer

CFG = ModelConfig.preset("tiny")
LM = LMConfig(router_bias_rate=1e-3, balance_loss_coef=0.0)


def _example(seed, n):
  return np.random.default_rng(seed).integers(1, 64, size=n).astype(np.int32)


def _packed(docs, t):
  tokens, targets, mask, seg, pos = (np.zeros((1, t), np.int32) for _ in range(5))
  at = 0
  for s, d in enumerate(docs, 1):
    n = len(d)
    tokens[0, at:at + n - 1], targets[0, at:at + n - 1] = d[:-1], d[1:]
    mask[0, at:at + n - 1], seg[0, at:at + n - 1], pos[0, at:at + n - 1] = 1, s, np.arange(n - 1)
    at += n - 1
  return {k: jnp.asarray(v) for k, v in dict(tokens=tokens, targets=targets, loss_mask=mask, segment_ids=seg,
                                               positions=pos).items()}


def test_packed_loss_equals_separate_losses_and_ignores_padding():
  variables = init_variables(CFG, jax.random.key(0))
  loss_fn = jax.jit(lm_objective(CFG, LM))
  a, b = _example(1, 7), _example(2, 9)
  packed = _packed([a, b], 20)
  la, lb = (float(loss_fn(variables, _packed([d], len(d) - 1))[0]) for d in (a, b))
  lp = float(loss_fn(variables, packed)[0])
  np.testing.assert_allclose(lp, (la * 6 + lb * 8) / 14, rtol=1e-5)   # token-weighted mean over 6 + 8 targets
  noisy = dict(packed, tokens=packed["tokens"].at[0, 14:].set(5), targets=packed["targets"].at[0, 14:].set(9))
  np.testing.assert_allclose(float(loss_fn(variables, noisy)[0]), lp, rtol=1e-6)  # padding changes nothing


def test_lm_update_reduces_loss_on_a_fixed_batch():
  tx = make_optimizer(OptimConfig(learning_rate=3e-3, total_steps=20))
  state = create_train_state(init_variables(CFG, jax.random.key(0)), tx)
  batch = _packed([_example(3, 12), _example(4, 12)], 24)
  update = make_lm_update(CFG, LM, tx)
  losses = []
  for _ in range(15):
    state, m = update(state, batch)
    losses.append(float(m["loss"]))
  assert losses[-1] < 0.7 * losses[0]
  assert "expert_maxvio_mean" in m
