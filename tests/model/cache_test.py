"""KV-cache decoding equals the full forward pass: prefill + one token at a time, with left padding.

Also: MLA's absorbed decode form (scores against the cached latent) equals the naive form (per-head
keys/values rebuilt from the latent) on the same cache, and a cache is filled identically whether the
prompt is prefilled at once or in chunks.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.model import ModelConfig, apply_model, forward, init_cache, init_params, repeat_cache
from r1jax.model.attention import MLA

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
  return cfg, init_params(cfg, jax.random.key(1))


@pytest.fixture(scope="module")
def results(model):
  """Everything the tests compare, from one jitted program per preset (compiling is the slow part)."""
  cfg, params = model
  tokens, mask = _batch(cfg)
  g = 2

  @jax.jit
  def run(params, tokens, mask):
    full = forward(cfg, params, tokens, mask)
    # Prefill P tokens into a cache of P + STEPS slots, then feed the rest one token at a time.
    pre = apply_model(cfg, params, tokens[:, :P], attention_mask=mask[:, :P], cache=init_cache(cfg, B, P + STEPS))

    def step(cache, tm):
      out = apply_model(cfg, params, tm[0][:, None], attention_mask=tm[1][:, None], cache=cache)
      return out.cache, out.logits[:, 0]

    cache, steps = jax.lax.scan(step, pre.cache, (tokens[:, P:].T, mask[:, P:].T))
    decoded = jnp.concatenate([pre.logits, jnp.swapaxes(steps, 0, 1)], axis=1)
    # The same cache filled by one prefill of all P + STEPS tokens.
    whole = apply_model(cfg, params, tokens, attention_mask=mask, cache=init_cache(cfg, B, P + STEPS))
    # G copies of each row continue like the row itself.
    rep = apply_model(cfg, params, jnp.repeat(tokens[:, P:P + 1], g, axis=0),
                      attention_mask=jnp.repeat(mask[:, P:P + 1], g, axis=0), cache=repeat_cache(pre.cache, g))
    return dict(full=full, decoded=decoded, cache=cache, whole=whole, repeated=rep.logits[:, 0])

  out = jax.tree.map(np.asarray, run(params, tokens, mask))
  return out, np.asarray(mask, bool), g


def test_prefill_then_decode_equals_full_forward(results):
  out, real, _ = results
  # Padding positions have no meaningful logits (their queries attend to nothing valid).
  np.testing.assert_allclose(out["decoded"][real], out["full"][real], atol=2e-5, rtol=1e-5)
  assert int(out["cache"]["index"]) == P + STEPS
  np.testing.assert_array_equal(out["cache"]["key_mask"], real)


def test_one_prefill_fills_the_same_cache_as_prefill_plus_decode(results):
  out, real, _ = results
  np.testing.assert_allclose(out["whole"].logits[real], out["full"][real], atol=2e-5, rtol=1e-5)
  # Only slots of real tokens must agree: a padding query attends to nothing valid (uniform softmax
  # over whatever the cache holds), so its hidden state, and hence its cached key, is arbitrary.
  for a, b in zip(jax.tree.leaves(out["whole"].cache["layers"]), jax.tree.leaves(out["cache"]["layers"])):
    np.testing.assert_allclose(a[real], b[real], atol=2e-5)
  np.testing.assert_array_equal(out["whole"].cache["key_mask"], out["cache"]["key_mask"])


def test_repeat_cache_continues_each_row_like_its_source(results):
  out, _, g = results
  np.testing.assert_allclose(out["repeated"], np.repeat(out["full"][:, P], g, axis=0), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("t", [1, 3])
def test_mla_absorbed_equals_naive_on_the_same_cache(t):
  cfg = ModelConfig.preset("tiny")
  b, length, index = 2, 9, 4
  keys = jax.random.split(jax.random.key(3), 4)
  x = jax.random.normal(keys[0], (b, t, cfg.hidden_size))
  cache = {"latent": jax.random.normal(keys[1], (b, length, cfg.kv_lora_rank)),
           "k_rope": jax.random.normal(keys[2], (b, length, cfg.qk_rope_head_dim))}
  positions = jnp.broadcast_to(index + jnp.arange(t), (b, t))
  valid = jnp.arange(length)[None, :] < index + t
  valid = valid & (jnp.arange(length)[None, :] >= jnp.array([0, 2])[:, None])   # row 1 left-padded
  causal = jnp.arange(length)[None, :] <= (index + jnp.arange(t))[:, None]
  mask = (causal[None] & valid[:, None, :])[:, None]
  variables = MLA(cfg).init(keys[3], x, positions, mask, cache, jnp.int32(index))

  def run(absorb):
    return jax.jit(lambda v, x, c: MLA(cfg, absorb=absorb).apply(v, x, positions, mask, c, jnp.int32(index)))(
        variables, x, cache)

  (y_abs, c_abs), (y_naive, c_naive) = run(True), run(False)
  np.testing.assert_allclose(np.asarray(y_abs), np.asarray(y_naive), atol=1e-5, rtol=1e-5)
  for a, n in zip(jax.tree.leaves(c_abs), jax.tree.leaves(c_naive)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(n))
