"""Tests for r1jax.rewards.combine: weighted sums, per-reward options and the registry."""
import pytest

from r1jax.rewards import REWARDS, VERIFIERS, combine
from r1jax.data import tasks

EXAMPLE = {"task": "gsm8k", "answer": "18"}
GOOD = "<think>Janet sells 9 eggs at 2 dollars</think> <answer>18</answer>"


def test_weighted_sum_and_parts():
  total, parts = combine(GOOD, EXAMPLE, weights={"accuracy": 1.0, "format": 0.2})
  assert parts == {"accuracy": 1.0, "format": 1.0}
  assert total == pytest.approx(1.2)
  total, parts = combine("18", EXAMPLE, weights={"accuracy": 1.0, "format": 0.2})
  assert parts == {"accuracy": 1.0, "format": 0.0}
  assert total == pytest.approx(1.0)


def test_options_extra_and_zero_weights():
  completion = "Janet sells 9 eggs at 2 dollars 数学</think> <answer>17</answer>"
  total, parts = combine(
      completion, EXAMPLE,
      weights={"accuracy": 1.0, "format": 0.5, "language_consistency": 0.1, "overlong": 1.0},
      options={"format": {"strict": False}, "language_consistency": {"target": "latin"}},
      extra={"overlong": -0.25})
  # Words: Janet sells eggs at dollars (latin 5; "9", "2" are numbers), 数, 学 (han 2).
  assert parts == pytest.approx({"accuracy": 0.0, "format": 1.0,
                                 "language_consistency": 5 / 7, "overlong": -0.25})
  assert total == pytest.approx(0.5 + 0.1 * 5 / 7 - 0.25)
  _, parts = combine(GOOD, EXAMPLE, weights={"accuracy": 0.0, "format": 1.0})
  assert parts == {"format": 1.0}  # Zero weight: not computed.


def test_unknown_reward_names_are_config_errors():
  with pytest.raises(ValueError, match="unknown reward"):
    combine(GOOD, EXAMPLE, weights={"acuracy": 1.0})
  with pytest.raises(ValueError, match="unknown reward"):
    combine(GOOD, EXAMPLE, weights={"accuracy": 1.0}, options={"fromat": {}})


def test_registries_cover_every_task():
  assert set(REWARDS) == {"accuracy", "format", "language_consistency"}
  for name in tasks.names():
    assert name in VERIFIERS
