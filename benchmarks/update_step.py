"""Seconds per jitted GRPO update and its MFU on the `bench` preset, on 1 device and on an 8-device mesh.

    python -m benchmarks.update_step                      # both: 1 device, then 8 fake CPU devices
    python -m benchmarks.update_step --devices 8 --mesh data=2,expert=4 [--repeats 7]

Workload: one minibatch of 64 sequences (8 prompts x G=8) of 80 tokens: 16 prompt tokens and 64 completion
tokens, all real (random weights run every completion to the full 64 tokens, see grpo_step.py). beta = 0.04;
the old-policy and reference log-probs come in the batch, precomputed, so the timed update is one policy
forward + backward, the GRPO loss, AdamW and the router-bias rule. The state is donated, as in training.

Each `--devices N` run is its own process (the CPU device count is fixed when the backend starts); without
--devices this script runs the 1- and 8-device configurations as child processes and relays their lines.
Prints one JSON line per result:
  {"name": "matmul_peak_f32", ...}      the MFU denominator, measured in the same process
  {"name": "grpo_update", "update_s_median": ..., "mfu": ..., "loadavg_start": [...], ...}

MFU = model FLOPs / median update seconds / same-run f32 matmul peak. Model FLOPs count the policy's
forward + backward only, 6N-style (benchmarks.model_step.model_flops_per_token over the 79 input positions,
less the LM head on the 15 prompt positions whose logits are never computed); the loss, the optimizer and
MoE dispatch are not counted. On fake CPU devices all 8 "devices" share the machine's cores, so the 8-device
MFU is still against the one-matmul machine peak: it measures the cost of sharding, not a speed-up.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.common import emit, matmul_peak_flops, peak_rss_mb
from benchmarks.model_step import model_flops_per_token
from r1jax.model import ModelConfig, init_variables
from r1jax.rl import GRPOConfig, group_advantages, make_grpo_update, make_logprob_fn
from r1jax.sharding import host_local_batch_to_global, make_mesh
from r1jax.train import OptimConfig, check_finite, create_train_state, make_optimizer

NUM_PROMPTS, GROUP, PROMPT_LEN, COMPLETION_LEN = 8, 8, 16, 64
CONFIGS = (("1", None), ("8", "data=2,expert=4"))   # (devices, mesh) run by the default invocation


def update_flops(cfg: ModelConfig, num_seqs: int, prompt_len: int, completion_len: int) -> float:
  """Forward + backward FLOPs of the policy in one update (the MFU numerator)."""
  inputs = prompt_len + completion_len - 1              # sequence_logprobs feeds tokens[:, :-1]
  lm_head = cfg.vocab_size * cfg.hidden_size
  per_seq = model_flops_per_token(cfg, inputs) * inputs - 6 * lm_head * (inputs - completion_len)
  return per_seq * num_seqs


def make_batch(cfg: ModelConfig, variables, logprob_fn, mesh, seed: int = 0) -> dict:
  """A GRPO minibatch (r1jax.rl.step format) with old/ref log-probs from the initial policy."""
  rng = np.random.default_rng(seed)
  s, t = NUM_PROMPTS * GROUP, PROMPT_LEN + COMPLETION_LEN
  prompts = rng.integers(4, cfg.vocab_size, (NUM_PROMPTS, PROMPT_LEN))
  tokens = np.concatenate([np.repeat(prompts, GROUP, axis=0),
                           rng.integers(4, cfg.vocab_size, (s, COMPLETION_LEN))], axis=1).astype(np.int32)
  rewards = rng.integers(0, 2, s).astype(np.float32)
  batch = {"tokens": tokens, "attention_mask": np.ones((s, t), np.int32),
           "completion_mask": np.ones((s, COMPLETION_LEN), np.int32),
           "advantages": np.asarray(group_advantages(jnp.asarray(rewards), GROUP)),
           "ref_noise": 0.02 * rng.standard_normal((s, COMPLETION_LEN)).astype(np.float32)}
  if mesh is not None:
    batch = host_local_batch_to_global(batch, mesh)
  else:
    batch = jax.tree.map(jnp.asarray, batch)
  old_logp = logprob_fn(variables, batch["tokens"], batch["attention_mask"], COMPLETION_LEN)
  batch["old_logp"] = old_logp
  batch["ref_logp"] = old_logp - 0.01 + batch.pop("ref_noise")
  return jax.block_until_ready(batch)


def parse_mesh(text: str | None) -> dict | None:
  if not text:
    return None
  return {k: int(v) for k, v in (item.split("=") for item in text.split(","))}


def run_one(devices: int, mesh_text: str | None, repeats: int) -> None:
  """Benchmarks the update in this process on `devices` CPU devices (set before the backend starts)."""
  flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  load_start = [round(x, 2) for x in os.getloadavg()]
  if jax.device_count() != devices:
    raise RuntimeError(f"asked for {devices} devices, the backend has {jax.device_count()} (started too early?)")
  shape = parse_mesh(mesh_text)
  mesh = make_mesh(shape) if shape else None

  peak = matmul_peak_flops()
  emit(name="matmul_peak_f32", gflops=round(peak / 1e9, 1), devices=devices, cpu_count=os.cpu_count())

  cfg = ModelConfig.preset("bench")
  rl = GRPOConfig(beta=0.04)
  tx = make_optimizer(OptimConfig(learning_rate=1e-5, total_steps=100, schedule="constant"))
  variables = init_variables(cfg, jax.random.key(0), mesh=mesh)
  batch = make_batch(cfg, variables, make_logprob_fn(cfg, rl.temperature, mesh=mesh), mesh)
  state = create_train_state(variables, tx)
  update = make_grpo_update(cfg, rl, tx, mesh=mesh)

  t0 = time.perf_counter()
  state, metrics = jax.block_until_ready(update(state, batch))
  compile_s = time.perf_counter() - t0                   # compilation + the first update
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    state, metrics = jax.block_until_ready(update(state, batch))
    times.append(time.perf_counter() - t0)
  check_finite(metrics, step=int(state.step))

  med, best = statistics.median(times), min(times)
  num_seqs = NUM_PROMPTS * GROUP
  flops = update_flops(cfg, num_seqs, PROMPT_LEN, COMPLETION_LEN)
  emit(name="grpo_update", preset="bench", devices=devices, mesh=shape or {"data": 1}, sequences=num_seqs,
       prompt_len=PROMPT_LEN, completion_len=COMPLETION_LEN, beta=rl.beta, repeats=repeats,
       update_s_median=round(med, 4), update_s_min=round(best, 4), update_s_all=[round(x, 4) for x in times],
       compile_s=round(compile_s, 2), tokens_per_s=round(num_seqs * (PROMPT_LEN + COMPLETION_LEN) / med),
       model_gflops=round(flops / 1e9, 2), model_gflops_per_s=round(flops / med / 1e9, 1),
       mfu=round(flops / med / peak, 3), mfu_at_best=round(flops / best / peak, 3),
       peak_f32_gflops=round(peak / 1e9, 1), target_mfu_1_device=0.30,
       flops_counted="policy forward+backward, 6N + attention (model_step.model_flops_per_token); "
                     "LM head on completion positions only; loss, optimizer, MoE dispatch not counted",
       loss=round(float(np.asarray(metrics["loss"])), 6), peak_rss_mb=round(peak_rss_mb()),
       loadavg_start=load_start, loadavg_end=[round(x, 2) for x in os.getloadavg()],
       note="shared, noisy CPU machine: compare runs only with their load averages")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--devices", type=int, default=None, help="run one configuration in this process")
  ap.add_argument("--mesh", default=None, help="mesh axes, e.g. data=2,expert=4 (default: no mesh)")
  ap.add_argument("--repeats", type=int, default=7, help="timed updates after the compiling one")
  args = ap.parse_args()
  if args.devices is not None:
    run_one(args.devices, args.mesh, args.repeats)
    return
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for devices, mesh in CONFIGS:
    cmd = [sys.executable, "-m", "benchmarks.update_step", "--devices", devices, "--repeats", str(args.repeats)]
    subprocess.run(cmd + (["--mesh", mesh] if mesh else []), cwd=root, check=True)


if __name__ == "__main__":
  main()
