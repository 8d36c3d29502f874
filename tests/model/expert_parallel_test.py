"""Expert parallelism: under a mesh with an expert axis, the routed experts run as an all-to-all token
exchange (shard_map + jax.lax.all_to_all), equal to the one-device dropless model in value and gradient."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, Runtime, apply_model, forward, init_variables
from r1jax.model.moe import expert_mlp, expert_parallel_mlp, expert_parallel_plan, route
from r1jax.sharding import batch_sharding, make_mesh, mesh_rules

TINY = ModelConfig.preset("tiny")          # E=4 routed experts, top-2, group-limited routing, one dense layer
MESHES = [{"data": 2, "expert": 4}, {"fsdp": 2, "expert": 4}]


def _data(b=4, t=16):
  tok = jax.random.randint(jax.random.key(1), (b, t), 0, TINY.vocab_size)
  mask = jnp.ones_like(tok).at[1, :3].set(0)                     # left padding in one row
  cot = jax.random.normal(jax.random.key(9), (b, t, TINY.vocab_size))
  return tok, mask, cot


def _variables(mesh=None):
  v = init_variables(TINY, jax.random.key(0), mesh=mesh)
  # a non-zero routing bias, so that selection differs from the weights' scores
  bias = jax.tree.map(lambda b: jax.random.normal(jax.random.key(5), b.shape) * 0.05, v["router_bias"])
  if mesh is not None:
    bias = jax.tree.map(lambda b, s: jax.device_put(b, s.sharding), bias, v["router_bias"])
  return {**v, "router_bias": bias}


def _loss(params, variables, tok, mask, cot):
  return jnp.sum(forward(TINY, {**variables, "params": params}, tok, mask) * cot)


def _expert_weight_gathers(hlo: str, cfg: ModelConfig) -> list[str]:
  """all-gathers whose result is all E experts' weights ([E, D, F], gate|up [E, D, 2F], [E, F, D]): which a
  dispatch that moves weights to tokens needs. (Activations may be gathered: the MoE output returns to the layout of
  the rest of the layer.)"""
  e, d, f = cfg.n_routed_experts, cfg.hidden_size, cfg.moe_intermediate_size
  found = []
  for line in hlo.splitlines():
    m = re.search(r"= \w+\[(\d+),(\d+),(\d+)\]\S* all-gather\(", line)
    if m and tuple(int(g) for g in m.groups()) in {(e, d, f), (e, d, 2 * f), (e, f, d)}:
      found.append(line.strip()[:160])
  return found


@pytest.mark.parametrize("shape", MESHES, ids=lambda s: "x".join(f"{k}{v}" for k, v in s.items()))
def test_all_to_all_dispatch_equals_one_device(shape):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  tok, mask, cot = _data()
  single = _variables()
  want_loss, want_grads = jax.jit(jax.value_and_grad(_loss))(single["params"], single, tok, mask, cot)
  want_aux = jax.jit(lambda v: apply_model(TINY, v, tok, attention_mask=mask).aux)(single)

  mesh = make_mesh(shape)
  sharded = _variables(mesh)
  with mesh_rules(mesh):
    args = (sharded["params"], sharded, jax.device_put(tok, batch_sharding(mesh)),
            jax.device_put(mask, batch_sharding(mesh)), jax.device_put(cot, batch_sharding(mesh, 3)))
    step = jax.jit(jax.value_and_grad(_loss))
    hlo = step.lower(*args).compile().as_text()
    got_loss, got_grads = step(*args)
    aux = jax.jit(lambda v, t, m: apply_model(TINY, v, t, attention_mask=m).aux)(sharded, args[2], args[3])

  assert "all-to-all" in hlo                                     # tokens move, in both passes
  assert not _expert_weight_gathers(hlo, TINY)
  assert float(aux["dropped_fraction"].max()) == 0.0             # the capacity held: exact
  np.testing.assert_array_equal(np.asarray(aux["expert_counts"]), np.asarray(want_aux["expert_counts"]))
  np.testing.assert_allclose(float(got_loss), float(want_loss), rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5),
               got_grads, want_grads)
  gate = got_grads["layers_1"]["mlp"]["gate_proj"]
  assert gate.sharding.spec[0] == "expert"                       # expert gradients stay on their devices


def test_plain_set_mesh_picks_the_all_to_all_and_logits_match():
  """jax.jit(forward) on variables created on the mesh, under jax.set_mesh only (the default rules)."""
  tok, mask, _ = _data()
  single = _variables()
  want = jax.jit(forward, static_argnums=0)(TINY, single, tok, mask)
  mesh = make_mesh({"data": 2, "expert": 4})
  sharded = _variables(mesh)
  with jax.set_mesh(mesh):
    fwd = jax.jit(forward, static_argnums=0)
    assert "all-to-all" in fwd.lower(TINY, sharded, tok, mask).compile().as_text()
    got = fwd(TINY, sharded, tok, mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _moe_inputs(t, cfg=TINY, seed=0):
  ks = jax.random.split(jax.random.key(seed), 5)
  d, e, f = cfg.hidden_size, cfg.n_routed_experts, cfg.moe_intermediate_size
  x = jax.random.normal(ks[0], (t, d))
  idx, w, _ = route(x, jax.random.normal(ks[1], (d, e)) * 0.5, None, cfg)
  ws = [jax.random.normal(k, s) * 0.1 for k, s in zip(ks[2:], [(e, d, f), (e, d, f), (e, f, d)])]
  return x, idx, w, jnp.ones((t,), jnp.int32), *ws


def test_overflow_is_counted_and_only_the_dropped_slots_differ():
  x, idx, w, m, wg, wu, wd = _moe_inputs(64)
  idx = jnp.zeros_like(idx).at[:, 1].set(1)                      # every token on experts 0 and 1
  want, _ = expert_mlp(x, idx, w, m, wg, wu, wd, impl="sorted")
  mesh = make_mesh({"data": 2, "expert": 4})
  with mesh_rules(mesh):
    plan = expert_parallel_plan(64, 4)
    y, dropped = jax.jit(lambda *a: expert_parallel_mlp(*a, plan, capacity_factor=1.0))(x, idx, w, m, wg, wu, wd)
    y_big, dropped_big = jax.jit(lambda *a: expert_parallel_mlp(*a, plan, capacity_factor=4.0))(
        x, idx, w, m, wg, wu, wd)
  # 8 tokens per device: 8 slots to shard 0 (expert 0) and 8 to shard 1 (expert 1), capacity
  # ceil(1 * 16 / 4) = 4 per shard: half the slots are dropped
  assert float(dropped) == pytest.approx(0.5)
  assert float(dropped_big) == 0.0
  np.testing.assert_allclose(np.asarray(y_big), np.asarray(want), rtol=1e-5, atol=1e-5)
  assert not np.allclose(np.asarray(y), np.asarray(want), atol=1e-3)


def test_per_device_expert_flops_shrink_with_the_expert_axis():
  """Compiled cost analysis: one device's routed-expert FLOPs under {data: 2, expert: 4} are at most
  1.3 / 4 of the one-device dispatch's on the same 256 tokens."""
  args = _moe_inputs(256)
  one = jax.jit(lambda *a: expert_mlp(*a, impl="sorted")[0]).lower(*args).compile().cost_analysis()
  mesh = make_mesh({"data": 2, "expert": 4})
  with mesh_rules(mesh):
    plan = expert_parallel_plan(256, 4)
    ep = jax.jit(lambda *a: expert_parallel_mlp(*a, plan, capacity_factor=2.0)[0]).lower(*args).compile()
    ep_cost = ep.cost_analysis()
  one, ep_cost = (c[0] if isinstance(c, list) else c for c in (one, ep_cost))
  assert ep_cost["flops"] <= 1.3 / 4 * one["flops"], (ep_cost["flops"], one["flops"])


def test_no_plan_without_an_expert_axis_or_when_tokens_do_not_divide():
  assert expert_parallel_plan(64, 4) is None                      # no mesh
  with mesh_rules(make_mesh({"data": 8})):
    assert expert_parallel_plan(64, 4) is None                    # no expert axis
  with mesh_rules(make_mesh({"data": 2, "expert": 4})):
    assert expert_parallel_plan(64, 4) is not None
    assert expert_parallel_plan(60, 4) is None                    # 60 tokens do not split 8 ways
    assert expert_parallel_plan(64, 6) is None                    # 6 experts do not split 4 ways


def test_exchange_capacity_factor_is_validated():
  with pytest.raises(ValueError, match="Runtime.exchange_capacity_factor=0.0: must be > 0"):
    Runtime(exchange_capacity_factor=0.0)
