"""The decoder: causality, padding invariance, packing, dispatch agreement, remat, and the mesh run."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, Runtime, apply_model, forward, init_variables
from r1jax.sharding import batch_sharding, make_mesh, mesh_rules

TINY = ModelConfig.preset("tiny")


@pytest.fixture(scope="module")
def tiny_params():
  params = init_variables(TINY, jax.random.key(0))
  # A non-zero correction bias so that selection really differs from the weights' scores.
  params["router_bias"] = jax.tree.map(lambda b: jax.random.normal(jax.random.key(5), b.shape) * 0.05,
                                       params["router_bias"])
  return params


def _tokens(b, t, seed=1, vocab=64):
  return jax.random.randint(jax.random.key(seed), (b, t), 0, vocab)


_fwd = jax.jit(forward, static_argnums=0, static_argnames="runtime")


@pytest.mark.parametrize("preset", ["tiny", "tiny_qwen2", "tiny_qwen3_moe"])
def test_causality(preset):
  cfg = ModelConfig.preset(preset)
  params = init_variables(cfg, jax.random.key(0))
  tok = _tokens(2, 12)
  changed = tok.at[:, 7].set((tok[:, 7] + 1) % cfg.vocab_size)
  a, b = _fwd(cfg, params, tok), _fwd(cfg, params, changed)
  np.testing.assert_array_equal(a[:, :7], b[:, :7])
  assert np.abs(np.asarray(a[:, 7:] - b[:, 7:])).max() > 1e-4


@pytest.mark.parametrize("impl", ["dense", "sorted", "ragged"])
def test_padding_invariance(tiny_params, impl):
  cfg, rt = TINY, Runtime(moe_impl=impl)
  tok = _tokens(1, 9)
  alone = _fwd(cfg, tiny_params, tok, runtime=rt)[0]
  pad = jnp.zeros((1, 4), tok.dtype) + 3
  left = _fwd(cfg, tiny_params, jnp.concatenate([pad, tok], 1), jnp.concatenate([pad * 0, tok * 0 + 1], 1),
              runtime=rt)[0, 4:]
  right = _fwd(cfg, tiny_params, jnp.concatenate([tok, pad], 1), jnp.concatenate([tok * 0 + 1, pad * 0], 1),
               runtime=rt)[0, :9]
  np.testing.assert_allclose(left, alone, atol=1e-5)
  np.testing.assert_allclose(right, alone, atol=1e-5)


def test_packed_segments_do_not_attend_across(tiny_params):
  a, b = _tokens(1, 5, seed=2), _tokens(1, 7, seed=3)
  packed = jnp.concatenate([a, b], 1)
  seg = jnp.array([[1] * 5 + [2] * 7])
  pos = jnp.array([list(range(5)) + list(range(7))])
  got = forward(TINY, tiny_params, packed, positions=pos, segment_ids=seg)
  np.testing.assert_allclose(got[:, :5], _fwd(TINY, tiny_params, a), atol=1e-5)
  np.testing.assert_allclose(got[:, 5:], _fwd(TINY, tiny_params, b), atol=1e-5)


def test_dispatch_implementations_agree_in_model(tiny_params):
  tok = _tokens(3, 16)
  mask = jnp.ones_like(tok).at[0, :5].set(0)
  outs = {}
  for impl, cf in [("dense", 0.0), ("sorted", 0.0), ("ragged", 0.0), ("sorted", 8.0)]:
    out = apply_model(TINY, tiny_params, tok, attention_mask=mask, runtime=Runtime(moe_impl=impl, capacity_factor=cf))
    outs[(impl, cf)] = out
    assert float(out.aux["dropped_fraction"].max()) == 0.0
  for key, out in outs.items():
    np.testing.assert_allclose(out.logits, outs[("dense", 0.0)].logits, atol=2e-5, err_msg=str(key))
  counts = outs[("sorted", 0.0)].aux["expert_counts"]
  assert counts.shape == (1, 4) and float(counts.sum()) == 2 * float(mask.sum())   # k=2 slots per real token


def test_gradients_reach_router_and_experts(tiny_params):
  tok = _tokens(2, 16)
  cot = jax.random.normal(jax.random.key(9), (2, 16, 64))

  def loss(p, impl):
    return jnp.sum(forward(TINY, {**tiny_params, "params": p}, tok, runtime=Runtime(moe_impl=impl)) * cot)

  grads = {impl: jax.jit(jax.grad(loss), static_argnums=1)(tiny_params["params"], impl)
           for impl in ("dense", "sorted")}
  moe = grads["sorted"]["layers_1"]["mlp"]
  for name in ("gate", "gate_proj", "up_proj", "down_proj"):
    assert float(jnp.abs(moe[name]).sum()) > 0, name
  # fp32 summation order differs between the paths (combine before vs after the down projection).
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grads["dense"], grads["sorted"])


def test_remat_is_exact(tiny_params):
  tok = _tokens(2, 8)
  loss = lambda p, cfg: jnp.sum(forward(cfg, {**tiny_params, "params": p}, tok) ** 2)
  # Both sides jitted: eager and jitted gradients differ by float rounding (~4e-7 of the gradient's scale
  # on some CPUs), which is not what this test is about.
  g0 = jax.jit(jax.grad(loss), static_argnums=1)(tiny_params["params"], TINY)
  for policy in ("full",):           # "dots" saves matmul outputs: the same math (tested in the slow suite)
    g1 = jax.jit(jax.grad(loss), static_argnums=1)(tiny_params["params"], TINY.replace(remat=policy))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g0, g1)


@pytest.mark.slow
def test_remat_dots_policy_is_exact(tiny_params):
  tok = _tokens(2, 8)
  loss = lambda p, cfg: jnp.sum(forward(cfg, {**tiny_params, "params": p}, tok) ** 2)
  g0 = jax.jit(jax.grad(loss), static_argnums=1)(tiny_params["params"], TINY)
  g1 = jax.jit(jax.grad(loss), static_argnums=1)(tiny_params["params"], TINY.replace(remat="dots"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g0, g1)


def test_bfloat16_compute_is_close(tiny_params):
  tok = _tokens(2, 8)
  f32 = _fwd(TINY, tiny_params, tok)
  bf16 = _fwd(TINY.replace(dtype="bfloat16"), tiny_params, tok)
  assert bf16.dtype == jnp.float32
  np.testing.assert_allclose(bf16, f32, atol=0.05)


def test_yarn_runs_past_original_context(tiny_params):
  # tiny's YaRN original context is 64 positions; 100 tokens must still be causal and finite.
  tok = _tokens(1, 100)
  logits = _fwd(TINY, tiny_params, tok)
  assert np.isfinite(np.asarray(logits)).all()


def test_bad_tokens_rejected(tiny_params):
  with pytest.raises(ValueError, match="batch, time"):
    forward(TINY, tiny_params, jnp.zeros((4,), jnp.int32))
  with pytest.raises(ValueError, match="integers"):
    forward(TINY, tiny_params, jnp.zeros((1, 4), jnp.float32))


@pytest.mark.parametrize("shape", [{"data": 2, "expert": 4}, {"data": 2, "fsdp": 2, "expert": 2}])
@pytest.mark.parametrize("impl,cf", [("sorted", 0.0), pytest.param("sorted", 8.0, marks=pytest.mark.slow)])
def test_mesh_matches_single_device(shape, impl, cf):
  assert jax.device_count() == 8, "tests/conftest.py sets 8 fake CPU devices"
  cfg, rt = TINY, Runtime(moe_impl=impl, capacity_factor=cf)
  mesh = make_mesh(shape)
  sharded = init_variables(cfg, jax.random.key(0), mesh=mesh)
  single = init_variables(cfg, jax.random.key(0))
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), sharded, single)

  gate_proj = sharded["params"]["layers_1"]["mlp"]["gate_proj"]                  # [E=4, D, F]
  assert gate_proj.sharding.spec[0] == "expert"
  n_exp = shape["expert"]
  assert gate_proj.addressable_shards[0].data.shape[0] == 4 // n_exp                # really split
  if shape.get("fsdp", 1) > 1:
    assert gate_proj.sharding.spec[1] == "fsdp"

  tok = _tokens(4, 16)
  mask = jnp.ones_like(tok).at[1, :3].set(0)
  with mesh_rules(mesh):
    tok_s = jax.device_put(tok, batch_sharding(mesh))
    mask_s = jax.device_put(mask, batch_sharding(mesh))
    got = jax.jit(forward, static_argnums=0, static_argnames="runtime")(cfg, sharded, tok_s, mask_s, runtime=rt)
  want = _fwd(cfg, single, tok, mask, runtime=rt)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
