"""Sampler throughput: r1jax `sample` against Hugging Face `generate` on the same architecture.

    python -m benchmarks.sampler [--runs 5] [--no-hf] [--decode-moe-impl auto]

Workload (a GRPO rollout at the `bench` preset): 8 random prompts of 16-32 tokens, left-padded to 32,
G = 8 samples each (64 sequences), 64 new tokens, temperature 1.0, no top-k / top-p, and no stop token
(r1jax: eos_id=None; transformers: min_new_tokens=64), so both sides decode the full 64 x 64 tokens.
transformers builds DeepseekV3ForCausalLM with random weights and the same sizes, and generates with
num_return_sequences=8 from the same 8 prompts.

Prints one JSON line per result:
  {"name": "r1jax_sample", "tokens_per_s": ..., "compile_s": ..., "run_s_median": ..., ...}
  {"name": "r1jax_memory", "maxrss_mib": ..., "kv_cache_mib": ..., ...}
  {"name": "hf_generate", "tokens_per_s": ..., ...}                (when torch + transformers are installed)
  {"name": "sampler_speedup", "ratio": r1jax / hf tokens per second, "target": 5.0}
Both sides run on the CPU in this one process, one side after the other (median of --runs timed runs
after a warm-up / compile). torch gets 2 intra-op threads, the dev machine's cores; XLA uses its
default thread pool over the same cores. The dev machine is shared: expect +-30% run to run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from r1jax.model import ModelConfig, cache_bytes, init_variables  # noqa: E402
from r1jax.sampling import sample  # noqa: E402

NUM_PROMPTS, GROUP, PROMPT_LEN, NEW_TOKENS = 8, 8, 32, 64
GENERATED = NUM_PROMPTS * GROUP * NEW_TOKENS


def _emit(**record):
  print(json.dumps(record), flush=True)


def _maxrss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _prompts(cfg: ModelConfig, seed: int = 0):
  """8 random prompts of 16-32 real tokens, left-padded to 32 (ids >= 4: no specials)."""
  rs = np.random.RandomState(seed)
  tokens = rs.randint(4, cfg.vocab_size, (NUM_PROMPTS, PROMPT_LEN)).astype(np.int32)
  lengths = rs.randint(16, PROMPT_LEN + 1, NUM_PROMPTS)
  mask = (np.arange(PROMPT_LEN)[None] >= PROMPT_LEN - lengths[:, None]).astype(np.int32)
  return np.where(mask > 0, tokens, 0), mask


def _timed(run, seed: int) -> float:
  t0 = time.perf_counter()
  n = run(seed)
  assert n == GENERATED, n   # full length: no early stop on either side
  return time.perf_counter() - t0


def make_r1jax(cfg: ModelConfig, decode_moe_impl: str):
  """Returns (run(seed) -> generated token count, compile seconds)."""
  params = init_variables(cfg, jax.random.key(0))
  tokens, mask = _prompts(cfg)
  kw = dict(num_samples=GROUP, max_new_tokens=NEW_TOKENS, temperature=1.0, eos_id=None,
            decode_moe_impl=decode_moe_impl)

  def run(seed):
    out = sample(cfg, params, tokens, mask, rng=jax.random.key(seed), **kw)
    return int(np.asarray(out.lengths).sum())        # fetching the result waits for it

  t0 = time.perf_counter()
  run(0)
  return run, time.perf_counter() - t0


def make_hf(cfg: ModelConfig):
  """Returns run(seed) -> generated token count for transformers' generate, or None without torch."""
  try:
    import torch
    import transformers
  except ImportError:
    return None
  torch.set_num_threads(2)  # fairness: the dev machine has 2 cores
  torch.manual_seed(0)
  hf_cfg = transformers.DeepseekV3Config(
      vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
      moe_intermediate_size=cfg.moe_intermediate_size, num_hidden_layers=cfg.num_hidden_layers,
      num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_attention_heads,
      n_shared_experts=cfg.n_shared_experts, n_routed_experts=cfg.n_routed_experts,
      routed_scaling_factor=cfg.routed_scaling_factor, kv_lora_rank=cfg.kv_lora_rank,
      q_lora_rank=cfg.q_lora_rank, qk_rope_head_dim=cfg.qk_rope_head_dim, v_head_dim=cfg.v_head_dim,
      qk_nope_head_dim=cfg.qk_nope_head_dim, n_group=cfg.n_group, topk_group=cfg.topk_group,
      num_experts_per_tok=cfg.num_experts_per_tok, first_k_dense_replace=cfg.first_k_dense_replace,
      max_position_embeddings=cfg.max_position_embeddings, pad_token_id=0, bos_token_id=2, eos_token_id=3)
  model = transformers.DeepseekV3ForCausalLM(hf_cfg).eval()
  tokens, mask = _prompts(cfg)
  inputs = dict(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask))
  gen = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=NEW_TOKENS,
             min_new_tokens=NEW_TOKENS, num_return_sequences=GROUP, pad_token_id=0, eos_token_id=3)

  def run(seed):
    torch.manual_seed(seed)
    with torch.inference_mode():
      out = model.generate(**inputs, **gen)
    return (out.shape[1] - PROMPT_LEN) * out.shape[0]

  run(0)  # warm-up
  return run


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--runs", type=int, default=5, help="timed runs per side (median reported)")
  ap.add_argument("--no-hf", action="store_true", help="skip the Hugging Face baseline")
  ap.add_argument("--decode-moe-impl", default="auto", help="r1jax decode-step MoE dispatch")
  args = ap.parse_args(argv)
  cfg = ModelConfig.preset("bench")

  # One side after the other: interleaving them run by run slowed transformers' generate ~35x here
  # (torch's and XLA's thread pools oversubscribe the 2 cores).
  ours, compile_s = make_r1jax(cfg, args.decode_moe_impl)
  ours_s = [_timed(ours, r + 1) for r in range(args.runs)]
  ours_med = statistics.median(ours_s)
  _emit(name="r1jax_sample", tokens_per_s=GENERATED / ours_med, run_s_median=ours_med, run_s_min=min(ours_s),
        compile_s=compile_s, generated_tokens=GENERATED, sequences=NUM_PROMPTS * GROUP, prompt_len=PROMPT_LEN,
        new_tokens=NEW_TOKENS, decode_moe_impl=args.decode_moe_impl, devices=jax.device_count(),
        backend=jax.default_backend())
  stats = jax.devices()[0].memory_stats() or {}   # None on CPU; filled on GPU/TPU
  _emit(name="r1jax_memory", maxrss_mib=_maxrss_mib(), jax_peak_bytes=stats.get("peak_bytes_in_use"),
        kv_cache_mib=cache_bytes(cfg, NUM_PROMPTS * GROUP, PROMPT_LEN + NEW_TOKENS - 1) / 2**20,
        params_mib=cfg.num_params() * 4 / 2**20)

  hf = None if args.no_hf else make_hf(cfg)
  if hf is None:
    return
  hf_s = [_timed(hf, r + 1) for r in range(args.runs)]
  hf_med = statistics.median(hf_s)
  import torch
  import transformers
  _emit(name="hf_generate", tokens_per_s=GENERATED / hf_med, run_s_median=hf_med, run_s_min=min(hf_s),
        generated_tokens=GENERATED, torch_threads=torch.get_num_threads(), transformers=transformers.__version__,
        torch=torch.__version__, maxrss_mib_after=_maxrss_mib())
  _emit(name="sampler_speedup", ratio=hf_med / ours_med, ratio_of_best_runs=min(hf_s) / min(ours_s), target=5.0)


if __name__ == "__main__":
  main()
