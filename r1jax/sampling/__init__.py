"""Sampling: the jitted batched sampler (prefill each prompt once, decode G samples with a KV cache) and the
rollout path on top of it (prompts -> sample -> decode -> score) that RL, rejection sampling and evaluation share.

    from r1jax.sampling import sample
    out = sample(cfg, variables, prompts_bp, mask_bp, rng=key, num_samples=8, max_new_tokens=64, eos_id=3)
    from r1jax.sampling.rollout import RewardScorer, RolloutSettings, rollout
"""
from r1jax.sampling.sampler import DECODE_MOE_IMPLS, SampleOutput, sample
