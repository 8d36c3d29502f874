"""RMSNorm, RoPE (half-split and interleaved) and YaRN against hand-computed values and numpy."""
import math

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model import ModelConfig
from r1jax.model.layers import apply_rope, rms_norm, rope_frequencies, yarn_softmax_scale

V3_YARN = {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096, "beta_fast": 32,
           "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}


def test_rms_norm_matches_numpy():
  x = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
  w = np.linspace(0.5, 1.5, 8).astype(np.float32)
  want = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * w
  np.testing.assert_allclose(jax.jit(rms_norm, static_argnums=2)(x, w, 1e-6), want, rtol=1e-5, atol=1e-6)


def test_yarn_frequencies_deepseek_v3_by_hand():
  inv_freq, amplitude = rope_frequencies(64, 10000.0, V3_YARN)
  # DeepSeek-V3: correction range low = floor(10.4) = 10, high = ceil(22.3) = 23 (notes 1.4).
  theta = [10000.0 ** (-2 * i / 64) for i in range(32)]
  assert math.isclose(inv_freq[0], 1.0, rel_tol=1e-7)
  for i in (0, 5, 10):                      # below low: unchanged
    assert math.isclose(inv_freq[i], theta[i], rel_tol=1e-6)
  for i in (23, 27, 31):                    # above high: divided by the factor
    assert math.isclose(inv_freq[i], theta[i] / 40, rel_tol=1e-6)
  ramp = (16 - 10) / (23 - 10)              # i = 16: theta_16 = 0.01, blended 6/13 of the way
  assert math.isclose(inv_freq[16], 0.01 / 40 * ramp + 0.01 * (1 - ramp), rel_tol=1e-6)
  assert amplitude == 1.0                   # mscale == mscale_all_dim -> cos/sin amplitude 1


def test_yarn_softmax_scale_deepseek_v3_by_hand():
  cfg = ModelConfig(attention="mla", qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128, kv_lora_rank=512,
                    rope_scaling=V3_YARN)
  m = 0.1 * math.log(40) + 1                # 1.368888
  assert math.isclose(yarn_softmax_scale(cfg), 192 ** -0.5 * m * m, rel_tol=1e-9)
  assert math.isclose(yarn_softmax_scale(cfg), 0.1352338, rel_tol=1e-6)
  assert math.isclose(yarn_softmax_scale(cfg.replace(rope_scaling=None)), 192 ** -0.5, rel_tol=1e-9)


def test_yarn_amplitude_without_mscale_keys():
  _, amp = rope_frequencies(16, 1e6, {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32})
  assert math.isclose(amp, 0.1 * math.log(4.0) + 1, rel_tol=1e-9)


def _rope_numpy_pairs(x, pos, inv_freq, pairs):
  """Rotates each (a, b) index pair by angle pos * inv_freq[j] (a complex multiplication)."""
  out = x.astype(np.float64).copy()
  for j, (a, b) in enumerate(pairs):
    ang = pos[..., None] * inv_freq[j]
    c, s = np.cos(ang), np.sin(ang)
    out[..., a] = x[..., a] * c - x[..., b] * s
    out[..., b] = x[..., b] * c + x[..., a] * s
  return out


def test_rope_half_split_and_interleaved():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 5, 3, 8)).astype(np.float32)
  pos = np.array([[0, 1, 2, 3, 4], [7, 8, 9, 10, 11]])
  inv_freq, _ = rope_frequencies(8, 10000.0, None)
  half = _rope_numpy_pairs(x, pos, inv_freq, [(i, i + 4) for i in range(4)])
  np.testing.assert_allclose(apply_rope(x, pos, inv_freq, 1.0, False), half, atol=1e-5)
  inter = _rope_numpy_pairs(x, pos, inv_freq, [(2 * i, 2 * i + 1) for i in range(4)])
  # r1jax writes the interleaved result de-interleaved (evens then odds), as HF does: same q.k products.
  got = np.asarray(apply_rope(x, pos, inv_freq, 1.0, True))
  np.testing.assert_allclose(got, np.concatenate([inter[..., 0::2], inter[..., 1::2]], -1), atol=1e-5)
  q, k = rng.normal(size=(2, 5, 3, 8)), rng.normal(size=(2, 5, 3, 8))
  qr = _rope_numpy_pairs(q, pos, inv_freq, [(2 * i, 2 * i + 1) for i in range(4)])
  kr = _rope_numpy_pairs(k, pos, inv_freq, [(2 * i, 2 * i + 1) for i in range(4)])
  dots = np.einsum("btnh,bsnh->bnts", np.asarray(apply_rope(q.astype(np.float32), pos, inv_freq, 1.0, True)),
                   np.asarray(apply_rope(k.astype(np.float32), pos, inv_freq, 1.0, True)))
  np.testing.assert_allclose(dots, np.einsum("btnh,bsnh->bnts", qr, kr), atol=1e-4)
