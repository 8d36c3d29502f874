"""Seconds per full GRPO step (rollout + rewards + reference + update) on the `bench` preset.

    python -m benchmarks.grpo_step [--steps 6]

8 prompts x G=8, up to 64 new tokens at temperature 1.0, beta 0.04, one update per rollout, random
weights (so nearly every completion runs the full 64 tokens). Runs the real RL stage
(r1jax.stages.grpo.run_rl_stage) and reads its per-phase timings; the first step (compilation) is excluded.
The figure has no same-run reference yet: compare it with a PyTorch trainer (TRL's GRPOTrainer) run on
the same machine, model and settings.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile

import jax

from benchmarks.common import emit, matmul_peak_flops, peak_rss_mb
from r1jax.config_utils import build
from r1jax.data import tasks
from r1jax.model import ModelConfig, init_variables
from r1jax.stages.grpo import RLStageConfig, run_rl_stage
from r1jax.testing import FakeTokenizer

def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=6)
  args = ap.parse_args()
  cfg = ModelConfig.preset("bench")
  tok = FakeTokenizer(vocab_size=cfg.vocab_size)
  sc = build(RLStageConfig, dict(
      num_steps=args.steps, batch_size=8, group_size=8, max_prompt_len=24, max_new_tokens=64,
      dynamic_sampling=False, checkpoint_every=10 ** 6, log_every=1,
      grpo=dict(beta=0.04, temperature=1.0, num_iterations=1, num_minibatches=1),
      optim=dict(learning_rate=1e-5, total_steps=100, schedule="constant")), "config.rl")
  train = list(tasks.get("arithmetic", digits=3, ops="+").examples("train", seed=0, num=200))
  peak_before = matmul_peak_flops()            # the machine's speed now: the same-run reference
  with tempfile.TemporaryDirectory() as workdir:
    run_rl_stage(cfg, sc, initial_variables=init_variables(cfg, jax.random.key(0)), tokenizer=tok,
                 train_examples=train, eval_examples=None, workdir=workdir, verbose=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      recs = [json.loads(line) for line in f if line.strip()][1:]   # step 1 compiles
  peak_after = matmul_peak_flops()
  med = lambda k: statistics.median(r[k] for r in recs)
  step_s = med("time_step_s")
  completions = sc.batch_size * sc.group_size
  rollout, reward = med("time_rollout_s"), med("time_reward_s")
  ref, update = med("time_ref_s"), med("time_update_s")
  emit(name="grpo_step", preset="bench", prompts=sc.batch_size, group=sc.group_size,
       max_new_tokens=sc.max_new_tokens, beta=sc.grpo.beta, steps_timed=len(recs),
       step_s_median=round(step_s, 3), completions_per_s=round(completions / step_s, 1),
       generated_tokens_per_s=round(completions * med("length") / step_s),
       mean_completion_tokens=round(med("length"), 1),
       share_rollout=round(rollout / step_s, 3), share_rewards=round(reward / step_s, 3),
       share_reference=round(ref / step_s, 3),
       share_update=round(update / step_s, 3), peak_rss_mb=round(peak_rss_mb()),
       matmul_peak_gflops_before=round(peak_before / 1e9, 1), matmul_peak_gflops_after=round(peak_after / 1e9, 1),
       loadavg=[round(x, 2) for x in os.getloadavg()])


if __name__ == "__main__":
  main()
