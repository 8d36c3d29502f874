"""Sample-based accuracy estimators for reasoning evals: pass@k, maj@k, mean pass@1.

Pure Python / numpy over per-sample grader outputs; no JAX. The R1 report's numbers are
pass@1 averaged over k samples per problem (R1 §"Evaluation setup": k between 4 and 64,
temperature 0.6) and cons@64 (= maj@64); `summarize_problems` gives both.
"""
from typing import Hashable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples of which c are correct (Chen et al. 2021, arXiv 2107.03374).

  pass@k = 1 - C(n-c, k) / C(n, k), the probability that a random k-subset of the n samples holds
  at least one correct one. Computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i), the numerically
  stable product form from the paper's Figure 3, which avoids huge binomials.

  Args:
    n: number of samples, >= 1.
    c: number of correct samples, 0 <= c <= n.
    k: 1 <= k <= n.

  Returns:
    pass@k in [0, 1].
  """
  n, c, k = int(n), int(c), int(k)
  if n < 1 or not 0 <= c <= n:
    raise ValueError(f"need n >= 1 and 0 <= c <= n, got n={n}, c={c}.")
  if not 1 <= k <= n:
    raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}.")
  if n - c < k:  # every k-subset contains a correct sample.
    return 1.0
  return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_pass_at_1(correct_flags: Sequence[bool]) -> float:
  """Fraction of correct samples for one problem: pass@1 averaged over its n samples (= c/n)."""
  flags = np.asarray(correct_flags, dtype=bool)
  if flags.size == 0:
    raise ValueError("mean_pass_at_1 needs at least one sample.")
  return float(flags.mean())


def majority_answer(answers: Sequence[Hashable | None]) -> int | None:
  """Index of the first sample holding the most frequent answer, or None if nothing votes.

  None answers (unparseable output) do not vote. Ties between equally frequent answers go to
  the answer that appears first in `answers`, so the result does not depend on hashing or dict
  order.
  """
  counts: dict[Hashable, int] = {}
  first: dict[Hashable, int] = {}
  for i, a in enumerate(answers):
    if a is None:
      continue
    counts[a] = counts.get(a, 0) + 1
    first.setdefault(a, i)
  if not counts:
    return None
  # max over (count, -first index): highest count, then earliest first occurrence.
  best = max(counts, key=lambda a: (counts[a], -first[a]))
  return first[best]


def maj_at_k(answers: Sequence[Hashable | None], correct_flags: Sequence[bool], k: int) -> float:
  """Majority vote (self-consistency, Wang et al. 2022) over the first k samples of one problem.

  Rule: among answers[:k], the most frequent non-None answer wins; ties are broken by earliest
  first occurrence (see `majority_answer`). The vote is correct iff correct_flags at the winning
  answer's first occurrence is True (samples with equal normalised answers should have equal
  flags; the first one decides if a grader disagrees with itself). No vote -> 0.

  Taking the first k samples (not a bootstrap over k-subsets as in verl's maj@N) keeps the
  result deterministic; with k = n it is the usual cons@n.

  Args:
    answers: per-sample normalised final answers (hashable), None where none was extracted.
    correct_flags: per-sample grader verdicts, same length.
    k: 1 <= k <= len(answers).

  Returns:
    1.0 or 0.0.
  """
  if len(answers) != len(correct_flags):
    raise ValueError(f"{len(answers)} answers but {len(correct_flags)} correct flags.")
  if not 1 <= k <= len(answers):
    raise ValueError(f"need 1 <= k <= {len(answers)}, got k={k}.")
  winner = majority_answer(answers[:k])
  return 0.0 if winner is None else float(bool(correct_flags[winner]))


def summarize_problems(
    correct_pn: Sequence[Sequence[bool]],
    answers_pn: Sequence[Sequence[Hashable | None]] | None = None,
    *,
    ks: Sequence[int] = (1,),
) -> dict[str, float]:
  """Per-problem estimators averaged over problems (each problem weighs the same).

  Args:
    correct_pn: for each of P problems, its n_p per-sample correct flags (n_p may vary).
    answers_pn: optional, same layout, normalised answers for maj@k.
    ks: the k values to report; each must be <= every n_p.

  Returns:
    {"num_problems", "num_samples" (mean n_p), "pass@1_mean" (mean of c_p/n_p),
     "pass@{k}" for k in ks, and "maj@{k}" for k in ks when answers_pn is given}.
  """
  if not correct_pn:
    raise ValueError("summarize_problems needs at least one problem.")
  if answers_pn is not None and len(answers_pn) != len(correct_pn):
    raise ValueError(f"{len(answers_pn)} answer lists for {len(correct_pn)} problems.")
  ns = [len(flags) for flags in correct_pn]
  for k in ks:
    if not 1 <= k <= min(ns):
      raise ValueError(f"k={k} must be in [1, min samples per problem = {min(ns)}].")
  out = {
      "num_problems": float(len(correct_pn)),
      "num_samples": float(np.mean(ns)),
      "pass@1_mean": float(np.mean([mean_pass_at_1(f) for f in correct_pn])),
  }
  for k in ks:
    out[f"pass@{k}"] = float(np.mean([pass_at_k(len(f), int(np.sum(f)), k) for f in correct_pn]))
  if answers_pn is not None:
    for k in ks:
      out[f"maj@{k}"] = float(np.mean(
          [maj_at_k(a, f, k) for a, f in zip(answers_pn, correct_pn)]))
  return out
