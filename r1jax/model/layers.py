"""Small layers: RMSNorm, SwiGLU MLP, rotary embeddings (half-split, interleaved, YaRN)."""
from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from r1jax.model.config import ModelConfig
from r1jax.model.runtime import DEFAULT, Runtime


def param(module: nn.Module, name: str, shape: Sequence[int], names: Sequence[str | None], cfg: ModelConfig,
          init=None):
  """A parameter with logical axis names, created in cfg.param_dtype (normal(initializer_range) by default)."""
  init = nn.initializers.normal(cfg.initializer_range) if init is None else init
  return module.param(name, nn.with_logical_partitioning(init, tuple(names)), tuple(shape), cfg.jnp_param_dtype)


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Sharding hint by logical names; a no-op outside `r1jax.sharding.mesh_rules`."""
  return nn.with_logical_constraint(x, tuple(names))


def rms_norm(x: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
  """HF order: normalise in fp32, cast back to the input dtype, then scale by the weight."""
  x32 = x.astype(jnp.float32)
  y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
  return weight.astype(x.dtype) * y.astype(x.dtype)


class RMSNorm(nn.Module):
  cfg: ModelConfig
  eps: float | None = None  # None = cfg.rms_norm_eps (MLA's latent norms always use 1e-6, as in HF)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    w = param(self, "weight", (x.shape[-1],), ("norm",), self.cfg, nn.initializers.ones)
    return rms_norm(x, w, self.cfg.rms_norm_eps if self.eps is None else self.eps)


class MLP(nn.Module):
  """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""
  cfg: ModelConfig
  width: int
  runtime: Runtime = DEFAULT

  @nn.compact
  def __call__(self, x_btd: jax.Array) -> jax.Array:
    cfg, d, dt = self.cfg, self.cfg.hidden_size, self.cfg.jnp_dtype
    wg = param(self, "gate_proj", (d, self.width), ("embed", "mlp"), cfg).astype(dt)
    wu = param(self, "up_proj", (d, self.width), ("embed", "mlp"), cfg).astype(dt)
    wd = param(self, "down_proj", (self.width, d), ("mlp", "embed"), cfg).astype(dt)
    if self.runtime.mlp_impl == "kernel":   # the routed-experts kernel with one expert that every row takes
      b, t, _ = x_btd.shape
      x_td = x_btd.reshape(b * t, d)
      ones = jnp.ones((b * t, 1), jnp.float32)
      y = self.runtime.kernels.routed_experts(x_td, jnp.zeros((b * t, 1), jnp.int32), ones, wg[None], wu[None],
                                              wd[None])
      return y.reshape(b, t, d)
    return swiglu(x_btd, stack_gate_up(wg, wu), wd, "BTD,DF->BTF", "BTF,FD->BTD")


def stack_gate_up(w_gate: jax.Array, w_up: jax.Array) -> jax.Array:
  """[..., D, F] gate and up weights -> one [..., D, 2, F] weight for `swiglu`.

  Stacking on a new axis rather than concatenating along F keeps F's sharding (the "mlp" / "expert_mlp"
  mesh axis) intact."""
  return jnp.stack([w_gate, w_up], axis=-2)


def swiglu(x, w_gate_up, w_down, spec_in: str, spec_out: str):
  """down(silu(x @ gate) * (x @ up)), with `spec_in` / `spec_out` the einsums of one projection, weights
  ending in the hidden width F (e.g. "BTD,DF->BTF" and "BTF,FD->BTD", or per expert block "NBD,NDF->NBF").

  `w_gate_up` comes from `stack_gate_up`: gate and up run as one matmul of twice the width, forward and
  backward, which on CPU takes ~10% off a bench training step compared with two matmuls.
  """
  lhs, rest = spec_in.split(",")
  w_spec, out_spec = rest.split("->")
  fused = f"{lhs},{w_spec[:-1]}G{w_spec[-1]}->{out_spec[:-1]}G{out_spec[-1]}"
  gu = jnp.einsum(fused, x, w_gate_up)
  h = jax.nn.silu(gu[..., 0, :]) * gu[..., 1, :]
  return jnp.einsum(spec_out, h, w_down)


# ---------------------------------------------------------------------------------------------- RoPE
def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
  return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_frequencies(dim: int, theta: float, rope_scaling: dict | None) -> tuple[np.ndarray, float]:
  """Inverse frequencies f32[dim/2] and the cos/sin amplitude ("attention_factor").

  Plain RoPE: theta^(-2i/dim). YaRN (Peng et al. 2023, as in HF `_compute_yarn_parameters` and the
  DeepSeek-V3 reference): frequencies below the `beta_fast` correction dimension are kept, those above
  `beta_slow` are divided by `factor`, and a linear ramp blends the band in between.
  """
  pos_freqs = theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
  inv_freq = 1.0 / pos_freqs
  if rope_scaling is None:
    return inv_freq.astype(np.float32), 1.0
  factor = float(rope_scaling["factor"])
  original = rope_scaling["original_max_position_embeddings"]
  beta_fast = rope_scaling.get("beta_fast") or 32
  beta_slow = rope_scaling.get("beta_slow") or 1

  def correction_dim(num_rotations):
    return dim * math.log(original / (num_rotations * 2 * math.pi)) / (2 * math.log(theta))

  low, high = correction_dim(beta_fast), correction_dim(beta_slow)
  if rope_scaling.get("truncate", True):
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, dim - 1)
  if low == high:
    high += 0.001  # avoids a division by zero, as HF does
  ramp = np.clip((np.arange(dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
  inv_freq = inv_freq / factor * ramp + inv_freq * (1.0 - ramp)

  attention_factor = rope_scaling.get("attention_factor")
  if attention_factor is None:
    mscale, mscale_all_dim = rope_scaling.get("mscale"), rope_scaling.get("mscale_all_dim")
    if mscale and mscale_all_dim:
      attention_factor = _yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all_dim)
    else:
      attention_factor = _yarn_mscale(factor)
  return inv_freq.astype(np.float32), float(attention_factor)


def yarn_softmax_scale(cfg: ModelConfig) -> float:
  """Softmax scale of attention logits. MLA with YaRN multiplies qk_head_dim^-0.5 by mscale^2."""
  scale = cfg.qk_head_dim ** -0.5
  rs = cfg.rope_scaling_dict
  if cfg.attention == "mla" and rs is not None and rs.get("mscale_all_dim"):
    m = _yarn_mscale(float(rs["factor"]), float(rs["mscale_all_dim"]))
    scale *= m * m
  return scale


def apply_rope(x_btnr: jax.Array, positions_bt: jax.Array, inv_freq: np.ndarray, amplitude: float,
               interleave: bool) -> jax.Array:
  """Rotates the last dim of x by position.

  interleave=False rotates pairs (x[i], x[i + R/2]) (Llama/Qwen "rotate_half"). interleave=True rotates
  adjacent pairs (x[2i], x[2i+1]) as DeepSeek's weights expect; like HF it writes the result de-interleaved
  ([rotated evens | rotated odds]), which leaves every q.k product unchanged.
  """
  angles = positions_bt[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B, T, R/2]
  cos = (jnp.cos(angles) * amplitude)[:, :, None, :]
  sin = (jnp.sin(angles) * amplitude)[:, :, None, :]
  x = x_btnr.astype(jnp.float32)
  if interleave:
    x1, x2 = x[..., 0::2], x[..., 1::2]
  else:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x_btnr.dtype)
