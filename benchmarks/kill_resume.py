"""kill -9 the main job at random moments, rerun the same command, and compare with an uninterrupted run.

    python -m benchmarks.kill_resume --kills 10 --checkpoint_kills 3 --workdir /tmp/kill_resume

The job is `python -m experiments.r1_zero` on a reduced config (configs/r1_zero.py:runlocal with 40
pretraining steps checkpointed every 5 and 6 GRPO steps checkpointed every 2, about a minute on 2 cores), so
that a kill can land in every phase: start-up, pretraining, a checkpoint write, the base model's evaluation,
a GRPO step (rollout, reference, update) and the final evaluation.

1. A reference run goes uninterrupted (its wall time T is measured).
2. Each of `--kills` trials starts the same command in its own workdir, sends SIGKILL to its process group at
   a moment drawn uniformly from [0.03 T, 0.97 T] (seeded), then reruns the command once to completion. A run
   that finishes before its moment is not a kill: the trial starts over with a moment drawn from the length
   that run took (`redraws` counts these).
3. Each of `--checkpoint_kills` trials kills the job the moment a checkpoint is being written (an Orbax
   `*.orbax-checkpoint-tmp*` directory appears in the workdir; polled every few milliseconds), the n-th
   such write of the run for the n-th trial, then reruns it.

A trial is identical when, after the rerun, the workdir holds the reference's results exactly: both
evaluation reports (with the SHA-256 of the weights they evaluated), every metrics line of both stages
(timings aside), the report (its wall-time line aside) and every array of the last checkpoint of both stages
(parameters, optimizer state, reference model, step), bit for bit.

Output: one JSON line per trial {"trial", "kind", "kill_at_s", "phase", "identical", "differences"} and a
summary line {"trials", "identical", ...}; the exit status is 1 unless every trial is identical.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np

from benchmarks.common import emit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = ["--config.pretrain.num_steps=40", "--config.pretrain.checkpoint_every=5", "--config.pretrain.log_every=1",
             "--config.pretrain.optim.total_steps=40", "--config.rl.num_steps=6", "--config.rl.checkpoint_every=2"]
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def command(workdir: str) -> list[str]:
  return [sys.executable, "-m", "experiments.r1_zero", "--config=configs/r1_zero.py:runlocal", *OVERRIDES,
          f"--workdir={workdir}"]


def start(workdir: str, log: str) -> subprocess.Popen:
  out = open(log, "ab")
  return subprocess.Popen(command(workdir), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(workdir: str, log: str) -> float:
  t = time.time()
  p = start(workdir, log)
  if p.wait() != 0:
    raise SystemExit(f"the run in {workdir} failed (status {p.returncode}); see {log}")
  return time.time() - t


def writing_checkpoint(workdir: str) -> bool:
  return bool(glob.glob(os.path.join(workdir, "*", "checkpoints", "*.orbax-checkpoint-tmp*")))


def phase(workdir: str, log: str) -> str:
  """Where the run was when it was killed, from its output and its files."""
  if writing_checkpoint(workdir):
    return "checkpoint write"
  with open(log, "rb") as f:
    lines = [_ANSI.sub("", l).strip() for l in f.read().decode(errors="replace").replace("\r", "\n").splitlines()]
  progress = [l for l in lines if l.startswith(("lm [", "grpo ["))]
  if not progress:
    return "start-up (tokenizer, compilation)"
  name, done, total = re.match(r"(lm|grpo) \[.*?\] (\d+)/(\d+)", progress[-1]).groups()
  done, total = int(done), int(total)
  if name == "lm":
    if done < total:
      return f"pretraining step {done + 1}"
    return "base evaluation" if not os.path.exists(os.path.join(workdir, "eval_base.json")) else "GRPO start-up"
  if done < total:
    return f"GRPO step {done + 1} (rollout, reference, update)"
  return "final evaluation" if not os.path.exists(os.path.join(workdir, "eval_final.json")) else "report"


def _metrics(path: str) -> list[dict]:
  with open(path) as f:
    return [{k: v for k, v in json.loads(l).items() if "time" not in k and k != "it_per_s"} for l in f]


def _last_checkpoint(directory: str):
  from r1jax.checkpoint import CheckpointManager
  ckpt = CheckpointManager(directory)
  try:
    step = ckpt.latest_step()
    state, _ = ckpt.restore(step)
    return step, state
  finally:
    ckpt.close()


def _bits(x) -> np.ndarray:
  import jax
  if hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def differences(ref: str, run: str) -> list[str]:
  """What in `run` differs from `ref` (empty: identical)."""
  import jax
  out = []
  for name in ("eval_base.json", "eval_final.json"):
    with open(os.path.join(ref, name)) as a, open(os.path.join(run, name)) as b:
      if json.load(a) != json.load(b):
        out.append(name)
  for stage in ("pretrain", "rl"):
    if _metrics(os.path.join(ref, stage, "metrics.jsonl")) != _metrics(os.path.join(run, stage, "metrics.jsonl")):
      out.append(f"{stage}/metrics.jsonl")
    (sa, ta), (sb, tb) = _last_checkpoint(os.path.join(ref, stage, "checkpoints")), \
        _last_checkpoint(os.path.join(run, stage, "checkpoints"))
    la, lb = jax.tree_util.tree_leaves_with_path(ta), jax.tree_util.tree_leaves_with_path(tb)
    if sa != sb or [p for p, _ in la] != [p for p, _ in lb]:
      out.append(f"{stage} checkpoint steps/tree")
      continue
    for (path, a), (_, b) in zip(la, lb):
      a, b = _bits(a), _bits(b)
      if a.shape != b.shape or a.tobytes() != b.tobytes():
        out.append(f"{stage} checkpoint {sa}: {jax.tree_util.keystr(path)}")
  strip = lambda p: [l for l in open(p).read().splitlines() if not l.startswith("Wall time")]
  if strip(os.path.join(ref, "report.md")) != strip(os.path.join(run, "report.md")):
    out.append("report.md")
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--kills", type=int, default=10, help="trials killed at a random moment")
  ap.add_argument("--checkpoint_kills", type=int, default=3, help="trials killed mid checkpoint write")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--workdir", default="/tmp/kill_resume")
  args = ap.parse_args()
  shutil.rmtree(args.workdir, ignore_errors=True)
  os.makedirs(args.workdir)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.workdir, "jax_cache"))
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  ref = os.path.join(args.workdir, "reference")
  finish(ref, ref + ".log")                         # fills the compilation cache: the next runs time alike
  shutil.rmtree(ref)
  wall = finish(ref, ref + ".log")
  emit(reference_wall_s=round(wall, 1))
  rng = np.random.default_rng(args.seed)
  trials = [("random", float(rng.uniform(0.03, 0.97) * wall)) for _ in range(args.kills)]
  trials += [("checkpoint write", n + 1) for n in range(args.checkpoint_kills)]
  identical = 0
  phases = []
  for i, (kind, when) in enumerate(trials):
    w = os.path.join(args.workdir, f"trial_{i}")
    log = w + ".log"
    redraws = 0
    while True:
      p = start(w, log)
      t0 = time.time()
      if kind == "random":
        while p.poll() is None and time.time() - t0 < when:
          time.sleep(0.005)
      else:                                         # the n-th checkpoint write of the run
        seen, was = 0, False
        while p.poll() is None:
          now = writing_checkpoint(w)
          if now and not was:
            seen += 1
            if seen == when:
              break
          was = now
          time.sleep(0.002)
      killed_at = time.time() - t0
      if p.poll() is None:
        break
      # The run finished before its moment came (a run can be faster than the reference): not a kill. Start
      # over in a fresh workdir with a new moment drawn from the part of the run that did happen.
      p.wait()
      shutil.rmtree(w, ignore_errors=True)
      os.remove(log)
      if kind != "random" or redraws == 5:
        raise SystemExit(f"trial {i}: the run finished before the kill ({kind}, {when})")
      redraws += 1
      when = float(rng.uniform(0.03, 0.97) * killed_at)
    where = phase(w, log)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    rerun_s = finish(w, log)
    diff = differences(ref, w)
    identical += not diff
    phases.append(where)
    emit(trial=i, kind=kind, kill_at_s=round(killed_at, 2), redraws=redraws, phase=where, rerun_s=round(rerun_s, 1),
         identical=not diff, differences=diff[:10])
    shutil.rmtree(w, ignore_errors=True)
  emit(trials=len(trials), identical=identical, phases=sorted(set(phases)), reference_wall_s=round(wall, 1))
  sys.exit(0 if identical == len(trials) else 1)


if __name__ == "__main__":
  main()
