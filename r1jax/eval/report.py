"""Run reports: curves of training metrics and bar charts of evaluations as PNGs, markdown tables.

    cols = eval_columns(reports)                 # reports: model name -> r1jax.eval.evaluate(...) dict
    print(eval_table(reports))
    plot_bars(reports, [c for c in cols if not c.startswith("length")], "results.png")
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# The evaluation table's columns, in order; "{k}" is the report's sample count (its largest pass@k).
# Columns a report lacks are dropped, so the language columns appear only when they were measured.
EVAL_COLUMNS = ("pass@1_greedy", "pass@1_sampled", "pass@{k}", "maj@{k}", "format_greedy", "format_sampled",
                "language_consistent_greedy", "language_consistent_sampled", "length_sampled")


def plot_curves(records: Sequence[Mapping], keys: Sequence[str], path: str, *, title: str = "") -> None:
  """One panel per metric key over "step" (records from MetricsWriter.read("train"))."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  keys = [k for k in keys if any(k in r for r in records)]
  fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
  for ax, k in zip(axes[0], keys):
    pts = [(r["step"], r[k]) for r in records if isinstance(r.get(k), (int, float))]
    if pts:
      ax.plot(*zip(*pts), marker=".", lw=1)
    ax.set_title(k)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def markdown_table(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str], *,
                   percent: Sequence[str] = ()) -> str:
  """rows: name -> {column: value}. Columns in `percent` are printed as percentages."""
  head = "| model | " + " | ".join(columns) + " |"
  sep = "|---|" + "---|" * len(columns)
  lines = [head, sep]
  for name, vals in rows.items():
    cells = []
    for c in columns:
      v = vals.get(c)
      if v is None:
        cells.append("")
      elif c in percent:
        cells.append(f"{100 * v:.1f}%")
      else:
        cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
    lines.append(f"| {name} | " + " | ".join(cells) + " |")
  return "\n".join(lines)



def _num_samples(report: Mapping) -> int:
  """k of a report: the largest k among its "pass@{k}" keys (1 if none)."""
  ks = [int(m.group(1)) for key in report if (m := re.fullmatch(r"pass@(\d+)", key))]
  return max(ks, default=1)


def eval_columns(reports: Mapping[str, Mapping]) -> list[str]:
  """The `EVAL_COLUMNS` that at least one report has, with {k} filled in from each report."""
  cols: list[str] = []
  for template in EVAL_COLUMNS:
    for rep in reports.values():
      name = template.format(k=_num_samples(rep))
      if name in rep and name not in cols:
        cols.append(name)
  return cols


def is_percent(column: str) -> bool:
  """Rates (accuracy, format, language) print as percentages; lengths are token counts."""
  return not column.startswith(("length", "num_"))


def eval_table(reports: Mapping[str, Mapping], *, per_task: bool = True) -> str:
  """Markdown table of evaluation reports, one row per model (`name -> evaluate() report`).

  With `per_task`, models whose report has a "per_task" breakdown get one more row per task,
  "name / task", after the overall rows, so one table shows where a model gains or loses.
  """
  rows: dict[str, Mapping] = dict(reports)
  if per_task:
    for name, rep in reports.items():
      for task, sub in (rep.get("per_task") or {}).items():
        rows[f"{name} / {task}"] = sub
  cols = eval_columns(reports)
  return markdown_table(rows, cols, percent=[c for c in cols if is_percent(c)])


def plot_bars(rows: Mapping[str, Mapping[str, float]], columns: Sequence[str], path: str, *,
              title: str = "") -> None:
  """Grouped bar chart: one group per column (metric), one bar per row (model), one colour per model.

  Missing values are left as gaps rather than zero-height bars, so "not measured" is not read as 0.
  Columns should share a scale (e.g. all rates in [0, 1]); plot lengths separately.
  """
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  import numpy as np

  names = list(rows)
  columns = list(columns)
  width = 0.8 / max(len(names), 1)
  fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(columns) + 0.3 * len(names)), 3.2))
  x = np.arange(len(columns))
  for i, name in enumerate(names):
    vals = [rows[name].get(c) for c in columns]
    heights = [float(v) if isinstance(v, (int, float)) else np.nan for v in vals]
    ax.bar(x + (i - (len(names) - 1) / 2) * width, heights, width, label=name)
  ax.set_xticks(x)
  ax.set_xticklabels(columns, rotation=30, ha="right", fontsize=8)
  ax.grid(axis="y", alpha=0.3)
  if names:
    ax.legend(fontsize=7)
  if title:
    ax.set_title(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
