"""The full DeepSeek-R1 pipeline, every stage, on one config (configs/r1_pipeline.py).

    result = run(c, "runs/r1")   # c: configs/r1_pipeline.py's get_config(); {"reports", "acceptance", "times"}

The command line is `python -m experiments.r1_pipeline --config=configs/r1_pipeline.py --workdir=runs/r1`.
Stages, each in its own directory under the workdir and each ending in an exported model (or a traces file):
  pretrain/          the MoE base, on the language-mixed worked-solution corpus
  r1_zero/           GRPO from the base, accuracy + format rewards only
  rs_cold/           rejection sampling from R1-Zero: correct, formatted, single-script traces
  sft_cold/          cold-start SFT of the base on those traces
  rl2/               GRPO from the cold start, accuracy + format + language consistency
  rs_r1/             rejection sampling from RL round 2
  sft_r1/            SFT of the base (or of rl2) on those traces: R1
  student_pretrain/  the dense student on the corpus alone (the no-teacher baseline)
  distill/           the student after SFT on the teacher's traces (+ token-level KD from the teacher)
  eval/              every model on the held-out test split: results.{json,md,png}
and report.md, curves.png. A finished stage is skipped; a killed stage resumes from its checkpoints, so
rerunning the same command after a kill continues where it stopped.

Each stage's checkpoints and result record its fingerprint (r1jax.stages.fingerprint): its config, and its
inputs by content (data, tokenizer, and the weights of the model it starts from). A stage whose config or
inputs changed (a new seed, learning rate, an upstream stage run again) is stale: its directory is moved
aside to `<stage>.stale-<time>` and it runs again, and so, since its weights change, does every stage that
depends on it; evaluation caches are keyed by the weights too.
"""
from __future__ import annotations

import json
import os
import time

from r1jax.checkpoint import load_model
from r1jax.config_utils import build
from r1jax.data import get_template, tasks
from r1jax.data.corpora import addition_corpus
from r1jax.eval import EvalConfig
from r1jax.eval.report import eval_table, plot_curves
from r1jax.model import ModelConfig
from r1jax.sharding import distributed
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import evaluate, exported
from r1jax.stages import fingerprint as fp_lib
from r1jax.stages.models import SP_TOKENIZER, as_source
from r1jax.stages.grpo import RLStageConfig
from r1jax.stages.lm import LMStageConfig
from r1jax.stages.rejection import TRACES, RejectionConfig, rejection_sample
from r1jax.stages.seeds import Job
from r1jax.stages.writers import MetricsWriter


LM_STAGES = ("pretrain", "sft_cold", "sft_r1", "student_pretrain", "distill")
RL_STAGES = ("r1_zero", "rl2")
RS_STAGES = ("rs_cold", "rs_r1")
# Table rows: stage directory -> name in the evaluation table.
ROWS = {"pretrain": "base", "r1_zero": "R1-Zero", "sft_cold": "cold-start SFT", "rl2": "RL round 2",
        "sft_r1": "R1", "student_pretrain": "student (corpus only)", "distill": "student (distilled)"}


def validate(c, vocab_size: int = 64) -> dict:
  """Builds every section: a bad field fails here, before data, tokenizer or compilation."""
  out = {
      "model": build(ModelConfig, {**c.model.to_dict(), "vocab_size": vocab_size}, "config.model"),
      "student": build(ModelConfig, {**c.student.to_dict(), "vocab_size": vocab_size}, "config.student"),
  }
  for name in LM_STAGES:
    out[name] = build(LMStageConfig, c[name], f"config.{name}")
  for name in RL_STAGES:
    out[name] = build(RLStageConfig, c[name], f"config.{name}")
  for name in RS_STAGES:
    out[name] = build(RejectionConfig, c[name].config, f"config.{name}.config")
    if c[name].num_problems < 1:
      raise ValueError(f"config.{name}.num_problems={c[name].num_problems}: must be >= 1")
  build(EvalConfig, c.evaluate.eval, "config.evaluate.eval")
  if c.sft_r1_init not in ("base", "rl2"):
    raise ValueError(f"config.sft_r1_init={c.sft_r1_init!r}: must be 'base' or 'rl2'")
  if c.distill_teacher not in ("r1", "rl2"):
    raise ValueError(f"config.distill_teacher={c.distill_teacher!r}: must be 'r1' or 'rl2'")
  return out


