"""A job over several seeds: every figure of its evaluation table as mean, standard deviation and worst seed.

    result = run_seeds(r1_zero.JOB, c, "runs/r1_zero_seeds")   # c.seed, c.num_seeds: seeds c.seed, c.seed + 1, ...

A training outcome on a tiny model moves by several points with float rounding and by tens with the seed
(which draws the problems, the corpus and the held-out set), so one run is one draw. Seed s runs in
WORKDIR/seed_<s> exactly as the one-seed job runs in WORKDIR (each seed resumes and skips finished stages,
so rerunning the command continues an interrupted sweep). WORKDIR/seeds.md and WORKDIR/seeds.json hold
every seed's figures, their mean, sample standard deviation and minimum ("worst seed"; for lengths simply
the smallest), the wall time of each seed, and the job's own bar (`Job.checks`) judged seed by seed.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from r1jax.data.jsonl import write_json
from r1jax.eval.report import eval_columns, is_percent
from r1jax.sharding import distributed


@dataclasses.dataclass(frozen=True)
class Job:
  """What the sweep needs of a job: how to run one seed, its evaluation reports, and the bar it claims.

  run(c, workdir) -> result; reports(result) -> {row name: r1jax.eval report}; checks: (label, fn) pairs,
  fn(reports, seconds) -> bool judged on one seed's reports and wall time."""
  name: str
  run: Callable
  reports: Callable
  checks: Sequence[tuple[str, Callable]] = ()


def seeds_of(c) -> list[int]:
  """The seeds a config asks for: c.seed, c.seed + 1, ..., c.num_seeds of them (1 when the field is absent)."""
  n = int(c.get("num_seeds", 1))
  if n < 1:
    raise ValueError(f"config.num_seeds={n!r}: must be >= 1")
  return [int(c.seed) + i for i in range(n)]


def summarize(values: Sequence[float]) -> dict:
  """mean, sample standard deviation (0 for one value) and minimum of one figure over the seeds."""
  x = np.asarray(values, np.float64)
  return {"mean": float(x.mean()), "sd": float(x.std(ddof=1)) if len(x) > 1 else 0.0, "min": float(x.min()),
          "values": [float(v) for v in x]}


def aggregate(per_seed: Mapping[int, Mapping[str, Mapping]], columns: Sequence[str] | None = None) -> dict:
  """{row: {column: summarize(...)}} over the seeds' reports (seed -> row -> report), for every row and
  column that every seed has."""
  seeds = list(per_seed)
  rows = [r for r in per_seed[seeds[0]] if all(r in per_seed[s] for s in seeds)]
  columns = list(columns or eval_columns(per_seed[seeds[0]]))
  out = {}
  for row in rows:
    out[row] = {col: summarize([per_seed[s][row][col] for s in seeds]) for col in columns
                if all(col in per_seed[s][row] for s in seeds)}
  return out


def _cell(col: str, v: float) -> str:
  return f"{100 * v:.1f}" if is_percent(col) else f"{v:.1f}"


def seeds_table(summary: Mapping[str, Mapping[str, Mapping]], seeds: Sequence[int]) -> str:
  """Markdown: per row, the seeds' values (a / b / c) and then mean (sd; worst seed), rates in percent."""
  columns = list(next(iter(summary.values())))
  lines = ["| model | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
  label = " / ".join(str(s) for s in seeds)
  for row, figs in summary.items():
    unit = lambda c: "%" if is_percent(c) else ""
    lines.append(f"| {row}, seeds {label} | " + " | ".join(
        " / ".join(_cell(c, v) for v in figs[c]["values"]) + unit(c) for c in columns) + " |")
    lines.append(f"| **{row}, mean (sd; worst)** | " + " | ".join(
        f"{_cell(c, figs[c]['mean'])}{unit(c)} ({_cell(c, figs[c]['sd'])}; {_cell(c, figs[c]['min'])}{unit(c)})"
        for c in columns) + " |")
  return "\n".join(lines)


def run_seeds(job: Job, c, workdir: str, *, verbose: bool = True) -> dict:
  """Runs `job` once per seed of `c` (seeds_of) and writes the seeds' table; with one seed it is the plain
  job in `workdir`. Returns {"seeds", "per_seed" (seed -> reports), "summary", "seconds", "checks"}."""
  seeds = seeds_of(c)
  if len(seeds) == 1:
    return {"seeds": seeds, "result": job.run(c, workdir)}
  os.makedirs(workdir, exist_ok=True)
  per_seed, seconds, checks = {}, {}, {}
  for s in seeds:
    cs = c.copy_and_resolve_references()
    cs.unlock()
    cs.seed, cs.num_seeds = s, 1
    seed_dir = os.path.join(workdir, f"seed_{s}")
    timing = os.path.join(seed_dir, "wall_time.json")
    finished_before = os.path.exists(timing)
    t0 = time.time()
    reports = job.reports(job.run(cs, seed_dir))
    if finished_before:
      with open(timing) as f:
        seconds[s] = json.load(f)["seconds"]
    else:
      seconds[s] = round(time.time() - t0, 1)
      if distributed.is_writer():
        write_json(timing, {"seconds": seconds[s], "note": "wall time of the invocation that finished this seed"})
    per_seed[s] = {row: {k: v for k, v in rep.items() if isinstance(v, (int, float))} for row, rep in reports.items()}
    checks[s] = {label: bool(fn(reports, seconds[s])) for label, fn in job.checks}
  summary = aggregate(per_seed)
  result = {"seeds": seeds, "per_seed": per_seed, "summary": summary, "seconds": seconds, "checks": checks}
  if distributed.is_writer():
    write_json(os.path.join(workdir, "seeds.json"), result)
    text = _markdown(job, c, result)
    with open(os.path.join(workdir, "seeds.md"), "w") as f:
      f.write(text + "\n")
    if verbose:
      print(text)
  return result


def _markdown(job: Job, c, result: dict) -> str:
  seeds = result["seeds"]
  lines = [f"# {job.name} over {len(seeds)} seeds ({', '.join(map(str, seeds))})", "",
           seeds_table(result["summary"], seeds), "",
           "Wall time per seed (s): " + ", ".join(f"{s}: {result['seconds'][s]:.0f}" for s in seeds)]
  if job.checks:
    lines += ["", "| bar | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for label, _ in job.checks:
      lines.append(f"| {label} | " + " | ".join("yes" if result["checks"][s][label] else "**no**" for s in seeds)
                   + " |")
    held = all(all(v.values()) for v in result["checks"].values())
    lines += ["", f"Every bar holds on every seed: {'yes' if held else 'no'}."]
  return "\n".join(lines)
