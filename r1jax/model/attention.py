"""Attention: DeepSeek MLA (multi-head latent attention) and GQA (Qwen2/Qwen3), with an optional KV cache.

Both take `mask_b1ts` (True = query t may attend key s) built once per forward by the transformer, and a
per-layer cache dict (see r1jax.model.cache) written at slot `cache_index`.

MLA (DeepSeek-V2/V3): queries go through an optional low-rank latent; keys/values are compressed into
one latent c (kv_lora_rank) plus a rope key k_pe shared by all heads. The cache holds only (c, k_pe):
kv_lora_rank + qk_rope_head_dim numbers per token instead of 2 x heads x head_dim. Decoding uses the
*absorbed* form: kv_b_proj's key half is folded into the query and its value half into the output, so
scores are taken directly against the cached rows (see `fold_absorbed_weights` for when these products
are taken once, on the weights, rather than per token).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig
from r1jax.model.layers import apply_rope, param, rms_norm, rope_frequencies, yarn_softmax_scale
from r1jax.model.runtime import DEFAULT, Runtime

_MASKED = -1e30  # finite, so fully-masked rows (left padding) give a uniform softmax instead of NaN


def _softmax_f32(scores: jax.Array, mask: jax.Array) -> jax.Array:
  return jax.nn.softmax(jnp.where(mask, scores.astype(jnp.float32), _MASKED), axis=-1)


def _write(cache_arr: jax.Array, new: jax.Array, index: jax.Array) -> jax.Array:
  """Writes new [B, T, ...] into cache [B, L, ...] at slots [index, index + T)."""
  start = (0, index) + (0,) * (cache_arr.ndim - 2)
  return jax.lax.dynamic_update_slice(cache_arr, new.astype(cache_arr.dtype), start)


def fold_absorbed_weights(cfg: ModelConfig) -> tuple[bool, bool]:
  """Whether absorbed decoding multiplies kv_b_proj into the query / output projections ahead of time.

  Folding trades two matmuls for one whose weight may be larger: the query side becomes [Q, N, R + rope]
  instead of [Q, N, nope + rope] then [R, N, nope] (Q: q_lora_rank or hidden), the output side
  [N, R, D] instead of [R, N, V] then [N, V, D]. A side is folded when that does not add weights (a
  decode step reads every weight once, so weights are its cost): yes for the small presets, no for
  DeepSeek-V3's sizes, where the folded output weight would be ~4x o_proj.
  """
  n, nope, rope, r, vd, d = (cfg.num_attention_heads, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim,
                             cfg.kv_lora_rank, cfg.v_head_dim, cfg.hidden_size)
  q = cfg.q_lora_rank or d
  return q * n * (r + rope) <= q * n * (nope + rope) + r * n * nope, n * r * d <= r * n * vd + n * vd * d


class MLA(nn.Module):
  cfg: ModelConfig
  absorb: bool | None = None  # None: absorbed form when decoding one token against a cache
  fold: tuple[bool, bool] | None = None  # absorbed form only; None = fold_absorbed_weights(cfg)
  runtime: Runtime = DEFAULT

  @nn.compact
  def __call__(self, x_btd, positions_bt, mask_b1ts, cache=None, cache_index=None):
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    d, n = cfg.hidden_size, cfg.num_attention_heads
    nope, rope, vd, r = cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim, cfg.kv_lora_rank
    ones = nn.initializers.ones

    # Queries: x -> [q_a -> norm ->] q_b, per head [nope | rope]. Keys/values: x -> [latent c | shared rope
    # key]; c is normalised (eps 1e-6 regardless of rms_norm_eps).
    if cfg.q_lora_rank is None:
      wq = param(self, "q_proj", (d, n, nope + rope), ("embed", "heads", "head_dim"), cfg).astype(dt)
    else:
      rq = cfg.q_lora_rank
      wqa = param(self, "q_a_proj", (d, rq), ("embed", "q_lora"), cfg).astype(dt)
      qa_norm = param(self, "q_a_layernorm", (rq,), ("norm",), cfg, ones)
      wq = param(self, "q_b_proj", (rq, n, nope + rope), ("q_lora", "heads", "head_dim"), cfg).astype(dt)
    wkva = param(self, "kv_a_proj_with_mqa", (d, r + rope), ("embed", "kv_lora"), cfg).astype(dt)
    kv_norm = param(self, "kv_a_layernorm", (r,), ("norm",), cfg, ones)
    wkvb = param(self, "kv_b_proj", (r, n, nope + vd), ("kv_lora", "heads", "head_dim"), cfg).astype(dt)
    wo = param(self, "o_proj", (n, vd, d), ("heads", "head_dim", "embed"), cfg).astype(dt)
    w_uk, w_uv = wkvb[..., :nope], wkvb[..., nope:]
    inv_freq, amp = rope_frequencies(rope, cfg.rope_theta, cfg.rope_scaling_dict)
    rotate = lambda x: apply_rope(x, positions_bt, inv_freq, amp, cfg.rope_interleave)
    scale, f32 = yarn_softmax_scale(cfg), jnp.float32
    absorb = self.absorb if self.absorb is not None else (cache is not None and x_btd.shape[1] == 1)
    fold_q, fold_o = False, False
    if absorb:
      fold_q, fold_o = self.fold if self.fold is not None else fold_absorbed_weights(cfg)

    # q_nope . (W_uk c) == (q_nope W_uk^T) . c: absorbed, queries live in the latent space [R | rope].
    # Folded, W_uk^T is multiplied into the query weight (inside a decode loop XLA computes such
    # loop-invariant weight products once, before the loop).
    if fold_q:
      wq = jnp.concatenate([jnp.einsum("QNH,RNH->QNR", wq[..., :nope], w_uk), wq[..., nope:]], axis=-1)
    if cfg.q_lora_rank is None:
      q_btnh = jnp.einsum("BTD,DNH->BTNH", x_btd, wq)
      ckv = jnp.einsum("BTD,DR->BTR", x_btd, wkva)
    else:
      if absorb:  # decoding: one matmul for [q_a | c | k_pe] (both latents are unsharded)
        proj = jnp.einsum("BTD,DK->BTK", x_btd, jnp.concatenate([wqa, wkva], axis=-1))
        q_a, ckv = proj[..., :rq], proj[..., rq:]
      else:
        q_a, ckv = jnp.einsum("BTD,DR->BTR", x_btd, wqa), jnp.einsum("BTD,DR->BTR", x_btd, wkva)
      q_btnh = jnp.einsum("BTQ,QNH->BTNH", rms_norm(q_a, qa_norm, 1e-6), wq)
    q_head, q_pe = q_btnh[..., :-rope], rotate(q_btnh[..., -rope:])   # q_head: nope part, or latent if folded
    c_btr, kpe_btp = rms_norm(ckv[..., :r], kv_norm, 1e-6), rotate(ckv[..., None, r:])[:, :, 0]

    new_cache = None
    if cache is not None:
      new_cache = {"latent": _write(cache["latent"], c_btr, cache_index),
                   "k_rope": _write(cache["k_rope"], kpe_btp, cache_index)}
      c_bsr, kpe_bsp = new_cache["latent"].astype(dt), new_cache["k_rope"].astype(dt)
    else:
      c_bsr, kpe_bsp = c_btr, kpe_btp

    if absorb:
      q_lat = q_head if fold_q else jnp.einsum("BTNH,RNH->BTNR", q_head, w_uk)
      if self.runtime.attention_impl == "kernel" and x_btd.shape[1] == 1:
        b, s = c_bsr.shape[:2]
        mask_bs = jnp.broadcast_to(mask_b1ts, (b, 1, 1, s))[:, 0, 0]
        o_lat = self.runtime.kernels.mla_decode_attention(q_lat[:, 0], q_pe[:, 0], c_bsr, kpe_bsp, mask_bs,
                                                          scale)[:, :, None]
      else:
        scores = (jnp.einsum("BTNR,BSR->BNTS", q_lat, c_bsr, preferred_element_type=f32)
                  + jnp.einsum("BTNP,BSP->BNTS", q_pe, kpe_bsp, preferred_element_type=f32))
        probs = _softmax_f32(scores * scale, mask_b1ts).astype(dt)
        o_lat = jnp.einsum("BNTS,BSR->BNTR", probs, c_bsr)   # this output order keeps XLA:CPU on its fast dot
      if fold_o:
        return jnp.einsum("BNTR,NRD->BTD", o_lat, jnp.einsum("RNV,NVD->NRD", w_uv, wo)), new_cache
      o_btnv = jnp.einsum("BNTR,RNV->BTNV", o_lat, w_uv)
    else:
      k_nope = jnp.einsum("BSR,RNH->BSNH", c_bsr, w_uk)
      v_bsnv = jnp.einsum("BSR,RNV->BSNV", c_bsr, w_uv)
      scores = (jnp.einsum("BTNH,BSNH->BNTS", q_head, k_nope, preferred_element_type=f32)
                + jnp.einsum("BTNP,BSP->BNTS", q_pe, kpe_bsp, preferred_element_type=f32))
      probs = _softmax_f32(scores * scale, mask_b1ts).astype(dt)
      o_btnv = jnp.einsum("BNTS,BSNV->BTNV", probs, v_bsnv)
    return jnp.einsum("BTNV,NVD->BTD", o_btnv, wo), new_cache


class GQA(nn.Module):
  """Grouped-query attention with optional qkv bias (Qwen2) and per-head q/k RMSNorm (Qwen3)."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_btd, positions_bt, mask_b1ts, cache=None, cache_index=None):
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_kv_heads, cfg.gqa_head_dim
    zeros, ones = nn.initializers.zeros, nn.initializers.ones
    wq = param(self, "q_proj", (d, n, h), ("embed", "heads", "head_dim"), cfg).astype(dt)
    wk = param(self, "k_proj", (d, k, h), ("embed", "kv_heads", "head_dim"), cfg).astype(dt)
    wv = param(self, "v_proj", (d, k, h), ("embed", "kv_heads", "head_dim"), cfg).astype(dt)
    wo = param(self, "o_proj", (n, h, d), ("heads", "head_dim", "embed"), cfg).astype(dt)
    q = jnp.einsum("BTD,DNH->BTNH", x_btd, wq)
    kk = jnp.einsum("BTD,DKH->BTKH", x_btd, wk)
    v = jnp.einsum("BTD,DKH->BTKH", x_btd, wv)
    if cfg.attention_bias:
      q = q + param(self, "q_bias", (n, h), ("heads", "head_dim"), cfg, zeros).astype(dt)
      kk = kk + param(self, "k_bias", (k, h), ("kv_heads", "head_dim"), cfg, zeros).astype(dt)
      v = v + param(self, "v_bias", (k, h), ("kv_heads", "head_dim"), cfg, zeros).astype(dt)
    if cfg.qk_norm:  # Qwen3: per-head RMSNorm before RoPE
      q = rms_norm(q, param(self, "q_norm", (h,), ("norm",), cfg, ones), cfg.rms_norm_eps)
      kk = rms_norm(kk, param(self, "k_norm", (h,), ("norm",), cfg, ones), cfg.rms_norm_eps)
    inv_freq, amp = rope_frequencies(h, cfg.rope_theta, cfg.rope_scaling_dict)
    q = apply_rope(q, positions_bt, inv_freq, amp, cfg.rope_interleave)
    kk = apply_rope(kk, positions_bt, inv_freq, amp, cfg.rope_interleave)

    new_cache = None
    if cache is not None:
      new_cache = {"k": _write(cache["k"], kk, cache_index), "v": _write(cache["v"], v, cache_index)}
      kk, v = new_cache["k"].astype(dt), new_cache["v"].astype(dt)

    b, t = q.shape[:2]
    q = q.reshape(b, t, k, n // k, h)
    scores = jnp.einsum("BTKGH,BSKH->BKGTS", q, kk, preferred_element_type=jnp.float32) * h ** -0.5
    probs = _softmax_f32(scores, mask_b1ts[:, :, None]).astype(dt)
    o = jnp.einsum("BKGTS,BSKH->BTKGH", probs, v).reshape(b, t, n, h)
    return jnp.einsum("BTNH,NHD->BTD", o, wo), new_cache
