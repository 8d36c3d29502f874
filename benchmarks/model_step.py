"""Forward+backward throughput and MFU of the r1jax MoE model, and MoE cost scaling with expert count.

    python benchmarks/model_step.py [--batch 64 --seq 128 --impl sorted --dtype float32]

Prints one JSON line per result. MFU = achieved model FLOP/s / f32 matmul peak measured in this run.
Model FLOPs follow the PaLM convention: 6 x (active matmul parameters) per token for forward+backward plus
12 x layers x heads x (qk_dim + v_dim)/2 x seq per token for attention scores and values (not halved for
causality). Padding blocks, dispatch and the router's gathers are not counted as useful work.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp

from benchmarks.common import emit, matmul_peak_flops, peak_rss_mb, time_fn
from r1jax.model import ModelConfig, forward, init_params


def model_flops_per_token(cfg: ModelConfig, seq: int) -> float:
  """Forward+backward FLOPs per token (PaLM-style MFU accounting)."""
  embed = cfg.vocab_size * cfg.hidden_size
  matmul_params = cfg.num_params(active=True) - embed * (0 if cfg.tie_word_embeddings else 1)
  if cfg.tie_word_embeddings:
    matmul_params += 0  # the tied table is used once as the LM head: counted once.
  attn = 12 * cfg.num_hidden_layers * cfg.num_attention_heads * (cfg.qk_head_dim + (
      cfg.v_head_dim if cfg.attention == "mla" else cfg.gqa_head_dim)) / 2 * seq
  return 6 * matmul_params + attn


def make_step(cfg: ModelConfig):
  def loss_fn(p, variables, tokens):
    logits = forward(cfg, {**variables, "params": p}, tokens[:, :-1])
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1))

  @jax.jit
  def step(variables, tokens):
    return jax.value_and_grad(loss_fn)(variables["params"], variables, tokens)
  return step


def bench_config(cfg: ModelConfig, batch: int, seq: int, repeats: int):
  params = init_params(cfg, jax.random.key(0))
  tokens = jax.random.randint(jax.random.key(1), (batch, seq + 1), 0, cfg.vocab_size)
  step = make_step(cfg)
  t0 = time.perf_counter()
  jax.block_until_ready(step(params, tokens))
  compile_s = time.perf_counter() - t0
  med, best, _ = time_fn(step, params, tokens, repeats=repeats, warmup=0)
  return med, best, compile_s


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--seq", type=int, default=128)
  ap.add_argument("--impl", default="sorted")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--skip_scaling", action="store_true")
  ap.add_argument("--skip_step", action="store_true")
  args = ap.parse_args()

  peak = matmul_peak_flops()
  emit(name="matmul_peak_f32", gflops=round(peak / 1e9, 1), devices=jax.device_count(),
       cpu_count=os.cpu_count(), loadavg=[round(x, 2) for x in os.getloadavg()])
  cfg = ModelConfig.preset("bench", moe_impl=args.impl, dtype=args.dtype)
  if args.skip_step:
    med = None
  else:
    med, best, compile_s = bench_config(cfg, args.batch, args.seq, args.repeats)
  tokens = args.batch * args.seq
  flops = model_flops_per_token(cfg, args.seq) * tokens
  if med is not None:
    emit(name="model_step_fwd_bwd", preset="bench", impl=args.impl, dtype=args.dtype, batch=args.batch,
         seq=args.seq, step_s_median=round(med, 4), step_s_min=round(best, 4), compile_s=round(compile_s, 2),
         tokens_per_s=round(tokens / med), model_gflops_per_s=round(flops / med / 1e9, 1),
         mfu=round(flops / med / peak, 3), peak_f32_gflops=round(peak / 1e9, 1),
         peak_rss_mb=round(peak_rss_mb()))

  if not args.skip_scaling:
    # Dropless (exact; what RL and parity use) and the capacity-factor training mode (may drop tokens).
    for cf in (0.0, 1.25):
      times = {}
      for e in (8, 64):
        c = cfg.replace(n_routed_experts=e, n_group=2, topk_group=1, capacity_factor=cf)
        times[e], _, _ = bench_config(c, args.batch, args.seq, args.repeats)
      emit(name="moe_scaling", impl=args.impl, capacity_factor=cf, step_s_8_experts=round(times[8], 4),
           step_s_64_experts=round(times[64], 4), ratio_64_over_8=round(times[64] / times[8], 3),
           target="<=1.25")


if __name__ == "__main__":
  main()
