"""ModelConfig: one frozen dataclass for the DeepSeek-V3 family and the dense Qwen2/Qwen3 families.

Field names follow Hugging Face's DeepseekV3Config / Qwen2Config where the concept exists, so that a
config.json maps onto it almost field by field (r1jax.hf does that mapping). Everything is validated at
construction: a config that cannot work fails here, before any tracing or compilation, with an error
that names the field and the value.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
from typing import Any, Mapping

import jax.numpy as jnp

ATTENTION_KINDS = ("mla", "gqa")
SCORING_FUNCS = ("sigmoid", "softmax")
REMAT_POLICIES = ("none", "full", "dots")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ROPE_SCALING_TYPES = ("yarn",)
# Fields of older ModelConfigs that now belong to r1jax.model.runtime.Runtime.
LEGACY_RUNTIME_FIELDS = ("moe_impl", "capacity_factor", "moe_block_size", "attention_impl", "mlp_impl")
_YARN_KEYS = ("type", "rope_type", "factor", "original_max_position_embeddings", "beta_fast", "beta_slow",
              "mscale", "mscale_all_dim", "attention_factor", "truncate")


class ConfigError(ValueError):
  """A ModelConfig field has a value the model cannot use."""


def _fail(field: str, value: Any, why: str):
  raise ConfigError(f"ModelConfig.{field}={value!r}: {why}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Architecture of an r1jax decoder. Defaults are the `bench` preset's sizes; see `preset`."""

  # --- sizes (HF names) ---
  vocab_size: int = 1024
  hidden_size: int = 256
  intermediate_size: int = 512          # dense SwiGLU width (dense layers only)
  num_hidden_layers: int = 4
  num_attention_heads: int = 4
  num_key_value_heads: int | None = None  # GQA kv heads; None = num_attention_heads
  head_dim: int | None = None           # GQA per-head width; None = hidden_size // num_attention_heads
  max_position_embeddings: int = 4096
  # --- MoE (DeepSeekMoE) ---
  n_routed_experts: int = 0             # 0 = a dense model
  n_shared_experts: int = 0             # shared experts, fused into one MLP of width moe_intermediate_size * n
  moe_intermediate_size: int = 128
  num_experts_per_tok: int = 2          # top-k
  n_group: int = 1                      # expert groups for group-limited (node-limited) routing
  topk_group: int = 1                   # groups each token may use
  routed_scaling_factor: float = 1.0    # multiplies routing weights after normalisation
  norm_topk_prob: bool = True           # normalise the k gathered weights to sum to 1
  first_k_dense_replace: int = 0        # layers [0, k) use the dense MLP
  scoring_func: str = "sigmoid"         # "sigmoid" (DeepSeek-V3) or "softmax" (Qwen3-MoE, Mixtral)
  use_routing_bias: bool = True         # e_score_correction_bias (aux-loss-free balancing), selection only
  # --- attention ---
  attention: str = "mla"                # "mla" (DeepSeek) or "gqa" (Qwen2/Qwen3)
  q_lora_rank: int | None = None        # MLA query latent rank; None/0 = a plain q projection
  kv_lora_rank: int = 32                # MLA compressed KV latent (the per-token cache)
  qk_nope_head_dim: int = 32
  qk_rope_head_dim: int = 16
  v_head_dim: int = 32
  attention_bias: bool = False          # GQA: bias on q/k/v projections (Qwen2)
  qk_norm: bool = False                 # GQA: per-head RMSNorm of q and k before RoPE (Qwen3)
  # --- position encoding ---
  rope_theta: float = 10000.0
  rope_scaling: Any = None              # None or a YaRN dict (HF keys); stored as sorted (key, value) pairs
  rope_interleave: bool | None = None   # pairs (2i, 2i+1) (DeepSeek); None = True for MLA, False for GQA
  # --- misc ---
  rms_norm_eps: float = 1e-6
  tie_word_embeddings: bool = False
  initializer_range: float = 0.02
  dtype: str = "float32"                # activation/compute dtype
  param_dtype: str = "float32"
  remat: str = "none"                   # "none" | "full" | "dots" (save matmul outputs only)

  # ------------------------------------------------------------------ construction and validation
  def __post_init__(self):
    rs = self.rope_scaling
    if isinstance(rs, Mapping):
      object.__setattr__(self, "rope_scaling", tuple(sorted(rs.items())) or None)
    elif rs is not None and not isinstance(rs, tuple):
      _fail("rope_scaling", rs, "must be None or a dict of YaRN parameters")
    if self.q_lora_rank == 0:
      object.__setattr__(self, "q_lora_rank", None)
    if self.rope_interleave is None:
      object.__setattr__(self, "rope_interleave", self.attention == "mla")
    self._validate()

  def _validate(self):
    positive = ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "max_position_embeddings"]
    for f in positive:
      v = getattr(self, f)
      if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
        _fail(f, v, "must be a positive integer")
    if self.attention not in ATTENTION_KINDS:
      _fail("attention", self.attention, f"must be one of {ATTENTION_KINDS}")
    if self.dtype not in DTYPES:
      _fail("dtype", self.dtype, f"must be one of {tuple(DTYPES)}")
    if self.param_dtype not in DTYPES:
      _fail("param_dtype", self.param_dtype, f"must be one of {tuple(DTYPES)}")
    if self.remat not in REMAT_POLICIES:
      _fail("remat", self.remat, f"must be one of {REMAT_POLICIES}")
    if not self.rms_norm_eps > 0:
      _fail("rms_norm_eps", self.rms_norm_eps, "must be > 0")
    if not self.rope_theta > 0:
      _fail("rope_theta", self.rope_theta, "must be > 0")
    if not self.initializer_range > 0:
      _fail("initializer_range", self.initializer_range, "must be > 0")

    if self.attention == "mla":
      for f in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
        v = getattr(self, f)
        if not isinstance(v, int) or v <= 0:
          _fail(f, v, "must be a positive integer for attention='mla'")
      if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank < 0):
        _fail("q_lora_rank", self.q_lora_rank, "must be None, 0 or a positive integer")
      if self.attention_bias:
        _fail("attention_bias", self.attention_bias, "MLA projections have no biases in r1jax")
      if self.qk_norm:
        _fail("qk_norm", self.qk_norm, "per-head q/k norm is a GQA (Qwen3) feature; MLA has latent norms")
      if self.num_key_value_heads not in (None, self.num_attention_heads):
        _fail("num_key_value_heads", self.num_key_value_heads,
              f"MLA has one K/V per head: must equal num_attention_heads={self.num_attention_heads}")
      if self.qk_rope_head_dim % 2:
        _fail("qk_rope_head_dim", self.qk_rope_head_dim, "must be even (RoPE rotates pairs)")
    else:
      if self.head_dim is None and self.hidden_size % self.num_attention_heads:
        _fail("num_attention_heads", self.num_attention_heads,
              f"does not divide hidden_size={self.hidden_size}; set head_dim explicitly")
      if self.head_dim is not None and (not isinstance(self.head_dim, int) or self.head_dim <= 0):
        _fail("head_dim", self.head_dim, "must be a positive integer")
      kv = self.num_key_value_heads
      if kv is not None and (not isinstance(kv, int) or kv <= 0 or self.num_attention_heads % kv):
        _fail("num_key_value_heads", kv,
              f"must be a positive divisor of num_attention_heads={self.num_attention_heads}")
      if self.gqa_head_dim % 2:
        _fail("head_dim", self.gqa_head_dim, "must be even (RoPE rotates pairs)")

    if self.n_routed_experts < 0:
      _fail("n_routed_experts", self.n_routed_experts, "must be >= 0 (0 = dense model)")
    if not 0 <= self.first_k_dense_replace <= self.num_hidden_layers:
      _fail("first_k_dense_replace", self.first_k_dense_replace,
            f"must be in [0, num_hidden_layers={self.num_hidden_layers}]")
    if self.is_moe:
      e, k = self.n_routed_experts, self.num_experts_per_tok
      if self.moe_intermediate_size <= 0:
        _fail("moe_intermediate_size", self.moe_intermediate_size, "must be positive")
      if self.n_shared_experts < 0:
        _fail("n_shared_experts", self.n_shared_experts, "must be >= 0")
      if not 1 <= k <= e:
        _fail("num_experts_per_tok", k, f"top-k must be in [1, n_routed_experts={e}]")
      if self.n_group < 1 or e % self.n_group:
        _fail("n_group", self.n_group, f"must be >= 1 and divide n_routed_experts={e}")
      if not 1 <= self.topk_group <= self.n_group:
        _fail("topk_group", self.topk_group, f"must be in [1, n_group={self.n_group}]")
      if k > self.topk_group * (e // self.n_group):
        _fail("num_experts_per_tok", k, f"exceeds the experts reachable in topk_group={self.topk_group} groups "
              f"of {e // self.n_group}")
      if self.scoring_func not in SCORING_FUNCS:
        _fail("scoring_func", self.scoring_func, f"must be one of {SCORING_FUNCS}")
      if not self.routed_scaling_factor > 0:
        _fail("routed_scaling_factor", self.routed_scaling_factor, "must be > 0")

    if self.rope_scaling is not None:
      rs = dict(self.rope_scaling)
      unknown = set(rs) - set(_YARN_KEYS)
      if unknown:
        _fail("rope_scaling", rs, f"unknown keys {sorted(unknown)}; known: {_YARN_KEYS}")
      kind = rs.get("rope_type", rs.get("type"))
      if kind not in ROPE_SCALING_TYPES:
        _fail("rope_scaling", rs, f"type {kind!r} is not supported; supported: {ROPE_SCALING_TYPES}")
      if not isinstance(rs.get("factor"), (int, float)) or rs["factor"] < 1:
        _fail("rope_scaling", rs, "YaRN needs a numeric 'factor' >= 1")
      if not isinstance(rs.get("original_max_position_embeddings"), int) or \
          rs["original_max_position_embeddings"] <= 0:
        _fail("rope_scaling", rs, "YaRN needs a positive integer 'original_max_position_embeddings'")

  # ------------------------------------------------------------------ derived values
  @property
  def is_moe(self) -> bool:
    return self.n_routed_experts > 0

  def is_moe_layer(self, i: int) -> bool:
    return self.is_moe and i >= self.first_k_dense_replace

  @property
  def num_kv_heads(self) -> int:
    return self.num_key_value_heads or self.num_attention_heads

  @property
  def gqa_head_dim(self) -> int:
    return self.head_dim or self.hidden_size // self.num_attention_heads

  @property
  def qk_head_dim(self) -> int:
    """Width of one head's query/key (MLA: nope + rope)."""
    if self.attention == "mla":
      return self.qk_nope_head_dim + self.qk_rope_head_dim
    return self.gqa_head_dim

  @property
  def rope_dim(self) -> int:
    """Width of the rotated part of q/k."""
    return self.qk_rope_head_dim if self.attention == "mla" else self.gqa_head_dim

  @property
  def rope_scaling_dict(self) -> dict | None:
    return None if self.rope_scaling is None else dict(self.rope_scaling)

  @property
  def jnp_dtype(self):
    return DTYPES[self.dtype]

  @property
  def jnp_param_dtype(self):
    return DTYPES[self.param_dtype]

  @property
  def cache_width(self) -> int:
    """Numbers cached per token per layer: MLA latent + shared rope key, or GQA K and V."""
    if self.attention == "mla":
      return self.kv_lora_rank + self.qk_rope_head_dim
    return 2 * self.num_kv_heads * self.gqa_head_dim

  def replace(self, **changes) -> "ModelConfig":
    if "rope_scaling" in changes and isinstance(changes["rope_scaling"], Mapping):
      changes["rope_scaling"] = dict(changes["rope_scaling"])
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict:
    d = dataclasses.asdict(self)
    d["rope_scaling"] = self.rope_scaling_dict
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    """The inverse of to_dict. Execution fields that older r1jax versions kept here (moe_impl,
    capacity_factor, moe_block_size, attention_impl, mlp_impl; now r1jax.model.runtime.Runtime) are
    dropped with a log line, so model directories written by them still load; any other unknown key fails."""
    d = dict(d)
    legacy = {k: d.pop(k) for k in LEGACY_RUNTIME_FIELDS if k in d}
    if legacy:
      logging.info("ModelConfig.from_dict: ignoring execution fields %s (pass a Runtime instead)", legacy)
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ConfigError(f"ModelConfig has no fields {sorted(unknown)}")
    return cls(**d)

  def num_params(self, active: bool = False) -> int:
    """Parameter count from the config (active=True counts only top-k routed experts per token)."""
    d = self.hidden_size
    n = self.vocab_size * d * (1 if self.tie_word_embeddings else 2) + d
    for i in range(self.num_hidden_layers):
      n += 2 * d + self._attention_params()
      if self.is_moe_layer(i):
        e = self.num_experts_per_tok if active else self.n_routed_experts
        n += d * self.n_routed_experts + e * 3 * d * self.moe_intermediate_size
        n += 3 * d * self.moe_intermediate_size * self.n_shared_experts
      else:
        n += 3 * d * self.intermediate_size
    return n

  def _attention_params(self) -> int:
    d, h = self.hidden_size, self.num_attention_heads
    if self.attention == "mla":
      qk = self.qk_head_dim
      q = d * h * qk if self.q_lora_rank is None else d * self.q_lora_rank + self.q_lora_rank + \
          self.q_lora_rank * h * qk
      kv = d * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank + \
          self.kv_lora_rank * h * (self.qk_nope_head_dim + self.v_head_dim)
      return q + kv + h * self.v_head_dim * d
    hd, kv = self.gqa_head_dim, self.num_kv_heads
    n = d * h * hd + 2 * d * kv * hd + h * hd * d
    if self.attention_bias:
      n += h * hd + 2 * kv * hd
    if self.qk_norm:
      n += 2 * hd
    return n

  # ------------------------------------------------------------------ presets
  @classmethod
  def preset(cls, name: str, **overrides) -> "ModelConfig":
    """Named configurations: see PRESETS."""
    return cls(**{**preset_fields(name), **overrides})


def preset_fields(name: str) -> dict:
  """A fresh copy of preset `name`'s fields (a plain dict, safe to edit): what the experiment configs
  start their model sections from, so that `--config.model.hidden_size=...` overrides one field."""
  if name not in PRESETS:
    raise ValueError(f"unknown ModelConfig preset {name!r}; known: {sorted(PRESETS)}")
  return copy.deepcopy(PRESETS[name])


# `tiny`: every DeepSeek-V3 feature on (q_lora, group-limited routing, YaRN, shared experts, a dense first
# layer) at sizes that compile in seconds; tests use it.
_TINY = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=256, n_routed_experts=4, n_shared_experts=1, moe_intermediate_size=32,
    num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=2.5, first_k_dense_replace=1,
    attention="mla", q_lora_rank=16, kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8,
    rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 32,
                  "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
)
# `bench`: the configuration the benchmarks compare with PyTorch GRPO trainers (TRL) on the same CPU.
_BENCH = dict(
    vocab_size=1024, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
    max_position_embeddings=2048, n_routed_experts=8, n_shared_experts=1, moe_intermediate_size=128,
    num_experts_per_tok=2, n_group=2, topk_group=1, routed_scaling_factor=1.0, first_k_dense_replace=1,
    attention="mla", q_lora_rank=64, kv_lora_rank=32, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
)
# `small`: about 100M parameters in all (~30M active): a real MoE for a GPU or a patient CPU.
_SMALL = dict(
    vocab_size=32768, hidden_size=512, intermediate_size=1536, num_hidden_layers=8, num_attention_heads=8,
    max_position_embeddings=4096, n_routed_experts=20, n_shared_experts=1, moe_intermediate_size=256,
    num_experts_per_tok=2, n_group=4, topk_group=2, routed_scaling_factor=2.5, first_k_dense_replace=1,
    attention="mla", q_lora_rank=192, kv_lora_rank=128, qk_nope_head_dim=32, qk_rope_head_dim=32,
    v_head_dim=32,
)
# Dense Qwen2-style (GQA + qkv bias) and Qwen3-style (q/k norm) tiny models, e.g. distillation students.
_TINY_QWEN2 = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, attention="gqa", attention_bias=True, rope_theta=10000.0,
    max_position_embeddings=256, tie_word_embeddings=True,
)
_TINY_QWEN3_MOE = dict(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=16, attention="gqa", qk_norm=True, rope_theta=1e6,
    max_position_embeddings=256, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
    scoring_func="softmax", use_routing_bias=False, norm_topk_prob=True,
)
# The CPU experiments' models (configs/*.py); no vocab_size: the experiments set it from their tokenizer.
# `cpu_moe`: a DeepSeek-V3-style MoE (MLA, 4 routed experts top-2 + 1 shared, first layer dense), the
# R1-Zero base and R1 teacher. `cpu_qwen2`: the dense Qwen2-style distillation student (GQA with qkv bias,
# tied embeddings).
_CPU_MOE = dict(
    hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=256, n_routed_experts=4, n_shared_experts=1, moe_intermediate_size=96,
    num_experts_per_tok=2, n_group=1, topk_group=1, routed_scaling_factor=1.0, first_k_dense_replace=1,
    attention="mla", q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
    v_head_dim=32, initializer_range=0.02,
)
_CPU_QWEN2 = dict(
    hidden_size=96, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    attention="gqa", attention_bias=True, tie_word_embeddings=True, max_position_embeddings=256,
    rope_theta=10000.0, initializer_range=0.02,
)
PRESETS = {"tiny": _TINY, "bench": _BENCH, "small": _SMALL, "tiny_qwen2": _TINY_QWEN2,
           "tiny_qwen3_moe": _TINY_QWEN3_MOE, "cpu_moe": _CPU_MOE, "cpu_qwen2": _CPU_QWEN2}
