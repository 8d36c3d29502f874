"""Tests for r1jax.rewards.countdown: whitelist equation evaluation and the countdown verifier."""
from fractions import Fraction

import pytest

from r1jax.rewards import accuracy_reward, evaluate_equation, verify_countdown

EXAMPLE = {"task": "countdown", "numbers": [44, 19, 35], "target": 98}


def completion(answer: str) -> str:
  return f"<think>Try some combinations.</think> <answer>{answer}</answer>"


@pytest.mark.parametrize("answer", [
    "44 + 19 + 35", "35 + 19 + 44", "(44 + 19) + 35", "44 + (19 + 35)", "44+19+35",
    "44 + 19 + 35 = 98", "\\boxed{44 + 19 + 35}", "$44 + 19 + 35$", "44 + 19 + 35.",
    "I think the equation is:\n44 + 19 + 35",  # The last line is the equation.
    "(" * 100 + "44 + 19 + 35" + ")" * 100,
])
def test_valid_equations_are_accepted(answer):
  assert accuracy_reward(completion(answer), EXAMPLE) == 1.0


@pytest.mark.parametrize("example, answer", [
    ({"numbers": [3, 5, 7], "target": 22}, "3 \\times 5 + 7"),
    ({"numbers": [3, 5, 7], "target": 22}, "3 × 5 + 7"),
    ({"numbers": [6, 4, 3], "target": 8}, "6 / 3 * 4"),
    ({"numbers": [1, 3, 4, 6], "target": 24}, "6 / (1 - 3 / 4)"),    # Exact fractions in between.
    ({"numbers": [2, 2, 5], "target": 9}, "2 + 2 + 5"),              # Repeated given number.
    ({"numbers": [8, 2, 10], "target": 6}, "\\left(8 \\div 2\\right) + 10 - 8 + 0 * 0"),
])
def test_operator_spellings_and_fractions(example, answer):
  # The last case uses 8 twice and extra zeros: wrong. All others are right.
  expected = 0.0 if "0 * 0" in answer else 1.0
  assert accuracy_reward(completion(answer), {"task": "countdown", **example}) == expected


@pytest.mark.parametrize("answer", [
    "44 + 44 + 10",               # Reuses a number, misses others.
    "44 + 19 + 35 + 0",           # An extra number.
    "44 + 19",                    # A missing number.
    "44 + 54",                    # Numbers not given (19 + 35 combined by hand).
    "44 * 19 - 35",               # Wrong value.
    "44 + 19 + 35 = 99",          # Right value, wrong stated target.
    "44 + 19 + 35 = 98 = 98",
    "98",
    "4419 + 35",                  # Digits concatenated.
    "44 + 19 + 35.0", "44 + 19 + 0x23", "44 + 19 + 3_5",
    "-(-44) + 19 + 35",           # Unary operators are not whitelisted.
    "44 + 19 + 35 ** 1", "(44 + 19 + 35) // 1 ** 1",
    "__import__('os').system('echo pwned')",
    "44 + 19 + len('ab') * 35",
    "44 + 19 + (35).real",
    "[44, 19, 35]",
    "lambda: 98",
    "44 + 19 + True * 35",
    "44 + 19 + 35 if 1 else 0",
    "44 +",
    "",
    "(" * 200 + "44 + 19 + 35" + ")" * 200,   # Longer than MAX_EQUATION_CHARS.
])
def test_invalid_equations_are_rejected(answer):
  assert accuracy_reward(completion(answer), EXAMPLE) == 0.0


def test_evaluate_equation_values():
  assert evaluate_equation("6 / (1 - 3 / 4)", [1, 3, 4, 6]) == Fraction(24)
  assert evaluate_equation("(7 - 1) / 4 * 2", [1, 2, 4, 7]) == Fraction(3)
  assert evaluate_equation("1 / 3 + 2", [1, 2, 3]) == Fraction(7, 3)
  assert evaluate_equation("5 / (3 - 3)", [3, 3, 5]) is None    # Division by zero.
  assert evaluate_equation("1 + 2", [1, 2, 3]) is None
  assert evaluate_equation("1 + 2 = 3", [1, 2]) == Fraction(3)


def test_bad_example_is_an_error():
  with pytest.raises(ValueError):
    verify_countdown("1 + 2", {"task": "countdown", "numbers": "12", "target": 3})
