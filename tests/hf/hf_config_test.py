"""config.json <-> ModelConfig: field by field for each family, both RoPE spellings, export, and errors.

The config dicts below are the released config.json files (DeepSeek-V3, DeepSeek-R1-Distill-Qwen-1.5B,
Qwen3-0.6B, Qwen3-30B-A3B), trimmed of keys that only matter to remote code or generation.
"""
import copy
import math

import pytest

from r1jax.hf import HFConfigError, from_hf_config, infer_model_type, to_hf_config
from r1jax.hf.load import fp8_block_size
from r1jax.model import ModelConfig
from r1jax.model.layers import yarn_softmax_scale

DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1, "first_k_dense_replace": 3,
    "hidden_act": "silu", "hidden_size": 7168, "initializer_range": 0.02, "intermediate_size": 18432,
    "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v3",
    "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
    "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128, "num_experts_per_tok": 8,
    "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1, "pretraining_tp": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
    "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "seq_aux": True,
    "tie_word_embeddings": False, "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16",
    "transformers_version": "4.46.3", "use_cache": True, "v_head_dim": 128, "vocab_size": 129280,
}
R1_DISTILL_QWEN_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 131072, "max_window_layers": 21, "model_type": "qwen2",
    "num_attention_heads": 12, "num_hidden_layers": 28, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
    "rope_theta": 10000, "sliding_window": 4096, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
    "use_cache": True, "use_mrope": False, "use_sliding_window": False, "vocab_size": 151936,
}
QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "eos_token_id": 151645, "head_dim": 128, "hidden_act": "silu", "hidden_size": 1024,
    "initializer_range": 0.02, "intermediate_size": 3072, "max_position_embeddings": 40960,
    "max_window_layers": 28, "model_type": "qwen3", "num_attention_heads": 16, "num_hidden_layers": 28,
    "num_key_value_heads": 8, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000,
    "sliding_window": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}
