"""Gradient accumulation (make_update's accum_steps): k microbatches make exactly the one-batch update.

The reference is the same update on the whole batch. The batches are built so that the microbatches hold
very different numbers of loss tokens: an equally weighted average of the microbatch gradients (the usual
shortcut) is then measurably wrong, which the tests also show, so the equality cannot hold by accident."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from r1jax.model import ModelConfig, init_variables, sequence_logprobs
from r1jax.rl import GRPOConfig, make_grpo_update
from r1jax.rl.step import minibatch_rows
from r1jax.sharding import make_mesh
from r1jax.train import LMConfig, create_train_state, lm_objective, make_lm_update
from r1jax.train.state import variables_of

CFG = ModelConfig.preset("tiny")          # MLA + MoE: the router bias moves from the batch's expert counts
TX = optax.sgd(0.5)                       # the update is the gradient itself: nothing hides a wrong gradient


def _lm_batch(rows=8, t=16, seed=0):
  """Packed-style rows whose loss masks keep 1..t tokens: microbatch token counts differ several-fold."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(1, CFG.vocab_size, size=(rows, t)).astype(np.int32)
  keep = np.array([t, 1, t, 2, t // 2, 1, t, 3])[:rows]
  mask = (np.arange(t)[None] < keep[:, None]).astype(np.int32)
  return {"tokens": jnp.asarray(tokens), "targets": jnp.asarray(np.roll(tokens, -1, 1)),
          "loss_mask": jnp.asarray(mask), "segment_ids": jnp.ones((rows, t), jnp.int32),
          "positions": jnp.asarray(np.tile(np.arange(t, dtype=np.int32), (rows, 1)))}


def _state(mesh=None):
  return create_train_state(init_variables(CFG, jax.random.key(0), mesh=mesh), TX)


def _one_update(update, mesh=None, batch=None):
  state, metrics = update(_state(mesh), batch)
  return jax.device_get(state), jax.device_get(metrics)


def _assert_same_update(got, want, rtol=2e-5, atol=1e-7):
  (gs, gm), (ws, wm) = got, want
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), gs.params, ws.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), gs.router_bias,
               ws.router_bias)
  for name in ("loss", "grad_norm", "num_tokens", "accuracy", "expert_maxvio_mean"):
    np.testing.assert_allclose(gm[name], wm[name], rtol=rtol, err_msg=name)


LM = LMConfig(router_bias_rate=1e-2, balance_loss_coef=0.0)


@pytest.fixture(scope="module")
def lm_reference():
  return _one_update(make_lm_update(CFG, LM, TX, donate=False), batch=_lm_batch())


@pytest.mark.parametrize("k", [2, 4])
def test_accumulated_lm_update_equals_the_one_batch_update(lm_reference, k):
  lm = LMConfig(router_bias_rate=1e-2, balance_loss_coef=0.0, grad_accum_steps=k)
  got = _one_update(make_lm_update(CFG, lm, TX, donate=False), batch=_lm_batch())
  _assert_same_update(got, lm_reference)
  assert not np.allclose(jax.tree.leaves(got[0].router_bias)[0], jax.tree.leaves(_state().router_bias)[0])


def test_an_equally_weighted_average_of_microbatch_gradients_would_be_wrong(lm_reference):
  """The shortcut the token weights replace: mean of the two halves' gradients != the batch's gradient."""
  batch, state = _lm_batch(), _state()
  loss_fn = lm_objective(CFG, LM)
  grad = lambda b: jax.grad(lambda p: loss_fn(variables_of(p, state.router_bias), b)[0])(state.params)
  halves = [jax.tree.map(lambda x: x[i::2], batch) for i in range(2)]
  naive = jax.tree.map(lambda a, b: (a + b) / 2, *map(grad, halves))
  whole = grad(batch)
  gap = max(float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(naive), jax.tree.leaves(whole)))
  scale = max(float(jnp.abs(b).max()) for b in jax.tree.leaves(whole))
  assert gap > 1e-2 * scale        # far outside the tolerance the accumulated update is held to
  # and the accumulated update's SGD step is the whole batch's gradient
  reference_params = jax.tree.map(lambda p, g: p - 0.5 * g, state.params, whole)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), lm_reference[0].params,
               jax.device_get(reference_params))


def test_accumulation_on_a_mesh_equals_one_device(lm_reference):
  """8 devices (data 2 x expert 4), 2 microbatches of 4 rows each spread over the batch axis."""
  mesh = make_mesh({"data": 2, "expert": 4})
  lm = LMConfig(router_bias_rate=1e-2, balance_loss_coef=0.0, grad_accum_steps=2)
  batch = jax.tree.map(lambda x: jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
      "data"))), _lm_batch())
  got = _one_update(make_lm_update(CFG, lm, TX, mesh=mesh, donate=False), mesh, batch)
  _assert_same_update(got, lm_reference, rtol=1e-4, atol=1e-6)


