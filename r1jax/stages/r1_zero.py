"""R1-Zero end to end on a CPU: pretrain a tiny MoE base, then GRPO with rule rewards; evaluate both.

    result = run(c, "runs/r1_zero")   # c: configs/r1_zero.py's get_config(); {"base": ..., "final": ...}

The entry point is `python -m experiments.r1_zero --config=configs/r1_zero.py --workdir=runs/r1_zero`.
Each stage resumes from its checkpoints and skips finished work, so rerunning the same command after a
kill (or SIGTERM) continues where it stopped. Writes to the workdir: tokenizer.model, pretrain/, rl/,
eval_base.json, eval_final.json, curves.png, report.md.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

from r1jax.checkpoint import weights_digest
from r1jax.config_utils import build
from r1jax.data import get_template, tasks
from r1jax.data.corpora import addition_corpus
from r1jax.data.jsonl import write_json
from r1jax.eval import EvalConfig, evaluate
from r1jax.eval.report import markdown_table, plot_curves
from r1jax.model import ModelConfig
from r1jax.sharding import distributed
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import exported
from r1jax.stages import fingerprint as fp_lib
from r1jax.stages.grpo import RLStageConfig, run_rl_stage
from r1jax.stages.lm import LMStageConfig, run_lm_stage
from r1jax.stages.seeds import Job
from r1jax.stages.writers import MetricsWriter


def validate(c, vocab_size: int = 64):
  """Builds every section's dataclass: any bad field fails here, before data, tokenizer or compilation."""
  model = build(ModelConfig, {**c.model.to_dict(), "vocab_size": vocab_size}, "config.model")
  return model, build(LMStageConfig, c.pretrain, "config.pretrain"), build(RLStageConfig, c.rl, "config.rl"), \
      build(EvalConfig, c.eval, "config.eval")


def _eval(path, cfg, variables, tok, examples, ec, template, mesh=None):
  """The evaluation report at `path`, computed unless it exists for these weights, tokenizer, examples and
  settings (keyed by content: a retrained model is evaluated again)."""
  setup = json.loads(json.dumps({"weights": weights_digest(variables), "tokenizer": fp_lib.tokenizer_digest(tok),
                                 "examples": fp_lib.records_digest(examples), "template": template,
                                 "eval": dataclasses.asdict(ec)}))
  if os.path.exists(path):
    with open(path) as f:
      rep = json.load(f)
    if rep.get("eval_setup") == setup:
      return rep
    print(f"warning: {path} was computed for other weights or settings; evaluating again", file=sys.stderr,
          flush=True)
  rep = evaluate(cfg, variables, tok, examples, ec, template=template, mesh=mesh)
  rep["eval_setup"] = setup
  if distributed.is_writer():
    write_json(path, rep)
  return rep


def run(c, workdir: str) -> dict:
  """Runs every stage of config `c` (configs/r1_zero.py) in `workdir`; returns the two evaluation reports."""
  t0 = time.time()
  os.makedirs(workdir, exist_ok=True)
  validate(c)                                                          # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))
  task = tasks.from_config(c.task)
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  test = list(task.examples("test", seed=c.seed, num=c.num_eval_problems))
  template = get_template(c.template)
  corpus = addition_corpus(train, template, modes=dict(c.corpus_modes), seed=c.seed)
  tok = exported.tokenizer(os.path.join(workdir, "tokenizer.model"),
                           [r["prompt"] + r["completion"] for r in corpus], **c.tokenizer)
  model_cfg, pre_cfg, rl_cfg, ec = validate(c, tok.vocab_size)

  # Stage 1: pretraining (completion-only loss on the mixed-mode corpus).
  base = run_lm_stage(model_cfg, pre_cfg, examples=[{"prompt": r["prompt"], "completion": r["completion"]}
                                                   for r in corpus],
                      tokenizer=tok, workdir=os.path.join(workdir, "pretrain"), mesh=mesh)
  t_pre = time.time() - t0
  base_rep = _eval(os.path.join(workdir, "eval_base.json"), model_cfg, base, tok, test, ec, c.template, mesh)

  # Stage 2: GRPO from the base with accuracy + format rewards only.
  t1 = time.time()
  final = run_rl_stage(model_cfg, rl_cfg, initial_variables=base, tokenizer=tok, train_examples=train,
                       eval_examples=test, workdir=os.path.join(workdir, "rl"), mesh=mesh)
  t_rl = time.time() - t1
  final_rep = _eval(os.path.join(workdir, "eval_final.json"), model_cfg, final, tok, test, ec, c.template, mesh)

  # Report.
  if not distributed.is_writer():                   # process 0 writes the report of a multi-process job
    return {"base": base_rep, "final": final_rep}
  records = MetricsWriter(os.path.join(workdir, "rl", "metrics.jsonl")).read("train")
  plot_curves(records, ["reward", "accuracy", "format", "length", "kl"], os.path.join(workdir, "curves.png"),
              title="R1-Zero GRPO (training rollouts)")
  cols = ["pass@1_greedy", "pass@1_sampled", f"pass@{ec.num_samples}", "format_greedy", "format_sampled",
          "length_sampled"]
  table = markdown_table({"base (pretrained)": base_rep, "R1-Zero (after GRPO)": final_rep}, cols,
                         percent=[c_ for c_ in cols if not c_.startswith("length")])
  q = base_rep["samples"][0]
  after = final_rep["samples"][0]
  report = "\n".join([
      f"# R1-Zero on {c.task.name} ({len(test)} held-out problems, never seen in pretraining or RL)", "",
      table, "",
      f"Held-out problem: `{q['question']}` (gold {q['answer']})", "",
      f"- before RL (greedy): `{q['completion']}`",
      f"- after RL (greedy): `{after['completion']}`", "",
      f"Wall time this invocation: pretrain {t_pre:.0f} s, RL {t_rl:.0f} s, total {time.time() - t0:.0f} s.",
  ])
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(report + "\n")
  print(report)
  return {"base": base_rep, "final": final_rep}


def _both(rep, fn):
  return all(fn(rep, reading) for reading in ("greedy", "sampled"))


# The job over seeds (r1jax.stages.seeds; --config.num_seeds=3), with the bar the recipe claims on every seed.
JOB = Job(
    name="R1-Zero", run=run, reports=lambda result: {"base": result["base"], "R1-Zero": result["final"]},
    checks=(
        ("pass@1 gains >= 40 points, greedy and sampled",
         lambda r, t: _both(r, lambda r_, x: r_["R1-Zero"][f"pass@1_{x}"] - r_["base"][f"pass@1_{x}"] >= 0.40)),
        ("R1-Zero pass@1 sampled >= 75%", lambda r, t: r["R1-Zero"]["pass@1_sampled"] >= 0.75),
        ("R1-Zero format >= 95%, greedy and sampled", lambda r, t: _both(r, lambda r_, x: r_["R1-Zero"][
            f"format_{x}"] >= 0.95)),
        ("wall time <= 6 minutes", lambda r, t: t <= 360),
    ))

