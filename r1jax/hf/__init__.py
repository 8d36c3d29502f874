"""Import/export of Hugging Face safetensors checkpoints (deepseek_v3, qwen2, qwen3, qwen3_moe).

    from r1jax.hf import load, save
    cfg, variables = load("path/to/hf_model_dir")       # optional: dtype=, mesh=, rules=
    logits = r1jax.model.forward(cfg, variables, tokens, attention_mask=mask, positions=pos)
    save("out_dir", cfg, variables)                      # transformers.AutoModelForCausalLM loads it

Conversion CLI (HF <-> Orbax): python -m r1jax.hf.convert --from_hf DIR --to_orbax DIR (see convert.py).
"""
from r1jax.hf.config import (SUPPORTED_MODEL_TYPES, HFConfigError, from_hf_config, infer_model_type,
                             to_hf_config)
from r1jax.hf.load import Checkpoint, CheckpointError, dequantize_fp8, load, read_hf_config
from r1jax.hf.save import save

__all__ = [
    "load", "save", "from_hf_config", "to_hf_config", "infer_model_type", "read_hf_config",
    "dequantize_fp8", "Checkpoint", "HFConfigError", "CheckpointError", "SUPPORTED_MODEL_TYPES",
]
