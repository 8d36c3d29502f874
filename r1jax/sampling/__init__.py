"""Sampling: the jitted batched sampler (prefill each prompt once, decode G samples with a KV cache).

    from r1jax.sampling import sample
    out = sample(cfg, params, prompts_bp, mask_bp, rng=key, num_samples=8, max_new_tokens=64, eos_id=3)
"""
from r1jax.sampling.sampler import DECODE_MOE_IMPLS, SampleOutput, sample
