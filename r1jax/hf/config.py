"""Hugging Face config.json <-> ModelConfig, for model_type deepseek_v3, qwen2, qwen3 and qwen3_moe.

    cfg = from_hf_config(json.load(open("config.json")))          # raises HFConfigError on anything unsupported
    hf = to_hf_config(cfg)                                         # a config.json dict transformers loads

Every field that changes the forward pass is either mapped or checked: a value r1jax cannot reproduce
(sliding-window attention, "linear" RoPE scaling, softmax scoring for deepseek_v3, ...) raises an error
naming the field and its value, so a checkpoint is never silently run with the wrong numerics.
Fields that only matter to training in PyTorch (dropout, aux-loss coefficients, tensor-parallel plans)
or to generation (token ids) are ignored here.

Both RoPE spellings are read: the legacy top-level `rope_theta` + `rope_scaling` dict (what the Hub's
config.json files hold) and transformers v5's `rope_parameters` dict (rope_type, rope_theta, ...). We write
the legacy spelling, which transformers v4 and v5 both read.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

from r1jax.model.config import ConfigError, ModelConfig

SUPPORTED_MODEL_TYPES = ("deepseek_v3", "qwen2", "qwen3", "qwen3_moe")
ARCHITECTURES = {
    "deepseek_v3": "DeepseekV3ForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
# config.json spells the checkpoint dtype "torch_dtype" (transformers v4) or "dtype" (v5).
_DTYPE_NAMES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16",
                "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
# YaRN keys ModelConfig keeps (the rest of a rope dict is checked, then dropped).
_YARN_KEEP = ("factor", "original_max_position_embeddings", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
              "attention_factor", "truncate")


class HFConfigError(ValueError):
  """A config.json value that r1jax cannot reproduce (names the field and the value)."""


def _unsupported(model_type: str, field: str, value: Any, why: str):
  raise HFConfigError(f"{model_type} config.json: {field}={value!r} is not supported: {why}")


def checkpoint_dtype(hf: Mapping[str, Any]) -> str:
  """The dtype the checkpoint was saved in ("float32" when config.json does not say)."""
  name = hf.get("torch_dtype") or hf.get("dtype") or "float32"
  name = str(name).replace("torch.", "")
  if name not in _DTYPE_NAMES:
    raise HFConfigError(f"config.json: torch_dtype={name!r} is not supported; supported: {sorted(_DTYPE_NAMES)}")
  return _DTYPE_NAMES[name]


def _rope(hf: Mapping[str, Any], mt: str) -> tuple[float, dict | None]:
  """(rope_theta, YaRN dict or None) from either RoPE spelling."""
  params = hf.get("rope_parameters")
  if params is not None and not isinstance(params, Mapping):
    _unsupported(mt, "rope_parameters", params, "expected one dict (per-layer-type RoPE is not supported)")
  params = dict(params or {})
  if params and all(isinstance(v, Mapping) for v in params.values()):
    _unsupported(mt, "rope_parameters", params, "per-layer-type RoPE parameters are not supported")
  legacy = hf.get("rope_scaling")
  if legacy is not None and not isinstance(legacy, Mapping):
    _unsupported(mt, "rope_scaling", legacy, "expected a dict or null")
  scaling = {**dict(legacy or {}), **params}
  theta = scaling.pop("rope_theta", None)
  if theta is None:
    theta = hf.get("rope_theta", 10000.0)
  kind = scaling.get("rope_type", scaling.get("type", "default"))
  field = "rope_parameters" if params else "rope_scaling"
  prf = scaling.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0))
  if prf not in (None, 1, 1.0):
    _unsupported(mt, "partial_rotary_factor", prf, "r1jax rotates the whole rope dimension")
  if kind in (None, "default"):
    return float(theta), None
  if kind != "yarn":
    _unsupported(mt, f"{field}.rope_type", kind, "the only RoPE scaling r1jax implements is 'yarn'")
  unknown = set(scaling) - set(_YARN_KEEP) - {"type", "rope_type", "partial_rotary_factor"}
  if unknown:
    _unsupported(mt, field, dict(scaling), f"unknown YaRN keys {sorted(unknown)}")
  yarn = {"type": "yarn"}
  yarn.update({k: scaling[k] for k in _YARN_KEEP if scaling.get(k) is not None})
  # As transformers does: a top-level original_max_position_embeddings wins (Phi-3 style), else the
  # rope dict's, else max_position_embeddings; a missing factor is the ratio of the two lengths.
  if hf.get("original_max_position_embeddings") is not None:
    yarn["original_max_position_embeddings"] = hf["original_max_position_embeddings"]
  yarn.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
  if "factor" not in yarn:
    yarn["factor"] = hf["max_position_embeddings"] / yarn["original_max_position_embeddings"]
  yarn["original_max_position_embeddings"] = int(yarn["original_max_position_embeddings"])
  return float(theta), yarn


def _common(hf: Mapping[str, Any], mt: str) -> dict:
  act = hf.get("hidden_act", "silu")
  if act not in ("silu", "swish"):
    _unsupported(mt, "hidden_act", act, "r1jax's MLPs are SwiGLU (silu)")
  theta, yarn = _rope(hf, mt)
  out = dict(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"], intermediate_size=hf["intermediate_size"],
      num_hidden_layers=hf["num_hidden_layers"], num_attention_heads=hf["num_attention_heads"],
      max_position_embeddings=hf.get("max_position_embeddings", 4096), rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
      tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_theta=theta, rope_scaling=yarn,
  )
  if hf.get("initializer_range"):
    out["initializer_range"] = hf["initializer_range"]
  return out


def _check_no_sliding_window(hf: Mapping[str, Any], mt: str) -> None:
  if hf.get("use_sliding_window"):
    _unsupported(mt, "use_sliding_window", hf["use_sliding_window"], "r1jax has full causal attention only")
  layer_types = hf.get("layer_types") or []
  if any(t != "full_attention" for t in layer_types):
    _unsupported(mt, "layer_types", layer_types, "r1jax has full causal attention only")


def _deepseek_v3(hf: Mapping[str, Any]) -> dict:
  mt = "deepseek_v3"
  if hf.get("attention_bias"):
    _unsupported(mt, "attention_bias", hf["attention_bias"], "r1jax's MLA projections have no biases")
  scoring = hf.get("scoring_func", "sigmoid")
  if scoring != "sigmoid":
    _unsupported(mt, "scoring_func", scoring, "deepseek_v3 routing is sigmoid scoring (HF ignores this field)")
  topk_method = hf.get("topk_method", "noaux_tc")
  if topk_method != "noaux_tc":
    _unsupported(mt, "topk_method", topk_method, "deepseek_v3 routing is 'noaux_tc' (bias-corrected, "
                 "group-limited top-k); HF's native code ignores this field and would run noaux_tc anyway")
  if hf.get("moe_layer_freq", 1) != 1:
    _unsupported(mt, "moe_layer_freq", hf["moe_layer_freq"], "only 'first k dense, then every layer MoE' (1)")
  if hf.get("pretraining_tp", 1) not in (None, 1):
    _unsupported(mt, "pretraining_tp", hf["pretraining_tp"], "must be 1")
  q_lora = hf.get("q_lora_rank")
  n_routed = hf.get("n_routed_experts") or 0
  out = _common(hf, mt)
  out.update(
      attention="mla", q_lora_rank=q_lora or None, kv_lora_rank=hf["kv_lora_rank"],
      qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
      v_head_dim=hf["v_head_dim"], rope_interleave=bool(hf.get("rope_interleave", True)),
      # MLA has one K/V per head after the up-projection: HF's num_key_value_heads (often left at its
      # default 128 in tiny configs) plays no role, so it is not carried over.
      num_key_value_heads=None,
  )
  first_dense = hf.get("first_k_dense_replace") or 0
  if n_routed and first_dense < hf["num_hidden_layers"]:
    out.update(
        n_routed_experts=n_routed, n_shared_experts=hf.get("n_shared_experts") or 0,
        moe_intermediate_size=hf["moe_intermediate_size"], num_experts_per_tok=hf["num_experts_per_tok"],
        n_group=hf.get("n_group") or 1, topk_group=hf.get("topk_group") or 1,
        routed_scaling_factor=float(hf.get("routed_scaling_factor", 1.0)),
        norm_topk_prob=bool(hf.get("norm_topk_prob", True)), first_k_dense_replace=first_dense,
        scoring_func="sigmoid", use_routing_bias=True,
    )
  return out


def _gqa(hf: Mapping[str, Any], mt: str) -> dict:
  _check_no_sliding_window(hf, mt)
  if hf.get("use_mrope"):
    _unsupported(mt, "use_mrope", hf["use_mrope"], "multimodal RoPE is not implemented")
  out = _common(hf, mt)
  out.update(attention="gqa", num_key_value_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
             head_dim=hf.get("head_dim"), rope_interleave=False)
  if mt == "qwen2":
    out.update(attention_bias=True)  # Qwen2 always has q/k/v biases (and never an o_proj bias)
  else:
    if hf.get("attention_bias"):
      _unsupported(mt, "attention_bias", hf["attention_bias"],
                   f"{mt} puts a bias on o_proj too, which r1jax's attention does not have")
    out.update(qk_norm=True)
  return out


def _qwen3_moe(hf: Mapping[str, Any]) -> dict:
  mt = "qwen3_moe"
  out = _gqa(hf, mt)
  num_experts = hf.get("num_experts") or hf.get("num_local_experts") or 0
  if not num_experts:
    return out
  n = hf["num_hidden_layers"]
  step = hf.get("decoder_sparse_step", 1)
  mlp_only = sorted(hf.get("mlp_only_layers") or [])
  # HF: layer i is MoE iff i not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0. r1jax's model
  # has "the first k layers dense, the rest MoE", so only a prefix of dense layers maps onto it.
  if step != 1:
    _unsupported(mt, "decoder_sparse_step", step, "r1jax supports step 1 (every layer MoE, except a "
                 "leading run of dense layers given by mlp_only_layers=[0, ..., k-1])")
  if mlp_only != list(range(len(mlp_only))) or len(mlp_only) > n:
    _unsupported(mt, "mlp_only_layers", hf.get("mlp_only_layers"), "r1jax's model has dense layers only as a "
                 "prefix [0, ..., k-1] (first_k_dense_replace)")
  out.update(
      n_routed_experts=num_experts, n_shared_experts=0, moe_intermediate_size=hf["moe_intermediate_size"],
      num_experts_per_tok=hf["num_experts_per_tok"], n_group=1, topk_group=1, routed_scaling_factor=1.0,
      norm_topk_prob=bool(hf.get("norm_topk_prob", False)), first_k_dense_replace=len(mlp_only),
      scoring_func="softmax", use_routing_bias=False,
  )
  return out


_FROM_HF = {
    "deepseek_v3": _deepseek_v3,
    "qwen2": lambda hf: _gqa(hf, "qwen2"),
    "qwen3": lambda hf: _gqa(hf, "qwen3"),
    "qwen3_moe": _qwen3_moe,
}


def from_hf_config(hf: Mapping[str, Any], *, dtype: str | None = None, **overrides) -> ModelConfig:
  """Maps a Hugging Face config.json dict onto a ModelConfig.

  Args:
    hf: the parsed config.json.
    dtype: compute and parameter dtype ("float32", "bfloat16", "float16"); None = the checkpoint's
      (`torch_dtype` / `dtype` in config.json, float32 when absent).
    **overrides: further ModelConfig fields (e.g. remat="full", param_dtype="float32").

  Returns:
    The ModelConfig.

  Raises:
    HFConfigError: unknown model_type (the message lists the supported ones), a missing required field,
      or a value r1jax cannot reproduce (the message names the field and the value).
  """
  mt = hf.get("model_type")
  if mt not in _FROM_HF:
    raise HFConfigError(f"config.json: model_type={mt!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
  try:
    fields = _FROM_HF[mt](hf)
  except KeyError as e:
    raise HFConfigError(f"{mt} config.json: required field {e.args[0]!r} is missing") from None
  dt = dtype or checkpoint_dtype(hf)
  fields.update(dtype=dt, param_dtype=dt)
  fields.update(overrides)
  try:
    return ModelConfig(**fields)
  except ConfigError as e:
    raise HFConfigError(f"{mt} config.json maps onto an invalid ModelConfig: {e}") from e


# --------------------------------------------------------------------------------------------- export
def infer_model_type(cfg: ModelConfig) -> str:
  """The HF family a ModelConfig is exported as: MLA -> deepseek_v3; GQA MoE -> qwen3_moe; GQA with q/k
  norm -> qwen3; other GQA -> qwen2 (its q/k/v biases are written as zeros when cfg has none)."""
  if cfg.attention == "mla":
    return "deepseek_v3"
  if cfg.is_moe:
    return "qwen3_moe"
  return "qwen3" if cfg.qk_norm else "qwen2"


def _cannot_export(mt: str, field: str, value: Any, why: str):
  raise HFConfigError(f"cannot export as {mt}: ModelConfig.{field}={value!r}: {why}")


def _rope_fields(cfg: ModelConfig) -> dict:
  out = {"rope_theta": cfg.rope_theta, "rope_scaling": None}
  if cfg.rope_scaling is not None:
    rs = {k: v for k, v in cfg.rope_scaling_dict.items() if k not in ("type", "rope_type")}
    out["rope_scaling"] = {"type": "yarn", "rope_type": "yarn", **rs}
  return out


def to_hf_config(cfg: ModelConfig, model_type: str | None = None, *, dtype: str | None = None) -> dict:
  """A config.json dict for `cfg` that transformers loads as `model_type` (inferred when None).

  Raises:
    HFConfigError: cfg uses a feature the HF family does not have (names the field).
  """
  mt = model_type or infer_model_type(cfg)
  if mt not in SUPPORTED_MODEL_TYPES:
    raise HFConfigError(f"model_type={mt!r} is not supported; supported: {SUPPORTED_MODEL_TYPES}")
  want_mla = mt == "deepseek_v3"
  if (cfg.attention == "mla") != want_mla:
    _cannot_export(mt, "attention", cfg.attention, f"{mt} uses {'mla' if want_mla else 'gqa'} attention")
  hf = dict(
      architectures=[ARCHITECTURES[mt]], model_type=mt, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
      intermediate_size=cfg.intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
      num_attention_heads=cfg.num_attention_heads, max_position_embeddings=cfg.max_position_embeddings,
      rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=cfg.tie_word_embeddings, hidden_act="silu",
      initializer_range=cfg.initializer_range, torch_dtype=dtype or cfg.param_dtype, **_rope_fields(cfg),
  )
  if mt == "deepseek_v3":
    if cfg.is_moe and cfg.scoring_func != "sigmoid":
      _cannot_export(mt, "scoring_func", cfg.scoring_func, "deepseek_v3 routing is sigmoid")
    hf.update(
        num_key_value_heads=cfg.num_attention_heads, q_lora_rank=cfg.q_lora_rank, kv_lora_rank=cfg.kv_lora_rank,
        qk_nope_head_dim=cfg.qk_nope_head_dim, qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim,
        rope_interleave=cfg.rope_interleave, attention_bias=False, scoring_func="sigmoid", topk_method="noaux_tc",
        moe_layer_freq=1, num_nextn_predict_layers=0,
    )
    if cfg.is_moe:
      hf.update(
          n_routed_experts=cfg.n_routed_experts, n_shared_experts=cfg.n_shared_experts,
          moe_intermediate_size=cfg.moe_intermediate_size, num_experts_per_tok=cfg.num_experts_per_tok,
          n_group=cfg.n_group, topk_group=cfg.topk_group, routed_scaling_factor=cfg.routed_scaling_factor,
          norm_topk_prob=cfg.norm_topk_prob, first_k_dense_replace=cfg.first_k_dense_replace)
    else:  # every layer dense: first_k_dense_replace = num_hidden_layers, the MoE fields are inert
      hf.update(n_routed_experts=1, n_shared_experts=0, moe_intermediate_size=cfg.moe_intermediate_size,
                num_experts_per_tok=1, n_group=1, topk_group=1, routed_scaling_factor=1.0,
                norm_topk_prob=True, first_k_dense_replace=cfg.num_hidden_layers)
    return hf

  hf.update(num_key_value_heads=cfg.num_kv_heads, use_sliding_window=False)
  if cfg.head_dim is not None:  # else HF derives hidden_size // num_attention_heads, as r1jax does
    hf.update(head_dim=cfg.head_dim)
  if mt == "qwen2":
    if cfg.qk_norm:
      _cannot_export(mt, "qk_norm", cfg.qk_norm, "qwen2 has no q/k norm (use qwen3)")
  else:
    if not cfg.qk_norm:
      _cannot_export(mt, "qk_norm", cfg.qk_norm, f"{mt} always applies q/k norm")
    if cfg.attention_bias:
      _cannot_export(mt, "attention_bias", cfg.attention_bias, f"{mt}'s attention_bias also adds an o_proj bias")
    hf.update(attention_bias=False)
  if mt != "qwen3_moe":
    if cfg.is_moe:
      _cannot_export(mt, "n_routed_experts", cfg.n_routed_experts, f"{mt} is dense (use qwen3_moe)")
    return hf
  if cfg.is_moe:
    bad = {"scoring_func": (cfg.scoring_func, "softmax"), "n_shared_experts": (cfg.n_shared_experts, 0),
           "n_group": (cfg.n_group, 1), "use_routing_bias": (cfg.use_routing_bias, False)}
    for field, (value, want) in bad.items():
      if value != want:
        _cannot_export(mt, field, value, f"qwen3_moe needs {want!r}")
    if not math.isclose(cfg.routed_scaling_factor, 1.0):
      _cannot_export(mt, "routed_scaling_factor", cfg.routed_scaling_factor, "qwen3_moe does not scale weights")
  hf.update(
      num_experts=cfg.n_routed_experts if cfg.is_moe else 0, moe_intermediate_size=cfg.moe_intermediate_size,
      num_experts_per_tok=cfg.num_experts_per_tok, norm_topk_prob=cfg.norm_topk_prob, decoder_sparse_step=1,
      mlp_only_layers=list(range(cfg.first_k_dense_replace)) if cfg.is_moe else [],
  )
  return hf