QWEN3_30B_A3B = {
    "architectures": ["Qwen3MoeForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 151643, "decoder_sparse_step": 1, "eos_token_id": 151645, "head_dim": 128,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 6144,
    "max_position_embeddings": 40960, "max_window_layers": 48, "mlp_only_layers": [], "model_type": "qwen3_moe",
    "moe_intermediate_size": 768, "norm_topk_prob": True, "num_attention_heads": 32, "num_experts": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 48, "num_key_value_heads": 4, "output_router_logits": False,
    "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.001,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "bfloat16", "use_cache": True,
    "use_sliding_window": False, "vocab_size": 151936,
}


def _fields(cfg: ModelConfig, **expected):
  for k, v in expected.items():
    assert getattr(cfg, k) == v, f"{k}: {getattr(cfg, k)!r} != {v!r}"


def test_deepseek_v3_release():
  cfg = from_hf_config(DEEPSEEK_V3)
  _fields(cfg, attention="mla", vocab_size=129280, hidden_size=7168, intermediate_size=18432,
          num_hidden_layers=61, num_attention_heads=128, num_key_value_heads=None, max_position_embeddings=163840,
          n_routed_experts=256, n_shared_experts=1, moe_intermediate_size=2048, num_experts_per_tok=8, n_group=8,
          topk_group=4, routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=3,
          scoring_func="sigmoid", use_routing_bias=True, q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128,
          qk_rope_head_dim=64, v_head_dim=128, attention_bias=False, qk_norm=False, rope_theta=10000.0,
          rope_interleave=True, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16",
          param_dtype="bfloat16")
  assert cfg.rope_scaling_dict == {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096,
                                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
  # YaRN softmax scale (mscale 0.1*ln(40)+1, squared, over sqrt(192)) and 671B parameters (61 layers, no MTP).
  assert math.isclose(yarn_softmax_scale(cfg), 0.1352338, rel_tol=1e-6)
  assert abs(cfg.num_params() / 671.03e9 - 1) < 0.005
  assert fp8_block_size(DEEPSEEK_V3) == (128, 128)


def test_r1_distill_qwen():
  cfg = from_hf_config(R1_DISTILL_QWEN_1_5B)
  _fields(cfg, attention="gqa", vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
          num_attention_heads=12, num_key_value_heads=2, head_dim=None, max_position_embeddings=131072,
          n_routed_experts=0, attention_bias=True, qk_norm=False, rope_theta=10000.0, rope_scaling=None,
          rope_interleave=False, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16")
  assert cfg.gqa_head_dim == 128


def test_qwen3_dense():
  cfg = from_hf_config(QWEN3_0_6B)
  _fields(cfg, attention="gqa", hidden_size=1024, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
          intermediate_size=3072, attention_bias=False, qk_norm=True, rope_theta=1e6, rope_scaling=None,
          rope_interleave=False, tie_word_embeddings=True, n_routed_experts=0)


def test_qwen3_moe():
  cfg = from_hf_config(QWEN3_30B_A3B)
  _fields(cfg, attention="gqa", hidden_size=2048, num_hidden_layers=48, num_attention_heads=32,
          num_key_value_heads=4, head_dim=128, qk_norm=True, attention_bias=False, n_routed_experts=128,
          num_experts_per_tok=8, moe_intermediate_size=768, n_shared_experts=0, n_group=1, topk_group=1,
          routed_scaling_factor=1.0, norm_topk_prob=True, first_k_dense_replace=0, scoring_func="softmax",
          use_routing_bias=False, rope_theta=1e6, tie_word_embeddings=False)


def test_qwen3_moe_leading_mlp_only_layers_are_first_k_dense():
  cfg = from_hf_config({**QWEN3_30B_A3B, "mlp_only_layers": [1, 0]})
  assert cfg.first_k_dense_replace == 2
  assert to_hf_config(cfg)["mlp_only_layers"] == [0, 1]


def test_rope_parameters_spelling_equals_legacy():
  v5 = {k: v for k, v in DEEPSEEK_V3.items() if k not in ("rope_scaling", "rope_theta")}
  v5["rope_parameters"] = {"rope_type": "yarn", "rope_theta": 10000.0, **{
      k: v for k, v in DEEPSEEK_V3["rope_scaling"].items() if k != "type"}}
  assert from_hf_config(v5) == from_hf_config(DEEPSEEK_V3)
  plain = {k: v for k, v in QWEN3_0_6B.items() if k not in ("rope_scaling", "rope_theta")}
  plain["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0}
  assert from_hf_config(plain) == from_hf_config(QWEN3_0_6B)


def test_yarn_defaults_follow_transformers():
  # No original_max_position_embeddings: transformers uses max_position_embeddings; no factor: the ratio.
  hf = {**QWEN3_0_6B, "max_position_embeddings": 131072,
        "rope_scaling": {"rope_type": "yarn", "original_max_position_embeddings": 32768}}
  assert from_hf_config(hf).rope_scaling_dict["factor"] == 4.0
  hf = {**QWEN3_0_6B, "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
  assert from_hf_config(hf).rope_scaling_dict["original_max_position_embeddings"] == 40960


def test_dtype_argument_and_overrides():
  cfg = from_hf_config(QWEN3_0_6B, dtype="float32", rms_norm_eps=1e-5, remat="full")
  _fields(cfg, dtype="float32", param_dtype="float32", rms_norm_eps=1e-5, remat="full")
  assert from_hf_config({k: v for k, v in QWEN3_0_6B.items() if k != "torch_dtype"}).dtype == "float32"
  assert from_hf_config({**QWEN3_0_6B, "torch_dtype": None, "dtype": "bfloat16"}).dtype == "bfloat16"


@pytest.mark.parametrize("cfg", [
    ModelConfig.preset("tiny"), ModelConfig.preset("bench"), ModelConfig.preset("small"),
    ModelConfig.preset("tiny_qwen2"), ModelConfig.preset("tiny_qwen3_moe"),
    ModelConfig.preset("tiny_qwen3_moe", n_routed_experts=0),                       # qwen3 dense
    ModelConfig.preset("tiny_qwen3_moe", first_k_dense_replace=1),                   # mlp_only_layers [0]
    ModelConfig.preset("tiny", n_routed_experts=0, q_lora_rank=None, rope_scaling=None),  # dense MLA
], ids=["tiny", "bench", "small", "tiny_qwen2", "tiny_qwen3_moe", "qwen3", "qwen3_moe_dense0", "dense_mla"])
def test_export_round_trip(cfg):
  hf = to_hf_config(cfg)
  assert hf["model_type"] == infer_model_type(cfg)
  if not cfg.is_moe:   # a dense model's MoE fields are inert and are not exported: back to their defaults
    cfg = cfg.replace(**{f: ModelConfig.__dataclass_fields__[f].default for f in _MOE_FIELDS})
  assert from_hf_config(hf) == cfg


_MOE_FIELDS = ("n_shared_experts", "moe_intermediate_size", "num_experts_per_tok", "n_group", "topk_group",
               "routed_scaling_factor", "norm_topk_prob", "first_k_dense_replace", "scoring_func",
               "use_routing_bias")


def test_export_bias_free_gqa_as_qwen2():
  cfg = ModelConfig.preset("tiny_qwen2", attention_bias=False)
  assert infer_model_type(cfg) == "qwen2"       # written with zero q/k/v biases by r1jax.hf.save
  assert from_hf_config(to_hf_config(cfg)) == cfg.replace(attention_bias=True)


_DS, _Q2, _Q3, _QM = DEEPSEEK_V3, R1_DISTILL_QWEN_1_5B, QWEN3_0_6B, QWEN3_30B_A3B


@pytest.mark.parametrize("base, update, match", [
    (_Q2, {"model_type": "llama"}, r"model_type='llama' is not supported; supported: \('deepseek_v3', 'qwen2'"),
    (_Q2, {"rope_scaling": {"type": "linear", "factor": 2.0}}, r"rope_scaling\.rope_type='linear'"),
    (_Q2, {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0}}, r"rope_parameters\.rope_type='dynamic'"),
    (_Q2, {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, r"rope_type='llama3'"),
    (_Q2, {"use_sliding_window": True}, r"use_sliding_window=True"),
    (_Q2, {"layer_types": ["full_attention"] * 27 + ["sliding_attention"]}, r"layer_types="),
    (_Q2, {"use_mrope": True}, r"use_mrope=True"),
    (_Q2, {"hidden_act": "gelu"}, r"hidden_act='gelu'"),
    (_Q2, {"partial_rotary_factor": 0.5}, r"partial_rotary_factor=0.5"),
    (_Q2, {"rope_scaling": {"type": "yarn", "factor": 2.0, "foo": 1}}, r"unknown YaRN keys \['foo'\]"),
    (_DS, {"scoring_func": "softmax"}, r"deepseek_v3 config\.json: scoring_func='softmax' is not supported"),
    (_DS, {"topk_method": "greedy"}, r"topk_method='greedy'"),
    (_DS, {"attention_bias": True}, r"attention_bias=True"),
    (_DS, {"moe_layer_freq": 2}, r"moe_layer_freq=2"),
    (_DS, {"topk_group": 9}, r"topk_group=9"),                              # ModelConfig's own check
    (_Q3, {"attention_bias": True}, r"qwen3 config\.json: attention_bias=True.*o_proj"),
    (_QM, {"decoder_sparse_step": 2}, r"decoder_sparse_step=2"),
    (_QM, {"mlp_only_layers": [3]}, r"mlp_only_layers=\[3\]"),
    (_QM, {"hidden_size": None}, r"hidden_size=None"),
])
def test_unsupported_values_raise(base, update, match):
  with pytest.raises(HFConfigError, match=match):
    from_hf_config({**copy.deepcopy(base), **update})


def test_missing_required_field_is_named():
  hf = {k: v for k, v in _DS.items() if k != "kv_lora_rank"}
  with pytest.raises(HFConfigError, match=r"required field 'kv_lora_rank' is missing"):
    from_hf_config(hf)


def test_unsupported_quantization_raises():
  with pytest.raises(HFConfigError, match=r"quant_method='gptq'"):
    fp8_block_size({"quantization_config": {"quant_method": "gptq"}})


@pytest.mark.parametrize("cfg, model_type, match", [
    (ModelConfig.preset("tiny", scoring_func="softmax", use_routing_bias=False), None, r"scoring_func='softmax'"),
    (ModelConfig.preset("tiny_qwen3_moe", n_shared_experts=1), None, r"n_shared_experts=1"),
    (ModelConfig.preset("tiny_qwen3_moe", n_group=2, topk_group=1), None, r"n_group=2"),
    (ModelConfig.preset("tiny_qwen2"), "qwen3", r"qk_norm=False"),
    (ModelConfig.preset("tiny_qwen2"), "deepseek_v3", r"attention='gqa'"),
    (ModelConfig.preset("tiny_qwen2"), "llama", r"model_type='llama' is not supported"),
])
def test_export_errors(cfg, model_type, match):
  with pytest.raises(HFConfigError, match=match):
    to_hf_config(cfg, model_type)
