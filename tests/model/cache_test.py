"""KV-cache decoding equals the full forward pass: prefill + one token at a time, with left padding.

Also: MLA's absorbed decode form (scores against the cached latent), with and without the weight
products folded ahead of time, equals the naive form (per-head keys/values rebuilt from the latent) on
the same cache. (tests/sampling checks repeat_cache end to end:
G samples decoded from one prefill have the log-probs of full forwards.)
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, apply_model, forward, init_cache, init_variables, repeat_cache
from r1jax.model.attention import MLA, fold_absorbed_weights

B, P, STEPS = 3, 6, 4
# Row 0 unpadded, row 1 left-padded by 2, row 2 by 5 (one real prompt token).
PAD = np.array([0, 2, 5])


def _batch(cfg, seed=0):
  rs = np.random.RandomState(seed)
  tokens = rs.randint(1, cfg.vocab_size, (B, P + STEPS)).astype(np.int32)
  mask = (np.arange(P + STEPS)[None, :] >= PAD[:, None]).astype(np.int32)
  tokens[mask == 0] = 0
  return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.fixture(scope="module", params=["tiny", "tiny_qwen2", "tiny_qwen3_moe"])
def model(request):
  cfg = ModelConfig.preset(request.param)
  # init_variables' tree and shapes, drawn with numpy (compiling init_variables costs ~6 s here); a scale
  # of 0.3 instead of 0.02 makes attention and routing far from uniform, so the check has teeth.
  rs = np.random.RandomState(0)
  shapes = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  return cfg, jax.tree.map(lambda s: jnp.asarray(rs.normal(0.0, 0.3, s.shape).astype(s.dtype)), shapes)


@pytest.fixture(scope="module")
def results(model):
  """Full-forward and cached logits from one jitted program per preset (compiling is the slow part)."""
  cfg, params = model
  tokens, mask = _batch(cfg)

  @jax.jit
  def run(params, tokens, mask):
    full = forward(cfg, params, tokens, mask)
    # Prefill P tokens into a cache of P + STEPS slots, then feed the rest one token at a time.
    pre = apply_model(cfg, params, tokens[:, :P], attention_mask=mask[:, :P], cache=init_cache(cfg, B, P + STEPS))

    def step(cache, tm):
      out = apply_model(cfg, params, tm[0][:, None], attention_mask=tm[1][:, None], cache=cache)
      return out.cache, out.logits[:, 0]

    cache, steps = jax.lax.scan(step, pre.cache, (tokens[:, P:].T, mask[:, P:].T))
    return full, jnp.concatenate([pre.logits, jnp.swapaxes(steps, 0, 1)], axis=1), cache

  full, decoded, cache = jax.tree.map(np.asarray, run(params, tokens, mask))
  return full, decoded, cache, np.asarray(mask, bool)


def test_prefill_then_decode_equals_full_forward(results):
  full, decoded, cache, real = results
  # Padding positions have no meaningful logits (their queries attend to nothing valid).
  np.testing.assert_allclose(decoded[real], full[real], atol=2e-5, rtol=1e-5)
  assert int(cache["index"]) == P + STEPS
  np.testing.assert_array_equal(cache["key_mask"], real)


def test_repeat_cache_repeats_rows():
  cache = {"layers": [{"k": np.arange(6.0).reshape(3, 2)}], "key_mask": np.array([[1, 0], [1, 1], [0, 1]], bool),
           "index": np.int32(2)}
  rep = repeat_cache(cache, 2)
  np.testing.assert_array_equal(np.asarray(rep["layers"][0]["k"]), np.repeat(cache["layers"][0]["k"], 2, axis=0))
  np.testing.assert_array_equal(np.asarray(rep["key_mask"]), np.repeat(cache["key_mask"], 2, axis=0))
  assert int(rep["index"]) == 2


# None = the naive form (per-head keys and values); else (absorb, (fold query, fold output)).
FORMS = (None, (True, (False, False)), (True, (True, False)), (True, (False, True)), (True, (True, True)))


def test_mla_absorbed_equals_naive_on_the_same_cache():
  cfg = ModelConfig.preset("tiny")
  b, length, index = 2, 9, 4
  # numpy inputs: every eager jax op would be one more compilation (~0.4 s each here).
  rs = np.random.RandomState(3)
  cache = {"latent": rs.randn(b, length, cfg.kv_lora_rank).astype(np.float32),
           "k_rope": rs.randn(b, length, cfg.qk_rope_head_dim).astype(np.float32)}
  x3 = rs.randn(b, 3, cfg.hidden_size).astype(np.float32)
  variables = jax.jit(lambda x, c: MLA(cfg).init(jax.random.key(3), x, np.zeros((b, 1), np.int32),
                                                 np.ones((b, 1, 1, length), bool), c, index))(x3[:, :1], cache)

  @jax.jit
  def run(variables, x3, cache):
    out = {}
    for t in (1, 3):                                  # one decode token, and a chunk of 3
      positions = jnp.broadcast_to(index + jnp.arange(t), (b, t))
      valid = (jnp.arange(length)[None, :] < index + t) & (jnp.arange(length)[None, :] >= jnp.array([0, 2])[:, None])
      causal = jnp.arange(length)[None, :] <= (index + jnp.arange(t))[:, None]
      mask = (causal[None] & valid[:, None, :])[:, None]                         # row 1 left-padded by 2
      for form in FORMS:
        absorb, fold = form if form else (False, None)
        out[t, str(form)] = MLA(cfg, absorb=absorb, fold=fold).apply(variables, x3[:, :t], positions, mask, cache,
                                                                jnp.int32(index))
    return out

  out = run(variables, x3, cache)
  for t in (1, 3):
    y_naive, c_naive = out[t, str(None)]
    for form in FORMS[1:]:
      y_abs, c_abs = out[t, str(form)]
      np.testing.assert_allclose(np.asarray(y_abs), np.asarray(y_naive), atol=1e-5, rtol=1e-5, err_msg=str(form))
      for a, n in zip(jax.tree.leaves(c_abs), jax.tree.leaves(c_naive)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(n))


def test_absorbed_weight_folding_only_where_it_saves_weights():
  # bench: [64, 4, 48] query weight instead of [64, 4, 48] + [32, 4, 32]; [4, 32, 256] output weight
  # instead of [32, 4, 32] + [4, 32, 256].
  assert fold_absorbed_weights(ModelConfig.preset("bench")) == (True, True)
  # DeepSeek-V3 sizes: folding would triple the query weight and make the output weight ~4x o_proj.
  v3 = ModelConfig.preset("bench").replace(hidden_size=7168, num_attention_heads=128, q_lora_rank=1536,
                                           kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64,
                                           v_head_dim=128)
  assert fold_absorbed_weights(v3) == (False, False)