def test_accumulation_keeps_one_microbatch_of_activations():
  """The compiled step's scratch memory shrinks with the microbatch (the scan holds one at a time)."""
  batch = _lm_batch(rows=8, t=128)
  temp = {}
  for k in (1, 4):
    update = make_lm_update(CFG, LMConfig(balance_loss_coef=0.0, grad_accum_steps=k), TX, donate=False)
    compiled = jax.jit(update).lower(_state(), batch).compile()
    temp[k] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[4] < 0.5 * temp[1], temp


P, N, G = 5, 6, 4


def _rollout(rows=16):
  """A GRPO rollout with completions of 1..N tokens and mixed rewards in each group of G."""
  rng = np.random.default_rng(1)
  tokens = rng.integers(1, CFG.vocab_size, size=(rows, P + N)).astype(np.int32)
  lengths = rng.integers(1, N + 1, size=rows)
  lengths[::3] = 1
  comp = (np.arange(N)[None] < lengths[:, None]).astype(np.int32)
  mask = np.concatenate([np.ones((rows, P), np.int32), comp], 1)
  mask[::2, :2] = 0                                          # left padding
  tokens[mask == 0] = 0
  variables = init_variables(CFG, jax.random.key(0))
  logp, _ = sequence_logprobs(CFG, variables, jnp.asarray(tokens), jnp.asarray(mask), N)
  rewards = rng.integers(0, 2, size=rows).astype(np.float32)
  rewards[::G] = 1 - rewards[1::G]                           # no group is all-equal
  return {"tokens": jnp.asarray(tokens), "attention_mask": jnp.asarray(mask), "completion_mask": jnp.asarray(comp),
          "old_logp": logp - 0.05, "ref_logp": logp + 0.02, "rewards": jnp.asarray(rewards)}


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean"])
def test_accumulated_grpo_minibatch_update_equals_the_one_batch_update(aggregation):
  """A shuffled minibatch of the rollout (rows), 1 vs 4 microbatches: advantages over the whole rollout,
  the loss's mean over tokens (DAPO) or over sequences (GRPO)."""
  batch = _rollout()
  rows = minibatch_rows(16, 2, np.random.default_rng(0))[0]
  results = []
  for k in (1, 4):
    rl = GRPOConfig(beta=0.04, aggregation=aggregation, router_bias_rate=1e-2, grad_accum_steps=k)
    update = make_grpo_update(CFG, rl, TX, group_size=G, donate=False)
    results.append(_one_update(update, batch={**batch, "rows": jnp.asarray(rows)}))
  (acc_state, acc_m), (ref_state, ref_m) = results[1], results[0]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), acc_state.params,
               ref_state.params)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), acc_state.router_bias,
               ref_state.router_bias)
  for name in ("loss", "pg_loss", "kl", "grad_norm", "num_tokens", "ratio_max", "ratio_min"):
    np.testing.assert_allclose(acc_m[name], ref_m[name], rtol=2e-5, err_msg=name)
  assert float(ref_m["grad_norm"]) > 0


def test_accumulation_without_rows_splits_the_whole_rollout():
  batch = _rollout()
  results = [_one_update(make_grpo_update(CFG, GRPOConfig(beta=0.0, grad_accum_steps=k), TX, group_size=G,
                                          donate=False), batch=batch) for k in (1, 2)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7), results[1][0].params,
               results[0][0].params)


def test_bad_accumulation_settings_are_refused_with_the_field():
  from r1jax.config_utils import build
  from r1jax.stages.grpo import RLStageConfig
  from r1jax.stages.lm import LMStageConfig
  with pytest.raises(ValueError, match="grad_accum_steps=3 does not divide batch_size=16"):
    build(LMStageConfig, dict(batch_size=16, lm=dict(grad_accum_steps=3)), "config.sft")
  with pytest.raises(ValueError, match="grad_accum_steps=3 does not divide the minibatch of 32"):
    build(RLStageConfig, dict(batch_size=8, group_size=8, grpo=dict(num_minibatches=2, grad_accum_steps=3)),
          "config.rl")
  with pytest.raises(ValueError, match="GRPOConfig.grad_accum_steps=0"):
    GRPOConfig(grad_accum_steps=0)
  with pytest.raises(ValueError, match="LMConfig.grad_accum_steps=0"):
    LMConfig(grad_accum_steps=0)
