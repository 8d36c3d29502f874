"""A whole GRPO step (rollout, rewards, reference, update) on the `bench` MoE preset, alone or against TRL.

    python -m benchmarks.grpo_step [--steps 6]                  # r1jax, with the matmul peak as reference
    python -m benchmarks.grpo_step --vs-trl [--pairs 3]         # r1jax and TRL's GRPOTrainer, alternating

Settings (both sides): 8 prompts x G=8 completions, up to 64 new tokens at temperature 1.0, beta 0.04 (k3 KL
to the initial model), one update per rollout (no separate old-policy pass needed), token-mean loss,
learning rate 1e-5, float32, random weights (so nearly every completion runs the full 64 tokens).

Alone, the RL stage itself runs (r1jax.stages.grpo.run_rl_stage) and its per-phase timings are read; the
first step (compilation) is excluded; the machine's f32 matmul rate before and after is the same-run
reference.

With --vs-trl the `bench` model is written once as a Hugging Face directory (DeepSeek-V3 architecture,
safetensors, and a byte-level BPE tokenizer.json of 1,024 ids), and both sides load that directory: the same
weights, the same tokenizer and stop tokens, the same prompts ("Q: <3-digit sum>\\nA: <think>") and the
same reward (r1jax's format reward, a cheap rule). TRL (`pip install -e ".[bench]"`) runs `GRPOTrainer`
with gradient checkpointing off (r1jax does not remat either) on the CPU; each side runs in its own
process, `--steps` steps, its first excluded, and the sides alternate (TRL first in even pairs). Each run
prints its completions/s and mean completion length; the summary gives the median over pairs of the ratio
r1jax / TRL in completions/s and in generated tokens/s (the lengths differ a little: each side samples its
own completions and stops at the end-of-text tokens).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS, GROUP, NEW_TOKENS, BETA, LR = 8, 8, 64, 0.04, 1e-5


def _problems(n: int) -> list[dict]:
  from r1jax.data import tasks
  return list(tasks.get("arithmetic", digits=3, ops="+").examples("train", seed=0, num=n))


def _stage_config(steps: int):
  from r1jax.config_utils import build
  from r1jax.stages.grpo import RLStageConfig
  return build(RLStageConfig, dict(
      num_steps=steps, batch_size=PROMPTS, group_size=GROUP, max_prompt_len=24, max_new_tokens=NEW_TOKENS,
      dynamic_sampling=False, checkpoint_every=10 ** 6, log_every=1, reward_weights=(("format", 1.0),),
      grpo=dict(beta=BETA, temperature=1.0, num_iterations=1, num_minibatches=1, aggregation="token_mean"),
      optim=dict(learning_rate=LR, total_steps=100, schedule="constant")), "config.rl")


def run_r1jax(steps: int, hf_dir: str | None = None) -> dict:
  """The RL stage on the bench model (from `hf_dir`, or random with the character tokenizer); medians of
  steps 2..N."""
  import jax
  from r1jax.model import ModelConfig, init_variables
  from r1jax.stages.grpo import run_rl_stage
  if hf_dir:
    from r1jax.data import HFTokenizer
    from r1jax.hf import load
    cfg, variables = load(hf_dir, dtype="float32")
    tok = HFTokenizer.load(hf_dir)
  else:
    from r1jax.testing import FakeTokenizer
    cfg = ModelConfig.preset("bench")
    variables, tok = init_variables(cfg, jax.random.key(0)), FakeTokenizer(vocab_size=cfg.vocab_size)
  sc = _stage_config(steps)
  with tempfile.TemporaryDirectory() as workdir:
    run_rl_stage(cfg, sc, initial_variables=variables, tokenizer=tok, train_examples=_problems(200),
                 eval_examples=None, workdir=workdir, verbose=False)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      recs = [json.loads(line) for line in f if line.strip()][1:]   # step 1 compiles
  med = lambda k: statistics.median(r[k] for r in recs)
  step_s = med("time_step_s")
  return {"side": "r1jax", "steps_timed": len(recs), "step_s_median": round(step_s, 3),
          "completions_per_s": round(PROMPTS * GROUP / step_s, 2),
          "generated_tokens_per_s": round(PROMPTS * GROUP * med("length") / step_s, 1),
          "mean_completion_tokens": round(med("length"), 1),
          **{f"share_{name}": round(med(f"time_{k}_s") / step_s, 3)
             for name, k in (("rollout", "rollout"), ("rewards", "reward"), ("reference", "ref"), ("update", "update"))}}


def run_trl(steps: int, hf_dir: str) -> dict:
  """TRL's GRPOTrainer on the same directory, prompts, reward and settings; medians of steps 2..N."""
  import datasets
  import torch
  import transformers
  import trl
  from r1jax.data.templates import COMPACT_FORMAT
  from r1jax.rewards import format_reward
  torch.manual_seed(0)
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
  problems = _problems(PROMPTS * steps)
  data = datasets.Dataset.from_list([{"prompt": COMPACT_FORMAT.format(question=p["question"])} for p in problems])
  lengths, times = [], []

  def reward(completions, completion_ids, **_):
    lengths.extend(len(ids) for ids in completion_ids)          # the sampled tokens, up to the stop token
    return [float(format_reward("<think>" + c)) for c in completions]

  class Clock(transformers.TrainerCallback):
    def on_step_begin(self, *a, **k):
      self.t = time.perf_counter()

    def on_step_end(self, *a, **k):
      times.append(time.perf_counter() - self.t)

  with tempfile.TemporaryDirectory() as out:
    args = trl.GRPOConfig(
        output_dir=out, use_cpu=True, per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
        steps_per_generation=1, num_iterations=1, max_completion_length=NEW_TOKENS, temperature=1.0, beta=BETA,
        learning_rate=LR, lr_scheduler_type="constant", loss_type="dapo", max_steps=steps, logging_steps=1,
        report_to=[], save_strategy="no", gradient_checkpointing=False, shuffle_dataset=False,
        disable_tqdm=True, bf16=False, dataloader_num_workers=0)
    trainer = trl.GRPOTrainer(model=model, reward_funcs=[reward], args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Clock()])
    trainer.train()
  per_step = PROMPTS * GROUP
  mean_len = statistics.mean(lengths[per_step:]) if len(lengths) > per_step else statistics.mean(lengths)
  step_s = statistics.median(times[1:])
  return {"side": "trl", "trl": trl.__version__, "torch": torch.__version__, "steps_timed": len(times) - 1,
          "step_s_median": round(step_s, 3), "completions_per_s": round(per_step / step_s, 2),
          "generated_tokens_per_s": round(per_step * mean_len / step_s, 1),
          "mean_completion_tokens": round(mean_len, 1)}


