"""KV cache: per layer, MLA's compressed latent + shared rope key, or GQA's K and V.

A cache is a plain dict pytree:
  {"layers": [per-layer dict], "key_mask": bool[B, L], "index": int32[]}
  MLA layer: {"latent": [B, L, kv_lora_rank], "k_rope": [B, L, qk_rope_head_dim]}  (that is MLA's point:
             kv_lora_rank + qk_rope_head_dim numbers per token, not 2 x heads x head_dim)
  GQA layer: {"k": [B, L, kv_heads, head_dim], "v": [B, L, kv_heads, head_dim]}
`index` is the next slot to write (the same for every row: prompts are left-padded to one length);
`key_mask` marks slots holding real tokens (left padding stays False).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from r1jax.model.config import ModelConfig


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> dict:
  """An empty cache for `batch` rows of up to `max_len` tokens."""
  dtype = cfg.jnp_dtype if dtype is None else dtype
  if cfg.attention == "mla":
    layer = lambda: {"latent": jnp.zeros((batch, max_len, cfg.kv_lora_rank), dtype),
                     "k_rope": jnp.zeros((batch, max_len, cfg.qk_rope_head_dim), dtype)}
  else:
    shape = (batch, max_len, cfg.num_kv_heads, cfg.gqa_head_dim)
    layer = lambda: {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}
  return {"layers": [layer() for _ in range(cfg.num_hidden_layers)],
          "key_mask": jnp.zeros((batch, max_len), bool),
          "index": jnp.zeros((), jnp.int32)}


def repeat_cache(cache: dict, num_samples: int) -> dict:
  """Repeats each row `num_samples` times (row b -> rows b*G .. b*G+G-1): one prefill serves G samples."""
  rep = lambda x: jnp.repeat(x, num_samples, axis=0)
  return {"layers": jax.tree.map(rep, cache["layers"]), "key_mask": rep(cache["key_mask"]),
          "index": cache["index"]}


def cache_bytes(cfg: ModelConfig, batch: int, max_len: int, dtype=jnp.float32) -> int:
  """Memory of a cache in bytes."""
  return cfg.num_hidden_layers * batch * max_len * cfg.cache_width * jnp.dtype(dtype).itemsize
