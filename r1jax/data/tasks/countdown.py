"""Procedural Countdown (TinyZero): combine 3-4 numbers with + - * / to reach a target.

    task = tasks.get("countdown")
    ex = next(task.examples("train", seed=0))
    # {"task": "countdown", "question": "Using the numbers [44, 19, 35], create an equation that
    #   equals 98. ...", "answer": "(44 - 19) * ... ", "numbers": [44, 19, 35], "target": 98}

Every problem is solvable: the target is the value of a random expression over the numbers (each
used once, random operators and bracketing), kept when it is an integer in [min_target,
max_target]; that expression is the gold `answer`, but any valid equation is accepted
(`r1jax.rewards.verify_countdown`). Intermediate fractions are allowed, as in TinyZero.

The split is a hash of the sorted numbers alone: train and test never share a set of numbers, so
not even a test problem's numbers with another target can appear in training, whatever the seed
or the order the numbers are listed in.
"""
from __future__ import annotations

import dataclasses
import operator
import random
from collections.abc import Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any, ClassVar

from r1jax import rewards
from r1jax.data.tasks import procedural

# Random expressions tried per set of numbers before drawing new numbers (~10% of expressions over
# 3-4 numbers in [1, 99] land on an integer in [1, 100]).
_EXPRESSIONS_PER_DRAW = 20
_MAX_REJECTED_DRAWS = 10_000
_OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


@dataclasses.dataclass(frozen=True)
class Countdown:
  """Countdown problems.

  Attributes:
    num_numbers: how many numbers, int or inclusive (min, max) range.
    min_number: smallest number (>= 1).
    max_number: largest number.
    min_target: smallest target (>= 1).
    max_target: largest target.
    test_fraction: share of problems that belong to the test split.
  """
  num_numbers: int | tuple[int, int] = (3, 4)
  min_number: int = 1
  max_number: int = 99
  min_target: int = 1
  max_target: int = 100
  test_fraction: float = 0.1

  name: ClassVar[str] = "countdown"
  splits: ClassVar[tuple[str, ...]] = procedural.SPLITS

  def __post_init__(self):
    low, high = _range(self.num_numbers)
    if not 2 <= low <= high <= 6:
      raise ValueError(f"num_numbers must be in [2, 6] with min <= max, got {self.num_numbers}")
    if not 1 <= self.min_number <= self.max_number or len(str(self.max_number)) > 6:
      raise ValueError(f"need 1 <= min_number <= max_number < 10**6, got {self.min_number}, "
                       f"{self.max_number}")
    if not 1 <= self.min_target <= self.max_target:
      raise ValueError(f"need 1 <= min_target <= max_target, got {self.min_target}, "
                       f"{self.max_target}")
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

  def examples(self, split: str, *, seed: int = 0, num: int | None = 1000
               ) -> Iterator[dict[str, Any]]:
    """`num` distinct problems of `split` (None: an endless stream), deterministic in `seed`."""
    procedural.check_split(self.name, split, self.splits)
    procedural.check_num(num)
    return procedural.stream(self.name, self._draw, self._build, split=split, seed=seed,
                             num=num, test_fraction=self.test_fraction,
                             max_rejected=_MAX_REJECTED_DRAWS)

  def verify(self, answer_text: str, example: Mapping[str, Any]) -> bool:
    """Whether `answer_text` (the answer region of a completion) solves `example`."""
    return rewards.verify_countdown(answer_text, example)

  def _draw(self, rng: random.Random) -> tuple[str, list[int]]:
    low, high = _range(self.num_numbers)
    numbers = [rng.randint(self.min_number, self.max_number) for _ in range(rng.randint(low, high))]
    return str(sorted(numbers)), numbers

  def _build(self, rng: random.Random, numbers: list[int]) -> dict[str, Any] | None:
    for _ in range(_EXPRESSIONS_PER_DRAW):
      expression, value = _random_expression(rng, numbers)
      if (value is not None and value.denominator == 1
          and self.min_target <= value <= self.max_target):
        break
    else:
      return None
    target = int(value)
    question = (f"Using the numbers {numbers}, create an equation that equals {target}. You can "
                f"use basic arithmetic operations (+, -, *, /) and parentheses, and each number "
                f"must be used exactly once.")
    return {"task": self.name, "question": question, "answer": expression, "numbers": numbers,
            "target": target}


def _random_expression(rng: random.Random, numbers: Sequence[int]
                       ) -> tuple[str, Fraction | None]:
  """A random full bracketing of `numbers` in the given order with random operators."""

  def build(items: Sequence[int], top: bool) -> tuple[str, Fraction | None]:
    if len(items) == 1:
      return str(items[0]), Fraction(items[0])
    k = rng.randint(1, len(items) - 1)
    (left, a), (right, b) = build(items[:k], False), build(items[k:], False)
    op = rng.choice("+-*/")
    if a is None or b is None or (op == "/" and b == 0):
      value = None
    else:
      value = _OPERATORS[op](a, b)
    text = f"{left} {op} {right}"
    return (text if top else f"({text})"), value

  return build(list(numbers), True)


def _range(value: int | tuple[int, int]) -> tuple[int, int]:
  if isinstance(value, int):
    return value, value
  low, high = value
  return int(low), int(high)