def _rejection(stage_dir: str, model_dir: str, tok, examples, rc: RejectionConfig, mesh=None) -> list[dict]:
  """Rejection sampling into stage_dir/traces.jsonl (skipped when finished); returns the kept traces."""
  os.makedirs(stage_dir, exist_ok=True)
  path = os.path.join(stage_dir, TRACES)
  cfg, variables, _ = load_model(model_dir, ModelConfig)
  rejection_sample(cfg, variables, tok, examples, rc, path, source=model_dir, mesh=mesh,
                   model_id=as_source(model_dir).identity())
  return exported.sft_data(path)


def _rerun_if_stale(path: str, fn):
  """fn(), and when it finds that what `path` holds was made under another fingerprint, moves `path` aside
  (to `<path>.stale-<time>`) and runs fn() again from scratch."""
  try:
    return fn()
  except fp_lib.FingerprintMismatch as e:
    inside = os.path.abspath(e.path) == path or os.path.abspath(e.path).startswith(path + os.sep)
    if not inside:
      raise
    fp_lib.move_aside(path, str(e))
    if path.endswith(SP_TOKENIZER):
      fp_lib.move_aside(path + ".fingerprint.json", "its tokenizer is stale")
    return fn()


def run(c, workdir: str) -> dict:
  """Runs every stage of config `c` in `workdir`, skipping finished ones; writes report.md and returns
  {"reports": row name -> evaluation report, "acceptance": rejection-sampling stats, "times": seconds}."""
  t0 = time.time()
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  validate(c)                                                          # fail fast, before any work
  mesh = mesh_from_config(c.get("mesh"))                               # every stage runs on it
  d = lambda name: os.path.join(workdir, name)

  task = tasks.from_config(c.task)
  train = list(task.examples("train", seed=c.seed, num=c.num_train_problems))
  template = get_template(c.template)
  corpus = addition_corpus(train, template, modes=dict(c.corpus_modes), mixing=c.mixing.to_dict(), seed=c.seed)
  corpus = [{"prompt": r["prompt"], "completion": r["completion"]} for r in corpus]
  tok_path = d("tokenizer.model")
  tok = _rerun_if_stale(tok_path, lambda: exported.tokenizer(tok_path, [r["prompt"] + r["completion"] for r in corpus],
                                                             **c.tokenizer))
  cfgs = validate(c, tok.vocab_size)
  carry = {SP_TOKENIZER: tok_path}                                     # every export carries the tokenizer
  times = {}

  def stage(name, fn):
    """Runs stage `name` (moved aside and run again when stale), timed."""
    t = time.time()
    out = _rerun_if_stale(d(name), fn)
    times[name] = round(time.time() - t, 1)
    return out

  # 1. The MoE base, pretrained on the corpus.
  base = stage("pretrain", lambda: exported.lm_stage(d("pretrain"), cfgs["model"], cfgs["pretrain"], corpus, tok,
                                                     mesh=mesh, files=carry))
  # 2. R1-Zero: GRPO with rule rewards only.
  r1_zero = stage("r1_zero", lambda: exported.rl_stage(d("r1_zero"), cfgs["r1_zero"], base, tok, train, None,
                                                       mesh=mesh, files=carry))
  # 3. Cold start: rejection-sample R1-Zero, SFT the base on the readable traces.
  cold_data = stage("rs_cold", lambda: _rejection(d("rs_cold"), r1_zero, tok, train[:c.rs_cold.num_problems],
                                                  cfgs["rs_cold"], mesh))
  cold = stage("sft_cold", lambda: exported.lm_stage(d("sft_cold"), cfgs["model"], cfgs["sft_cold"], cold_data, tok,
                                                     init=base, mesh=mesh, files=carry))
  # 4. RL round 2 with the language-consistency reward.
  rl2 = stage("rl2", lambda: exported.rl_stage(d("rl2"), cfgs["rl2"], cold, tok, train, None, mesh=mesh,
                                               files=carry))
  # 5. Rejection-sample RL round 2; SFT on those traces gives R1.
  r1_data = stage("rs_r1", lambda: _rejection(d("rs_r1"), rl2, tok, train[:c.rs_r1.num_problems], cfgs["rs_r1"],
                                              mesh))
  r1 = stage("sft_r1", lambda: exported.lm_stage(d("sft_r1"), cfgs["model"], cfgs["sft_r1"], r1_data, tok,
                                                 init=base if c.sft_r1_init == "base" else rl2, mesh=mesh,
                                                 files=carry))
  # 6. Distillation: the dense student, without and with the teacher's traces.
  student_base = stage("student_pretrain", lambda: exported.lm_stage(
      d("student_pretrain"), cfgs["student"], cfgs["student_pretrain"], corpus, tok, mesh=mesh, files=carry))
  teacher = r1 if c.distill_teacher == "r1" else rl2
  student = stage("distill", lambda: exported.lm_stage(d("distill"), cfgs["student"], cfgs["distill"], r1_data, tok,
                                                       init=student_base, teacher=teacher, mesh=mesh, files=carry))
  # 7. Evaluation of every model on the held-out split (its caches are keyed by the models' weights).
  models = {"pretrain": base, "r1_zero": r1_zero, "sft_cold": cold, "rl2": rl2, "sft_r1": r1,
            "student_pretrain": student_base, "distill": student}
  reports = stage("eval", lambda: evaluate.run(c.evaluate, models, tok_path, d("eval"), mesh=mesh))
  times["evaluate"] = times.pop("eval")
  return _report(c, workdir, {ROWS[k]: v for k, v in reports.items()}, times, t0)


