"""Forward+backward throughput and MFU of the r1jax MoE model, and MoE cost scaling with expert count.

    python -m benchmarks.model_step [--batch 64 --seq 128 --impl sorted --dtype float32]

Prints one JSON line per result. MFU = achieved model FLOP/s / f32 matmul peak measured in this run, in
the same rounds as the step (median of per-round ratios: the machine's speed drifts).
Model FLOPs follow the PaLM convention: 6 x (active matmul parameters) per token for forward+backward plus
12 x layers x heads x (qk_dim + v_dim)/2 x seq per token for attention scores and values (not halved for
causality). Padding blocks, dispatch and the router's gathers are not counted as useful work.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp

from benchmarks.common import emit, interleaved, matmul_peak_fn, peak_rss_mb, timed
from r1jax.model import ModelConfig, Runtime, forward, init_variables
from r1jax.train.losses import lm_loss


def model_flops_per_token(cfg: ModelConfig, seq: int) -> float:
  """Forward+backward FLOPs per token (PaLM-style MFU accounting)."""
  embed = cfg.vocab_size * cfg.hidden_size
  matmul_params = cfg.num_params(active=True) - embed * (0 if cfg.tie_word_embeddings else 1)
  if cfg.tie_word_embeddings:
    matmul_params += 0  # the tied table is used once as the LM head: counted once.
  attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * (cfg.qk_head_dim + (
      cfg.v_head_dim if cfg.attention == "mla" else cfg.gqa_head_dim)) / 2 * seq
  return 6 * matmul_params + attn


def make_step(cfg: ModelConfig, runtime: Runtime):
  """Loss and gradients of next-token cross-entropy, with the loss pretraining and SFT use (lm_loss)."""
  def loss_fn(p, variables, tokens):
    logits = forward(cfg, {**variables, "params": p}, tokens[:, :-1], runtime=runtime)
    return lm_loss(logits, tokens[:, 1:], jnp.ones(tokens[:, 1:].shape, bool))[0]

  @jax.jit
  def step(variables, tokens):
    return jax.value_and_grad(loss_fn)(variables["params"], variables, tokens)
  return step


def compiled_step(cfg: ModelConfig, runtime: Runtime, batch: int, seq: int):
  """(jitted step, its arguments, compile seconds) for one config and runtime."""
  params = init_variables(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, cfg.vocab_size)
  step = make_step(cfg, runtime)
  t0 = time.perf_counter()
  jax.block_until_ready(step(params, tokens))
  return step, (params, tokens), time.perf_counter() - t0


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--seq", type=int, default=128)
  ap.add_argument("--impl", default="sorted")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--skip_scaling", action="store_true")
  ap.add_argument("--skip_step", action="store_true")
  args = ap.parse_args()

  # This 2-core machine's speed drifts by up to ~1.5x over minutes (the f32 matmul peak has read 100 to
  # 195 GFLOP/s on different runs). So the peak is measured in the same rounds as the step (one step,
  # then the best of 5 peak matmuls, per round) and MFU is the median of the per-round ratios; scaling
  # ratios are likewise medians of per-round ratios of the two configs run back to back.
  peak_fn, peak_args, peak_flops = matmul_peak_fn()
  jax.block_until_ready(peak_fn(*peak_args))
  first_peak_s = min(timed(peak_fn, peak_args) for _ in range(5))
  emit(name="matmul_peak_f32", gflops=round(peak_flops / first_peak_s / 1e9, 1),
       devices=jax.device_count(), cpu_count=os.cpu_count(), loadavg=[round(x, 2) for x in os.getloadavg()])
  cfg, runtime = ModelConfig.preset("bench", dtype=args.dtype), Runtime(moe_impl=args.impl)
  tokens = args.batch * args.seq
  flops = model_flops_per_token(cfg, args.seq) * tokens
  if not args.skip_step:
    step, step_args, compile_s = compiled_step(cfg, runtime, args.batch, args.seq)
    t = interleaved({"step": (step, step_args), "peak": (peak_fn, peak_args)}, args.repeats, {"peak": 5})
    steps, peaks = t["step"], [peak_flops / s for s in t["peak"]]
    med = statistics.median(steps)
    emit(name="model_step_fwd_bwd", preset="bench", impl=args.impl, dtype=args.dtype, batch=args.batch,
         seq=args.seq, step_s_median=round(med, 4), step_s_min=round(min(steps), 4),
         compile_s=round(compile_s, 2), tokens_per_s=round(tokens / med),
         model_gflops_per_s=round(flops / med / 1e9, 1),
         mfu=round(statistics.median(flops / s / p for s, p in zip(steps, peaks)), 3),
         peak_f32_gflops=round(statistics.median(peaks) / 1e9, 1),
         peak_f32_gflops_range=[round(min(peaks) / 1e9, 1), round(max(peaks) / 1e9, 1)],
         rounds=args.repeats, target_mfu=">=0.35", peak_rss_mb=round(peak_rss_mb()))

  if not args.skip_scaling:
    # Dropless (exact; what RL and parity use) and the capacity-factor training mode (may drop tokens).
    for cf in (0.0, 1.25):
      fns = {}
      for e in (8, 64):
        c = cfg.replace(n_routed_experts=e, n_group=2, topk_group=1)
        fns[e] = compiled_step(c, runtime.replace(capacity_factor=cf), args.batch, args.seq)[:2]
      t = interleaved(fns, args.repeats)
      emit(name="moe_scaling", impl=args.impl, capacity_factor=cf,
           step_s_8_experts=round(statistics.median(t[8]), 4),
           step_s_64_experts=round(statistics.median(t[64]), 4),
           ratio_64_over_8=round(statistics.median(a / b for a, b in zip(t[64], t[8])), 3),
           rounds=args.repeats, target="<=1.25")


if __name__ == "__main__":
  main()
