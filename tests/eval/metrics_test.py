"""Tests for r1jax.eval.metrics: pass@k vs the binomial formula, maj@k tie-breaking, summaries."""
import math

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from r1jax.eval import metrics


def comb_pass_at_k(n, c, k):
  return 1.0 - math.comb(n - c, k) / math.comb(n, k)  # math.comb(a, k) = 0 for k > a.


@pytest.mark.parametrize("n,c,k", [
    (1, 0, 1), (1, 1, 1), (10, 0, 1), (10, 0, 10), (10, 10, 1), (10, 10, 10), (10, 3, 1),
    (10, 3, 5), (10, 3, 7), (10, 3, 8), (10, 7, 4), (16, 1, 8), (64, 5, 16), (200, 3, 100),
])
def test_pass_at_k_matches_comb(n, c, k):
  np.testing.assert_allclose(metrics.pass_at_k(n, c, k), comb_pass_at_k(n, c, k), rtol=1e-12,
                             atol=1e-15)


def test_pass_at_k_edge_cases():
  assert metrics.pass_at_k(10, 0, 5) == 0.0  # c = 0
  assert metrics.pass_at_k(10, 10, 5) == 1.0  # c = n
  assert metrics.pass_at_k(10, 8, 3) == 1.0  # n - c < k
  np.testing.assert_allclose(metrics.pass_at_k(10, 3, 1), 0.3)  # pass@1 = c/n
  for bad in [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
    with pytest.raises(ValueError):
      metrics.pass_at_k(*bad)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.integers(1, 300).flatmap(
    lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_property(nck):
  n, c, k = nck
  p = metrics.pass_at_k(n, c, k)
  np.testing.assert_allclose(p, comb_pass_at_k(n, c, k), rtol=1e-9, atol=1e-12)
  if k < n:
    assert metrics.pass_at_k(n, c, k + 1) >= p - 1e-12  # monotone in k


def test_maj_at_k_and_ties():
  # "b" wins 3-2 over "a".
  assert metrics.maj_at_k(["a", "b", "b", "a", "b"], [1, 0, 0, 1, 0], 5) == 0.0
  # First 4 samples: tie 2-2; "a" occurs first, so "a" wins.
  assert metrics.maj_at_k(["a", "b", "b", "a", "b"], [1, 0, 0, 1, 0], 4) == 1.0
  assert metrics.majority_answer(["a", "b", "b", "a"]) == 0
  # Same multiset in another order: now "b" occurs first and wins; the rule is deterministic.
  assert metrics.majority_answer(["b", "a", "a", "b"]) == 0
  assert metrics.maj_at_k(["b", "a", "a", "b"], [0, 1, 1, 0], 4) == 0.0
  # Three-way tie among singletons: the first sample wins.
  assert metrics.majority_answer(["x", "y", "z"]) == 0
  # None does not vote, even when most frequent.
  assert metrics.majority_answer([None, None, "7", None]) == 2
  assert metrics.maj_at_k([None, None, "7", None], [0, 0, 1, 0], 4) == 1.0
  assert metrics.maj_at_k([None, None], [0, 0], 2) == 0.0
  # Repeated calls agree (no hash-order dependence).
  answers = [str(i % 3) for i in range(9)]
  assert len({metrics.majority_answer(answers) for _ in range(5)}) == 1
  with pytest.raises(ValueError):
    metrics.maj_at_k(["a"], [1, 0], 1)
  with pytest.raises(ValueError):
    metrics.maj_at_k(["a", "b"], [1, 0], 3)


def test_mean_pass_at_1_and_summary():
  correct = [[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 0, 0, 0]]
  answers = [["4", "5", "5", "4"], ["1", "2", "2", None], ["9"] * 4, ["3", "8", "3", "3", "2", "8"]]
  assert metrics.mean_pass_at_1(correct[0]) == 0.5
  out = metrics.summarize_problems(correct, answers, ks=(1, 2, 4))
  assert out["num_problems"] == 4
  np.testing.assert_allclose(out["num_samples"], 4.5)
  np.testing.assert_allclose(out["pass@1_mean"], np.mean([0.5, 0.0, 1.0, 1 / 6]))
  np.testing.assert_allclose(out["pass@1"], out["pass@1_mean"])
  np.testing.assert_allclose(
      out["pass@2"], np.mean([comb_pass_at_k(4, 2, 2), 0.0, 1.0, comb_pass_at_k(6, 1, 2)]))
  # maj@4: p0 tie "4"/"5" -> "4" (first, correct); p1 "2" wrong; p2 correct; p3 "3" wrong.
  np.testing.assert_allclose(out["maj@4"], 0.5)
  with pytest.raises(ValueError, match="k=5"):
    metrics.summarize_problems(correct, ks=(5,))
  with pytest.raises(ValueError):
    metrics.summarize_problems([])
