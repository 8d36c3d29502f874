"""ModelConfig: presets build, counts match the real parameters, every bad field fails clearly."""
import jax
import numpy as np
import pytest

from r1jax.model import ConfigError, ModelConfig, PRESETS, init_variables, preset_fields


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate_and_count(name):
  cfg = ModelConfig.preset(name)
  shapes = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes["params"]))
  assert n == cfg.num_params()


def test_bench_preset_is_the_benchmark_model():
  c = ModelConfig.preset("bench")
  assert (c.hidden_size, c.num_hidden_layers, c.first_k_dense_replace) == (256, 4, 1)
  assert (c.n_routed_experts, c.num_experts_per_tok, c.n_shared_experts, c.n_group, c.topk_group) == (8, 2, 1, 2, 1)
  assert (c.num_attention_heads, c.q_lora_rank, c.kv_lora_rank) == (4, 64, 32)
  assert (c.qk_nope_head_dim, c.qk_rope_head_dim, c.v_head_dim) == (32, 16, 32)
  assert (c.intermediate_size, c.moe_intermediate_size, c.vocab_size) == (512, 128, 1024)
  assert 80e6 <= ModelConfig.preset("small").num_params() <= 120e6


def test_cpu_presets_are_the_experiments_models():
  """configs/*.py build their models from these; vocab_size comes from each experiment's tokenizer."""
  moe, student = ModelConfig.preset("cpu_moe", vocab_size=296), ModelConfig.preset("cpu_qwen2", vocab_size=296)
  assert "vocab_size" not in PRESETS["cpu_moe"] and "vocab_size" not in PRESETS["cpu_qwen2"]
  assert (moe.attention, moe.n_routed_experts, moe.first_k_dense_replace) == ("mla", 4, 1)
  assert (moe.num_params(), moe.num_params(active=True)) == (729056, 581600)
  assert (student.attention, student.is_moe, student.attention_bias, student.tie_word_embeddings) == \
      ("gqa", False, True, True)
  assert student.num_params() == 333792


def test_preset_fields_is_a_fresh_copy():
  fields = preset_fields("tiny")
  fields["hidden_size"] = 1
  fields["rope_scaling"]["factor"] = 99.0
  assert PRESETS["tiny"]["hidden_size"] == 32 and PRESETS["tiny"]["rope_scaling"]["factor"] == 4.0
  assert ModelConfig(**preset_fields("cpu_moe")) == ModelConfig.preset("cpu_moe")
  with pytest.raises(ValueError, match="unknown ModelConfig preset 'huge'.*cpu_moe"):
    preset_fields("huge")


def test_config_is_hashable_and_round_trips():
  cfg = ModelConfig.preset("tiny")
  assert hash(cfg) == hash(ModelConfig(**cfg.to_dict())) and ModelConfig.from_dict(cfg.to_dict()) == cfg
  assert cfg.rope_scaling_dict["factor"] == 4.0
  assert cfg.replace(rope_scaling=None).rope_scaling is None
  assert ModelConfig.preset("tiny", q_lora_rank=0).q_lora_rank is None


BAD = [
    # (overrides on "tiny", field named in the error, a fragment of the reason)
    (dict(num_experts_per_tok=5), "num_experts_per_tok", "top-k"),
    (dict(n_group=3), "n_group", "divide"),
    (dict(topk_group=3), "topk_group", "n_group"),
    (dict(num_experts_per_tok=3, topk_group=1), "num_experts_per_tok", "reachable"),
    (dict(attention="gqa", hidden_size=30, num_attention_heads=4), "num_attention_heads", "divide"),
    (dict(attention="gqa", num_key_value_heads=3), "num_key_value_heads", "divisor"),
    (dict(attention="flash"), "attention", "mla"),
    (dict(hidden_size=0), "hidden_size", "positive"),
    (dict(vocab_size=-1), "vocab_size", "positive"),
    (dict(first_k_dense_replace=3), "first_k_dense_replace", "num_hidden_layers"),
    (dict(scoring_func="relu"), "scoring_func", "sigmoid"),
    (dict(rope_scaling={"type": "linear", "factor": 2.0}), "rope_scaling", "not supported"),
    (dict(rope_scaling={"type": "yarn", "factor": 0.5, "original_max_position_embeddings": 64}), "rope_scaling",
     "factor"),
    (dict(rope_scaling={"type": "yarn", "factor": 4.0}), "rope_scaling", "original_max_position_embeddings"),
    (dict(rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8, "betta": 1}),
     "rope_scaling", "unknown keys"),
    (dict(qk_rope_head_dim=7), "qk_rope_head_dim", "even"),
    (dict(dtype="float8"), "dtype", "one of"),
    (dict(remat="some"), "remat", "one of"),
    (dict(attention_bias=True), "attention_bias", "MLA"),
    (dict(qk_norm=True), "qk_norm", "GQA"),
    (dict(num_key_value_heads=2), "num_key_value_heads", "MLA"),
    (dict(rms_norm_eps=0.0), "rms_norm_eps", "> 0"),
    (dict(n_routed_experts=-2), "n_routed_experts", ">= 0"),
    (dict(routed_scaling_factor=0.0), "routed_scaling_factor", "> 0"),
    (dict(kv_lora_rank=0), "kv_lora_rank", "positive"),
]


@pytest.mark.parametrize("overrides,field,reason", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_field_names_field_and_value(overrides, field, reason):
  with pytest.raises(ConfigError) as e:
    ModelConfig.preset("tiny", **overrides)
  msg = str(e.value)
  assert msg.startswith(f"ModelConfig.{field}="), msg
  assert reason in msg, msg


def test_unknown_preset_lists_known():
  with pytest.raises(ValueError, match="tiny"):
    ModelConfig.preset("huge")
