"""Run reports: curves of training metrics as a PNG, markdown tables of evaluation results."""
from __future__ import annotations

from collections.abc import Mapping, Sequence


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
