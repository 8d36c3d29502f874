"""The GRPO update computes the group advantages itself, inside the jitted step, where the rewards lie.

Against numpy advantages fed to the same update: on one device, with a prompt's G samples on one device
({data: 2, expert: 4}: 4 rows per device = one group), and with a group split across devices along data
({data: 8}: 1 row per device, a group on 4 devices); and with shuffled minibatches, which must use the
advantages of the whole rollout.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.model import ModelConfig, init_variables, sequence_logprobs
from r1jax.rl import GRPOConfig, grpo_update_rollout, make_grpo_update
from r1jax.sharding import batch_sharding, make_mesh
from r1jax.train import create_train_state

CFG = ModelConfig.preset("tiny")
# Plain SGD: parameters move by lr x gradient, so comparing them compares gradients (Adam's first steps
# are sign-like and would blow an ulp of difference in a near-zero gradient up to lr).
TX = optax.sgd(0.5)
P, N, B, G = 6, 5, 2, 4
REWARDS = np.array([1.0, 0.0, 0.2, 1.2, 0.2, 0.2, 1.0, 0.0], np.float32)


def np_advantages(r, estimator):
  r_bg = r.astype(np.float64).reshape(-1, G)
  if estimator == "rloo":
    adv = r_bg - (r_bg.sum(1, keepdims=True) - r_bg) / (G - 1)
  else:
    adv = (r_bg - r_bg.mean(1, keepdims=True)) / (r_bg.std(1, ddof=1, keepdims=True) + 1e-6)
  return adv.reshape(-1).astype(np.float32)


def _rollout():
  rng = np.random.default_rng(0)
  s = B * G
  tokens = rng.integers(1, CFG.vocab_size, size=(s, P + N)).astype(np.int32)
  mask = np.ones((s, P + N), np.int32)
  mask[:4, :2] = 0
  comp = np.ones((s, N), np.int32)
  comp[1, 3:] = 0
  mask[:, P:] = comp
  tokens[mask == 0] = 0
  logp, _ = sequence_logprobs(CFG, init_variables(CFG, jax.random.key(0)), jnp.asarray(tokens),
                              jnp.asarray(mask), N)
  return {"tokens": tokens, "attention_mask": mask, "completion_mask": comp, "old_logp": np.asarray(logp),
          "ref_logp": np.asarray(logp) - 0.01}


def _train(batch, rl, mesh, estimator, steps=2):
  state = create_train_state(init_variables(CFG, jax.random.key(0), mesh=mesh), TX)
  if mesh is not None:
    batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
  update = make_grpo_update(CFG, rl, TX, mesh=mesh, group_size=G, advantage_estimator=estimator)
  losses = []
  for _ in range(steps):
    state, m = update(state, batch)
    losses.append(float(m["loss"]))
  return state, losses


@pytest.mark.parametrize("shape,estimator", [
    (None, "grpo"),
    (None, "rloo"),
    ({"data": 8}, "grpo"),                   # a group split across 4 devices along data
    ({"data": 2, "expert": 4}, "rloo"),      # each device holds one whole group
])
def test_in_step_advantages_equal_numpy_advantages(shape, estimator):
  rl = GRPOConfig(beta=0.04)
  base = _rollout()
  mesh = make_mesh(shape) if shape else None
  state, losses = _train({**base, "rewards": REWARDS}, rl, mesh, estimator)
  # The reference runs on the same mesh, so the only difference is where the advantages come from.
  ref_state, ref_losses = _train({**base, "advantages": np_advantages(REWARDS, estimator)}, rl, mesh, estimator)
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5),
               state.params, ref_state.params)


def test_minibatches_use_the_whole_rollouts_advantages():
  # 2 epochs x 2 shuffled minibatches of 4 rows: a minibatch holds parts of both groups, so advantages
  # computed from its own rows would differ. Reference: numpy advantages, rows sliced on the host.
  rl = GRPOConfig(beta=0.04, num_iterations=2, num_minibatches=2)
  base = _rollout()
  active = np.array([1, 1, 1, 1, 0, 0, 0, 0], np.float32)          # the second group is filler
  base["completion_mask"] = base["completion_mask"] * active[:, None].astype(np.int32)
  update = make_grpo_update(CFG, rl, TX, group_size=G)
  state, hist = grpo_update_rollout(update, create_train_state(init_variables(CFG, jax.random.key(0)), TX),
                                    {**base, "rewards": REWARDS, "active": active}, rl,
                                    rng=np.random.default_rng(5))
  ref = create_train_state(init_variables(CFG, jax.random.key(0)), TX)
  adv = np_advantages(REWARDS, "grpo") * active
  order, ref_hist = np.random.default_rng(5), []
  for _ in range(2):
    perm = order.permutation(B * G)
    for rows in (perm[:4], perm[4:]):
      ref, m = update(ref, {**{k: v[rows] for k, v in base.items()}, "advantages": adv[rows]})
      ref_hist.append(float(m["loss"]))
  np.testing.assert_allclose([float(h["loss"]) for h in hist], ref_hist, rtol=1e-5, atol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6),
               state.params, ref.params)


def test_a_batch_with_rewards_needs_the_group_size():
  state = create_train_state(init_variables(CFG, jax.random.key(0)), TX)
  with pytest.raises(ValueError, match="needs group_size"):
    make_grpo_update(CFG, GRPOConfig(), TX)(state, {**_rollout(), "rewards": REWARDS})
  with pytest.raises(ValueError, match="advantage_estimator='ppo'"):
    make_grpo_update(CFG, GRPOConfig(), TX, group_size=G, advantage_estimator="ppo")
