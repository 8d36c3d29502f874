"""The r1jax model: a DeepSeek-V3-style MoE decoder (MLA, DeepSeekMoE) that also covers dense Qwen2/Qwen3.

    from r1jax.model import ModelConfig, init_variables, forward
    cfg = ModelConfig.preset("tiny")
    variables = init_variables(cfg, jax.random.key(0))
    logits = forward(cfg, variables, tokens, attention_mask=None, positions=None)   # f32[B, T, V]

ModelConfig is the architecture; Runtime (r1jax.model.runtime) how it is computed (MoE dispatch, kernels).
"""
from r1jax.model.cache import cache_bytes, init_cache, repeat_cache
from r1jax.model.config import ConfigError, ModelConfig, PRESETS, preset_fields
from r1jax.model.moe import expert_mlp, route, sequence_balance_loss, update_router_bias
from r1jax.model.runtime import Runtime
from r1jax.model.transformer import (ModelOutput, apply_model, attention_mask_b1ts, default_positions, forward,
                                     init_variables, param_shardings, param_specs, place_variables,
                                     sequence_logprobs, token_logprobs)
