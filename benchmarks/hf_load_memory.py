"""Peak host memory of r1jax.hf.load: it must stay under 1.5x the checkpoint's size.

    python -m benchmarks.hf_load_memory [--experts 64] [--dtype bfloat16] [--keep DIR]

Builds a random deepseek_v3 checkpoint of a few hundred MB (4 layers, the first dense, 64 experts of width
512 at hidden 512, bf16, written per expert and in ~100 MB shards as on the Hub) with r1jax.hf.save, then
loads it in a fresh subprocess. The child first loads a tiny checkpoint (so JAX's backend, flax and the
tracing machinery are initialised), reads its resident set size as the baseline, loads the big checkpoint
and reports the peak (ru_maxrss) above that baseline. On the CPU backend the loaded parameters themselves
live in host memory, so the ideal ratio is ~1.0 (params) + one tensor in flight.

Prints one JSON line:
  {"name": "hf_load_memory", "checkpoint_bytes": ..., "peak_extra_rss_bytes": ..., "ratio": ...,
   "resident_extra_rss_bytes": ..., "load_s": ..., "target_ratio": 1.5}
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _rss_bytes() -> int:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmRSS:"):
        return int(line.split()[1]) * 1024
  raise RuntimeError("no VmRSS in /proc/self/status")


def _maxrss_bytes() -> int:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024   # Linux reports KiB


def _checkpoint_bytes(d: str) -> int:
  return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".safetensors"))


def child(big: str, tiny: str) -> None:
  """Runs in a fresh process: baseline after a warm-up load, then the measured load."""
  import jax
  from r1jax import hf
  jax.block_until_ready(hf.load(tiny)[1])
  baseline = _rss_bytes()
  # ru_maxrss is a high-water mark: if the warm-up had peaked above the baseline by more than the big
  # load does, the measurement would be hidden. Both are reported (warmup_peak_above_baseline_bytes).
  peak_before = _maxrss_bytes()
  t0 = time.perf_counter()
  _, params = hf.load(big)
  jax.block_until_ready(params)
  load_s = time.perf_counter() - t0
  print(json.dumps({"baseline_rss": baseline, "peak_before": peak_before, "peak_after": _maxrss_bytes(),
                    "rss_after": _rss_bytes(), "load_s": load_s}))


def build(out: str, experts: int, dtype: str):
  import jax
  from r1jax import hf
  from r1jax.model import ModelConfig, init_variables
  cfg = ModelConfig(vocab_size=8192, hidden_size=512, intermediate_size=1536, num_hidden_layers=4,
                    num_attention_heads=8, n_routed_experts=experts, n_shared_experts=1, moe_intermediate_size=512,
                    num_experts_per_tok=4, n_group=4, topk_group=2, first_k_dense_replace=1, attention="mla",
                    q_lora_rank=128, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=16, v_head_dim=32,
                    dtype=dtype, param_dtype=dtype)
  hf.save(out, cfg, init_variables(cfg, jax.random.key(0)), max_shard_bytes=100 * 2 ** 20)
  tiny = ModelConfig.preset("tiny", dtype=dtype, param_dtype=dtype)
  hf.save(out + "_tiny", tiny, init_variables(tiny, jax.random.key(0)))
  return cfg


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--experts", type=int, default=64)
  p.add_argument("--dtype", default="bfloat16")
  p.add_argument("--keep", default=None, help="build the checkpoint in this directory (kept)")
  p.add_argument("--child", nargs=2, metavar=("BIG", "TINY"), help=argparse.SUPPRESS)
  p.add_argument("--build", metavar="DIR", help=argparse.SUPPRESS)
  args = p.parse_args()
  if args.child:
    child(*args.child)
    return
  if args.build:
    build(args.build, args.experts, args.dtype)
    return
  # This process never imports JAX and builds nothing itself: on Linux ru_maxrss survives fork + exec,
  # so a parent that had held the random parameters would pass its high-water mark on to the child.
  env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
  me = os.path.abspath(__file__)
  with tempfile.TemporaryDirectory() as tmp:
    big = args.keep or os.path.join(tmp, "ckpt")
    if not os.path.exists(os.path.join(big, "config.json")):
      subprocess.run([sys.executable, me, "--build", big, "--experts", str(args.experts), "--dtype", args.dtype],
                     env=env, check=True)
    res = subprocess.run([sys.executable, me, "--child", big, big + "_tiny"], env=env, capture_output=True,
                         text=True, check=True)
    r = json.loads(res.stdout.strip().splitlines()[-1])
    size = _checkpoint_bytes(big)
    peak_extra = r["peak_after"] - r["baseline_rss"]
    print(json.dumps({"name": "hf_load_memory", "checkpoint_bytes": size, "peak_extra_rss_bytes": peak_extra,
                      "ratio": round(peak_extra / size, 3),
                      "resident_extra_rss_bytes": r["rss_after"] - r["baseline_rss"],
                      "warmup_peak_above_baseline_bytes": r["peak_before"] - r["baseline_rss"],
                      "load_s": round(r["load_s"], 2), "target_ratio": 1.5}), flush=True)


if __name__ == "__main__":
  main()