def _report(c, workdir: str, reports: dict, times: dict, t0: float) -> dict:
  if not distributed.is_writer():                   # process 0 writes the report of a multi-process job
    return {"reports": reports, "acceptance": {}, "times": times}
  curves = []
  for stage in RL_STAGES:
    for r in MetricsWriter(os.path.join(workdir, stage, "metrics.jsonl")).read("train"):
      curves.append({**r, "stage": stage})
  keys = ["reward", "accuracy", "format", "reward_language_consistency", "length", "kl"]
  for stage in RL_STAGES:
    plot_curves([r for r in curves if r["stage"] == stage], keys, os.path.join(workdir, f"curves_{stage}.png"),
                title=f"{ROWS[stage]} GRPO (training rollouts)")
  acceptance = {}
  for stage in RS_STAGES:
    with open(os.path.join(workdir, stage, TRACES + ".stats.json")) as f:
      stats = json.load(f)
    acceptance[stage] = {t: v for t, v in stats["tasks"].items()}
  lines = [f"# R1 pipeline on {c.task.name} ({reports[ROWS['pretrain']]['num_examples']} held-out problems)", "",
           eval_table(reports), "", "Rejection sampling (acceptance = samples passing the rule / samples):", ""]
  for stage, per_task in acceptance.items():
    for t, v in per_task.items():
      lines.append(f"- {stage} ({t}): {v['samples']} samples, acceptance {100 * v['acceptance_rate']:.1f}%, "
                   f"{v['kept']} traces kept from {v['prompts_with_kept']}/{v['prompts']} problems")
  q = reports[ROWS["pretrain"]]["samples"][0]
  lines += ["", f"Held-out problem `{q['question']}` (gold {q['answer']}), greedy:"]
  for name, rep in reports.items():
    lines.append(f"- {name}: `{rep['samples'][0]['completion']}`")
  lines += ["", "Wall time this invocation (s): " + ", ".join(f"{k} {v}" for k, v in times.items()) +
            f"; total {time.time() - t0:.0f}."]
  report = "\n".join(lines)
  with open(os.path.join(workdir, "report.md"), "w") as f:
    f.write(report + "\n")
  print(report)
  return {"reports": reports, "acceptance": acceptance, "times": times}


def _readings(fn):
  return lambda r, t: all(fn(r, x) for x in ("greedy", "sampled"))


# The job over seeds (r1jax.stages.seeds; --config.num_seeds=3), with the story the pipeline claims on every seed.
JOB = Job(
    name="R1 pipeline", run=run, reports=lambda result: result["reports"],
    checks=(
        ("R1 language-consistent >= 95%, greedy and sampled",
         _readings(lambda r, x: r["R1"][f"language_consistent_{x}"] >= 0.95)),
        ("R1 pass@1 >= R1-Zero's - 2 points, greedy and sampled",
         _readings(lambda r, x: r["R1"][f"pass@1_{x}"] >= r["R1-Zero"][f"pass@1_{x}"] - 0.02)),
        ("RL round 2 pass@1 >= the cold-start SFT's, greedy and sampled",
         _readings(lambda r, x: r["RL round 2"][f"pass@1_{x}"] >= r["cold-start SFT"][f"pass@1_{x}"])),
        ("distilled student >= corpus-only student + 20 points, greedy and sampled",
         _readings(lambda r, x: r["student (distilled)"][f"pass@1_{x}"]
                   >= r["student (corpus only)"][f"pass@1_{x}"] + 0.20)),
        ("distilled student >= 80% of its teacher's pass@1, greedy and sampled",
         _readings(lambda r, x: r["student (distilled)"][f"pass@1_{x}"] >= 0.8 * r["R1"][f"pass@1_{x}"])),
        ("wall time <= 15 minutes", lambda r, t: t <= 900),
    ))

