"""The jitted GRPO update: mesh == 1 device, router bias rule, non-finite detection, ratio-1 start."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, init_variables, sequence_logprobs
from r1jax.rl import GRPOConfig, group_advantages, make_grpo_update, make_logprob_fn
from r1jax.sharding import make_mesh
from r1jax.train import NonFiniteError, OptimConfig, check_finite, create_train_state, make_optimizer

CFG = ModelConfig.preset("tiny")
RL = GRPOConfig(beta=0.04, router_bias_rate=0.01, epsilon_high=0.28)
TX = make_optimizer(OptimConfig(learning_rate=1e-2, warmup_steps=1, total_steps=10))
P, N, B, G = 6, 5, 2, 4


def _rollout(variables):
  rng = np.random.default_rng(0)
  s = B * G
  tokens = rng.integers(1, CFG.vocab_size, size=(s, P + N)).astype(np.int32)
  mask = np.ones((s, P + N), np.int32)
  mask[:4, :2] = 0                                   # left-padded prompts
  comp = np.ones((s, N), np.int32)
  comp[1, 3:] = 0                                    # finished early: post-EOS tokens are masked
  comp[5, 1:] = 0
  mask[:, P:] = comp
  tokens[mask == 0] = 0
  logp, _ = sequence_logprobs(CFG, variables, jnp.asarray(tokens), jnp.asarray(mask), N)
  rewards = rng.integers(0, 2, size=s).astype(np.float32)
  rewards[:G] = [1, 0, 0, 1]
  return {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(mask), "completion_mask": jnp.asarray(comp),
          "old_logp": logp, "ref_logp": logp - 0.01, "advantages": group_advantages(jnp.asarray(rewards), G)}


def _run(mesh, steps=2):
  variables = init_variables(CFG, jax.random.key(0), mesh=mesh)
  batch = _rollout(init_variables(CFG, jax.random.key(0)))
  state = create_train_state(variables, TX)
  update = make_grpo_update(CFG, RL, TX, mesh=mesh)
  history = []
  for _ in range(steps):
    state, m = update(state, batch)
    history.append(jax.device_get(m))
  return state, history


@pytest.fixture(scope="module")
def single():
  return _run(None)


def test_first_ratio_is_one_and_loss_moves(single):
  state, history = single
  assert abs(float(history[0]["ratio_mean"]) - 1.0) < 1e-5            # old log-probs == policy at step 0
  assert float(history[0]["clip_frac"]) == 0.0
  assert int(state.step) == 2
  assert all(np.isfinite(float(h["loss"])) for h in history)
  assert float(history[1]["ratio_max"]) != 1.0                          # the policy moved after one update


@pytest.mark.parametrize("shape", [
    {"data": 2, "expert": 4},
    pytest.param({"data": 2, "fsdp": 2, "expert": 2}, marks=pytest.mark.slow),   # ~40 s of compilation
])
def test_mesh_update_equals_single_device(single, shape):
  mesh = make_mesh(shape)
  state, history = _run(mesh)
  ref_state, ref_history = single
  gp = state.params["layers_1"]["mlp"]["gate_proj"]
  assert gp.sharding.spec[0] == "expert"
  assert gp.addressable_shards[0].data.shape[0] == CFG.n_routed_experts // shape["expert"]
  mu = jax.tree.leaves(state.opt_state)                                  # optimizer moments sharded like params
  assert any(getattr(x, "sharding", None) is not None and "expert" in str(x.sharding.spec) for x in mu)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5),
               (state.params, state.router_bias), (ref_state.params, ref_state.router_bias))
  for h, r in zip(history, ref_history):
    np.testing.assert_allclose(float(h["loss"]), float(r["loss"]), rtol=1e-5, atol=1e-6)


def test_router_bias_follows_the_balancing_rule():
  variables = init_variables(CFG, jax.random.key(0))
  batch = _rollout(variables)
  state = create_train_state(variables, TX)
  bias0 = np.asarray(state.router_bias["layers_1"]["mlp"]["e_score_correction_bias"]).copy()
  # Expert loads of the policy forward on this batch (the update uses the same forward).
  _, aux = sequence_logprobs(CFG, variables, batch["tokens"], batch["attention_mask"], N)
  counts = np.asarray(aux["expert_counts"][0])
  state, _ = make_grpo_update(CFG, RL, TX)(state, batch)
  bias1 = np.asarray(state.router_bias["layers_1"]["mlp"]["e_score_correction_bias"])
  np.testing.assert_allclose(bias1 - bias0, 0.01 * np.sign(counts.mean() - counts), atol=1e-7)
  assert (np.sign(counts.mean() - counts) != 0).any()
  # The bias is not a trainable parameter: the optimizer state holds nothing for it.
  assert "router_bias" not in str(jax.tree.structure(state.opt_state))


def test_non_finite_loss_raises_naming_the_step():
  variables = init_variables(CFG, jax.random.key(0))
  batch = _rollout(variables)
  batch["advantages"] = batch["advantages"].at[0].set(jnp.nan)
  state = create_train_state(variables, TX)
  _, metrics = make_grpo_update(CFG, RL, TX)(state, batch)
  with pytest.raises(NonFiniteError, match="step 7"):
    check_finite(metrics, step=7)


def test_reference_logprob_fn_matches_sequence_logprobs():
  variables = init_variables(CFG, jax.random.key(0))
  batch = _rollout(variables)
  fn = make_logprob_fn(CFG, temperature=1.0)
  np.testing.assert_allclose(fn(variables, batch["tokens"], batch["attention_mask"], N), batch["old_logp"],
                             atol=1e-6)


def test_bad_grpo_config_names_field():
  with pytest.raises(ValueError, match="GRPOConfig.kl_estimator='k4'"):
    GRPOConfig(kl_estimator="k4")
  with pytest.raises(ValueError, match="GRPOConfig.temperature=0"):
    GRPOConfig(temperature=0)


@pytest.mark.parametrize("policy_loss,kl", [("cispo", "k3"), ("gmpo", "k3_unbiased"), ("sapo", "k3")])
def test_every_policy_loss_trains_through_the_update(policy_loss, kl):
  """GRPOConfig.policy_loss / kl_estimator reach the jitted update: two updates run, the first starts at
  ratio 1 and the loss the update reports is the loss function's on the same batch."""
  from r1jax.rl.losses import grpo_loss
  rl = GRPOConfig(beta=0.04, policy_loss=policy_loss, kl_estimator=kl, epsilon_low=0.4, epsilon_high=0.4)
  variables = init_variables(CFG, jax.random.key(0))
  batch = _rollout(variables)
  update = make_grpo_update(CFG, rl, TX)
  state, m = update(create_train_state(variables, TX), batch)
  want, _ = grpo_loss(batch["old_logp"], batch["old_logp"], batch["ref_logp"], batch["advantages"],
                      batch["completion_mask"], epsilon_low=0.4, epsilon_high=0.4, beta=0.04, kl_estimator=kl,
                      aggregation=rl.aggregation, max_len=N, policy_loss=policy_loss)
  np.testing.assert_allclose(float(m["loss"]), float(want), rtol=1e-4, atol=1e-6)
  state, m2 = update(state, batch)
  assert np.isfinite(float(m2["loss"])) and float(m2["ratio_max"]) != 1.0
