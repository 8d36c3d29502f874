"""LoRA (r1jax.train.lora): the merge against numpy for every kernel layout, updates that touch only the
adapters, the merged export equal to the adapted model, and GRPO whose reference is the frozen base."""
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import traverse_util

from r1jax.checkpoint import CheckpointManager, load_model, save_model
from r1jax.model import ModelConfig, forward, init_variables
from r1jax.stages.grpo import RLStageConfig
from r1jax.train.lora import LoraConfig, delta, init_adapters, merge, targeted
from r1jax.train.state import create_train_state, variables_of
from r1jax.train.step import make_update

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "stages"))
import _grpo_setup  # noqa: E402

PRESETS = ("tiny", "tiny_qwen2", "tiny_qwen3_moe")


def _flat(tree):
  return {tuple(map(str, k)): v for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.mark.parametrize("preset", PRESETS)
def test_merge_is_w_plus_scaled_a_b_for_every_targeted_kernel(preset):
  """Every attention and MLP projection (MLA, GQA, routed experts with an adapter each, shared experts) gets
  an adapter; the merge adds scale * A @ B, computed here with numpy on the flattened in/out dims."""
  cfg = ModelConfig.preset(preset)
  params = init_variables(cfg, jax.random.key(0))["params"]
  lc = LoraConfig(rank=3, alpha=6.0)
  adapters = init_adapters(params, lc, jax.random.key(1))
  assert all(not np.any(b) for p, b in _flat(adapters).items() if p[-1] == "b")
  jax.tree.map(np.testing.assert_array_equal, merge(params, adapters, lc.scale), params)   # B = 0: the base
  rng = np.random.default_rng(0)
  adapters = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), adapters)
  merged, flat_params, spots = _flat(merge(params, adapters, lc.scale)), _flat(params), targeted(params, lc)
  names = {p[-1] for p in spots}
  assert names >= {"o_proj", "gate_proj", "up_proj", "down_proj"}
  assert names & {"q_proj", "q_b_proj"} and "gate" not in names and "lm_head" not in names
  for path, w in flat_params.items():
    if path not in spots:
      np.testing.assert_array_equal(merged[path], w)
      continue
    nb, ni = spots[path]
    a, b = np.asarray(_flat(adapters)[path + ("a",)]), np.asarray(_flat(adapters)[path + ("b",)])
    e = int(np.prod(w.shape[:nb]))
    fi, fo = int(np.prod(w.shape[nb:nb + ni])), int(np.prod(w.shape[nb + ni:]))
    want = np.asarray(w, np.float64).reshape(e, fi, fo) + lc.scale * np.einsum(
        "nir,nro->nio", a.reshape(e, fi, -1).astype(np.float64), b.reshape(e, -1, fo).astype(np.float64))
    np.testing.assert_allclose(np.asarray(merged[path]).reshape(e, fi, fo), want, rtol=1e-5, atol=1e-5)
  assert delta(jnp.ones((2, 4, 3)), jnp.ones((2, 3, 5)), 1).shape == (2, 4, 5)


def _lm_loss(cfg):
  def loss_fn(variables, batch):
    logits = forward(cfg, variables, batch["tokens"])
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
    nll = -jnp.take_along_axis(logp, batch["tokens"][:, 1:, None], -1).mean()
    return nll, ({}, {})
  return loss_fn


def test_an_update_changes_only_the_adapters_and_the_merged_export_is_the_adapted_model(tmp_path):
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  tx = optax.adam(1e-2)
  state = create_train_state(variables, tx, lora_config=LoraConfig(rank=4, alpha=8.0), key=jax.random.key(3))
  base = jax.tree.map(np.asarray, state.frozen)
  assert jax.tree.structure(state.opt_state[0].mu) == jax.tree.structure(state.params)   # moments: adapters only
  update = make_update(cfg, tx, _lm_loss(cfg), donate=False)
  tokens = jax.random.randint(jax.random.key(4), (4, 12), 0, cfg.vocab_size)
  losses = []
  for _ in range(3):
    before = jax.tree.map(np.asarray, state.params)
    state, metrics = update(state, {"tokens": tokens})
    losses.append(float(metrics["loss"]))
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(state.params)))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.frozen), base)   # never updated
    assert state.router_bias.keys() == variables["router_bias"].keys()
  assert losses[-1] < losses[0]
  adapted = jax.jit(lambda a: forward(cfg, variables_of(state.model_params(a), state.router_bias), tokens))
  out = save_model(tmp_path / "model", cfg, state.variables())
  loaded_cfg, loaded, _ = load_model(out, ModelConfig)
  assert loaded_cfg == cfg and jax.tree.structure(loaded) == jax.tree.structure(variables)
  np.testing.assert_allclose(np.asarray(forward(cfg, loaded, tokens)), np.asarray(adapted(state.params)),
                             rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(forward(cfg, variables, tokens)), np.asarray(adapted(state.params)))


def test_grpo_with_lora_uses_the_frozen_base_as_reference_and_resumes(tmp_path):
  """No reference copy is checkpointed (the base in the state is the reference); the base never moves; a
  rerun of a finished run restores the adapters; ref_reset_every is refused with LoRA."""
  lora = dict(rank=4, alpha=8.0)
  out = _grpo_setup.run(str(tmp_path / "rl"), 2, lora=lora)
  ckpt = CheckpointManager(tmp_path / "rl" / "checkpoints")
  tree, _ = ckpt.restore(ckpt.latest_step())
  assert set(tree) == {"state"} and set(tree["state"]) >= {"frozen", "params"}
  init = init_variables(_grpo_setup.MODEL, jax.random.key(0))
  jax.tree.map(np.testing.assert_array_equal, tree["state"]["frozen"], jax.tree.map(np.asarray, init["params"]))
  assert set(_flat(tree["state"]["params"])) == {p + (ab,) for p in targeted(init["params"], LoraConfig(rank=4))
                                                  for ab in ("a", "b")}
  merged = merge(tree["state"]["frozen"], tree["state"]["params"], 8.0 / 4)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6), out["params"], merged)
  again = _grpo_setup.run(str(tmp_path / "rl"), 2, lora=lora)            # finished: restored, not retrained
  jax.tree.map(np.testing.assert_array_equal, again["params"], out["params"])
  with pytest.raises(Exception, match="ref_reset_every must be 0 with LoRA"):
    _grpo_setup.stage_config(2, lora=lora, ref_reset_every=1)
  assert RLStageConfig().lora.enabled is False