def write_hf_model(out: str) -> str:
  """The bench preset with random weights as a Hugging Face directory, with a 1,024-id tokenizer."""
  import jax
  from r1jax.hf import save
  from r1jax.model import ModelConfig, init_variables
  from r1jax.testing.hf_checkpoints import write_tokenizer
  side = os.path.join(out, "tokenizer")
  ids = write_tokenizer(side, vocab_size=1024 - 8)
  cfg = ModelConfig.preset("bench", vocab_size=1024)
  assert ids["vocab"] <= cfg.vocab_size, ids
  model = os.path.join(out, "model")
  save(model, cfg, init_variables(cfg, jax.random.key(0)), dtype="float32",
       extra_config={"eos_token_id": ids["eos"], "bos_token_id": None},
       files=[os.path.join(side, f) for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json")])
  return model


def _side(name: str, steps: int, hf_dir: str) -> dict:
  """One run of one side in its own process (its last output line is its JSON result)."""
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  p = subprocess.run([sys.executable, "-m", "benchmarks.grpo_step", "--side", name, "--steps", str(steps),
                      "--hf_dir", hf_dir], cwd=ROOT, env=env, capture_output=True, text=True)
  if p.returncode != 0:
    raise SystemExit(f"the {name} run failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
  return json.loads(p.stdout.strip().splitlines()[-1])


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--steps", type=int, default=6, help="GRPO steps per run (the first is not timed)")
  ap.add_argument("--vs-trl", dest="vs_trl", action="store_true", help="alternate with TRL's GRPOTrainer")
  ap.add_argument("--pairs", type=int, default=3, help="with --vs-trl: TRL / r1jax run pairs")
  ap.add_argument("--side", choices=("r1jax", "trl"), help=argparse.SUPPRESS)     # one side, in a subprocess
  ap.add_argument("--hf_dir", help=argparse.SUPPRESS)
  args = ap.parse_args()
  if args.side:
    result = run_r1jax(args.steps, args.hf_dir) if args.side == "r1jax" else run_trl(args.steps, args.hf_dir)
    print(json.dumps(result), flush=True)
    return
  from benchmarks.common import emit, matmul_peak_flops, peak_rss_mb
  if not args.vs_trl:
    before = matmul_peak_flops()                # the machine's speed now: the same-run reference
    result = run_r1jax(args.steps)
    after = matmul_peak_flops()
    emit(name="grpo_step", preset="bench", prompts=PROMPTS, group=GROUP, max_new_tokens=NEW_TOKENS, beta=BETA,
         **{k: v for k, v in result.items() if k != "side"}, peak_rss_mb=round(peak_rss_mb()),
         matmul_peak_gflops_before=round(before / 1e9, 1), matmul_peak_gflops_after=round(after / 1e9, 1))
    return
  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = write_hf_model(tmp)
    ratios, token_ratios = [], []
    for pair in range(args.pairs):
      order = ("trl", "r1jax") if pair % 2 == 0 else ("r1jax", "trl")
      runs = {name: _side(name, args.steps, hf_dir) for name in order}
      for name in order:
        emit(name="grpo_step_vs_trl", pair=pair, **runs[name])
      ratios.append(runs["r1jax"]["completions_per_s"] / runs["trl"]["completions_per_s"])
      token_ratios.append(runs["r1jax"]["generated_tokens_per_s"] / runs["trl"]["generated_tokens_per_s"])
  emit(name="grpo_step_vs_trl_summary", pairs=args.pairs, preset="bench", prompts=PROMPTS, group=GROUP,
       max_new_tokens=NEW_TOKENS, beta=BETA, ratio_completions_per_s=[round(r, 2) for r in ratios],
       median_ratio_completions_per_s=round(statistics.median(ratios), 2),
       median_ratio_generated_tokens_per_s=round(statistics.median(token_ratios), 2))


if __name__ == "__main__":
  main()
