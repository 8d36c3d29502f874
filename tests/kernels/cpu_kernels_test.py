"""The CPU kernels against numpy: routed experts (uneven loads, an idle expert, padding, odd widths) and
absorbed MLA decode attention (masks with gaps, a fully masked row, lengths that are not whole vectors)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.kernels import cpu

pytestmark = pytest.mark.skipif(cpu._compiler() is None, reason="no C++ compiler on this machine")


def test_kernels_build_and_register():
  assert cpu.available()     # a compiler is present: a build failure must fail here, not fall back


def _experts_numpy(x, idx, w, wg, wu, wd):
  y = np.zeros(x.shape, np.float64)
  for t in range(x.shape[0]):
    for j in range(idx.shape[1]):
      if w[t, j] == 0:
        continue
      e = idx[t, j]
      g, u = x[t] @ wg[e].astype(np.float64), x[t] @ wu[e].astype(np.float64)
      y[t] += w[t, j] * ((g / (1 + np.exp(-g)) * u) @ wd[e])
  return y


@pytest.mark.parametrize("t, d, f, e, k, unit", [
    (64, 2, 3, 8, 2, "panel"), (13, 3, 1, 5, 3, "panel"), (1, 1, 2, 4, 1, "panel"), (70, 1, 2, 1, 1, "panel"),
    (64, 3, 5, 8, 2, "vector"), (13, 2, 6, 5, 3, "vector"), (20, 1, 1, 3, 2, "vector")])
def test_routed_experts_matches_numpy(t, d, f, e, k, unit):
  # Sizes in whole widest panels (16 or 64 floats), or in vectors (8 or 16 floats), which the kernel reads
  # in narrower panels (an odd number of vectors: one-vector panels).
  size = cpu.panel_width() if unit == "panel" else cpu.vector_width()
  d, f = d * size, f * size
  rng = np.random.default_rng(t)
  x = rng.normal(size=(t, d)).astype(np.float32)
  idx = np.stack([rng.permutation(e)[:k] for _ in range(t)]).astype(np.int32)
  idx[: t // 2] = np.sort(idx[: t // 2], axis=1) % 2      # uneven loads; experts >= 2 may get few rows
  idx[: t // 2, -1] = (idx[: t // 2, 0] + 1) % 2 if k > 1 else idx[: t // 2, -1]
  w = rng.uniform(0.1, 1.0, size=(t, k)).astype(np.float32)
  w[t // 3] = 0.0                                          # a padding token: no contribution
  wg, wu = rng.normal(size=(2, e, d, f)).astype(np.float32) / np.sqrt(d)
  wd = rng.normal(size=(e, f, d)).astype(np.float32) / np.sqrt(f)
  got = np.asarray(jax.jit(cpu.routed_experts)(x, idx, w, wg, wu, wd))
  np.testing.assert_allclose(got, _experts_numpy(x, idx, w, wg, wu, wd), rtol=2e-5, atol=2e-5)


def test_panel_widths_halve_down_to_one_vector():
  p, v = cpu.panel_width(), cpu.vector_width()
  assert (p, v) in ((16, 8), (64, 16))
  assert cpu.panel_width(3 * p) == p and cpu.panel_width(p + p // 2) == p // 2 and cpu.panel_width(3 * v) == v
  assert cpu.panel_width(v + 1) == 0 and cpu.panel_width(v // 2) == 0


def test_routed_experts_rejects_sizes_that_are_not_whole_vectors():
  w = cpu.vector_width()
  assert cpu.supports_experts(2 * w, w) and cpu.supports_experts(3 * w, 5 * w)
  assert not cpu.supports_experts(2 * w, w + 1) and not cpu.supports_experts(w // 2, w)
  with pytest.raises(ValueError, match="multiples of the kernel's vector width"):
    cpu.routed_experts(jnp.zeros((2, w)), jnp.zeros((2, 1), jnp.int32), jnp.ones((2, 1)),
                       jnp.zeros((2, w, w + 1)), jnp.zeros((2, w, w + 1)), jnp.zeros((2, w + 1, w)))


def test_routed_experts_rejects_other_dtypes():
  x = jnp.zeros((2, 8), jnp.bfloat16)
  w = jnp.ones((2, 1), jnp.float32)
  with pytest.raises(TypeError, match="x is bfloat16"):
    cpu.routed_experts(x, jnp.zeros((2, 1), jnp.int32), w, *(jnp.zeros((2, 8, 8)),) * 3)


def _attention_numpy(q_lat, q_pe, latent, k_rope, mask, scale):
  s = (np.einsum("bnr,bsr->bns", q_lat, latent, dtype=np.float64)
       + np.einsum("bnp,bsp->bns", q_pe, k_rope, dtype=np.float64)) * scale
  s = np.where(mask[:, None, :], s, -1e30)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  return np.einsum("bns,bsr->bnr", p, latent)


@pytest.mark.parametrize("b, n, r, p, l", [(6, 4, 32, 16, 21), (3, 3, 20, 6, 9), (2, 1, 8, 8, 40)])
def test_mla_decode_attention_matches_numpy(b, n, r, p, l):
  rng = np.random.default_rng(l)
  q_lat, q_pe = rng.normal(size=(b, n, r)).astype(np.float32), rng.normal(size=(b, n, p)).astype(np.float32)
  latent, k_rope = rng.normal(size=(b, l, r)).astype(np.float32), rng.normal(size=(b, l, p)).astype(np.float32)
  mask = rng.random((b, l)) < 0.7                       # gaps anywhere
  mask[0] = False                                       # no slot at all: uniform over all slots
  mask[1, :] = False
  mask[1, l - 1] = True                                 # one slot
  scale = 0.3
  got = np.asarray(jax.jit(cpu.mla_decode_attention, static_argnums=5)(q_lat, q_pe, latent, k_rope, mask, scale))
  np.testing.assert_allclose(got, _attention_numpy(q_lat, q_pe, latent, k_rope, mask, scale), rtol=2e-5,
                             atol=2e-5)


def test_the_moe_kernel_dispatch_is_forward_only():
  from r1jax.model import expert_mlp
  p = cpu.panel_width()
  x, w = jnp.ones((4, p)), jnp.ones((4, 1))
  weights = (jnp.ones((2, p, p)),) * 3
  f = lambda x: expert_mlp(x, jnp.zeros((4, 1), jnp.int32), w, jnp.ones(4), *weights, impl="kernel",
                             kernels=cpu)[0].sum()
  assert np.isfinite(float(f(x)))
  with pytest.raises(NotImplementedError, match="routed_experts is forward only"):
    jax.grad(f)(x)
  q, c, m = jnp.ones((2, 1, 8)), jnp.ones((2, 5, 8)), jnp.ones((2, 5), bool)
  g = lambda q: cpu.mla_decode_attention(q, q, c, c, m, 0.5).sum()
  assert np.isfinite(float(g(q)))
  with pytest.raises(NotImplementedError, match="mla_decode_attention is forward only"):
    jax.grad(g)(q)
