"""Procedural multi-digit arithmetic: +, -, * and long division with remainder.

    task = tasks.get("arithmetic", digits=(2, 4), ops="+-*/")
    for ex in task.examples("train", seed=0, num=1000): ...
    # {"task": "arithmetic", "question": "What is 4821 * 37?", "answer": "178377",
    #  "op": "*", "operands": [4821, 37]}

Difficulty knobs: `digits` (operand length, an int or an inclusive (min, max) range, drawn per
operand) and `ops`. Subtraction may go negative (a sign is part of the skill). Division asks for
the integer quotient and the remainder, answered as "Q R r" ("17 R 3"), which keeps the gold exact
and is what long division produces; the dividend has the drawn length and the divisor between 1
and one fewer digits (at least 2), so quotients are multi-digit. See
`r1jax.rewards.verify_arithmetic` for the accepted spellings.

The split is a hash of the problem ("a+b", operands sorted for + and *, so "3 + 5" and "5 + 3" are
one problem), independent of seed and knobs: train and test never share a problem.
"""
from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from r1jax import rewards
from r1jax.data.tasks import procedural

OPS = "+-*/"
MAX_DIGITS = 100  # Answers must stay far below the verifiers' number-length limit.


@dataclasses.dataclass(frozen=True)
class Arithmetic:
  """Arithmetic problems.

  Attributes:
    digits: operand length in digits, int or inclusive (min, max) range.
    ops: the operators to draw from, a non-empty subset of "+-*/".
    test_fraction: share of problems that belong to the test split.
  """
  digits: int | tuple[int, int] = (1, 4)
  ops: str = OPS
  test_fraction: float = 0.1

  name: ClassVar[str] = "arithmetic"
  splits: ClassVar[tuple[str, ...]] = procedural.SPLITS

  def __post_init__(self):
    low, high = _digit_range(self.digits)
    if not 1 <= low <= high <= MAX_DIGITS:
      raise ValueError(f"digits must be in [1, {MAX_DIGITS}] with min <= max, got {self.digits}")
    if not self.ops or not set(self.ops) <= set(OPS):
      raise ValueError(f"ops must be a non-empty subset of {OPS!r}, got {self.ops!r}")
    if not 0 < self.test_fraction < 1:
      raise ValueError(f"test_fraction must be in (0, 1), got {self.test_fraction}")

  def examples(self, split: str, *, seed: int = 0, num: int | None = 1000
               ) -> Iterator[dict[str, Any]]:
    """`num` distinct problems of `split` (None: an endless stream), deterministic in `seed`."""
    procedural.check_split(self.name, split, self.splits)
    procedural.check_num(num)
    return procedural.stream(self.name, self._draw, _build, split=split, seed=seed, num=num,
                             test_fraction=self.test_fraction)

  def verify(self, answer_text: str, example: Mapping[str, Any]) -> bool:
    """Whether `answer_text` (the answer region of a completion) answers `example`."""
    return rewards.verify_arithmetic(answer_text, example)

  def _draw(self, rng: random.Random) -> tuple[str, tuple[str, int, int]]:
    op = rng.choice(sorted(set(self.ops)))
    low, high = _digit_range(self.digits)
    a = _number(rng, rng.randint(low, high))
    if op == "/":
      b = max(2, _number(rng, rng.randint(1, max(1, len(str(a)) - 1))))
    else:
      b = _number(rng, rng.randint(low, high))
    first, second = sorted((a, b)) if op in "+*" else (a, b)
    return f"{first}{op}{second}", (op, a, b)


def _build(rng: random.Random, problem: tuple[str, int, int]) -> dict[str, Any]:
  del rng  # The problem fixes everything.
  op, a, b = problem
  if op == "/":
    quotient, remainder = divmod(a, b)
    answer = f"{quotient} R {remainder}"
    question = (f"What is {a} divided by {b}? Give the quotient and the remainder as "
                f"'Q R r' (for example, 17 divided by 5 is '3 R 2').")
  else:
    answer = str({"+": a + b, "-": a - b, "*": a * b}[op])
    question = f"What is {a} {op} {b}?"
  return {"task": Arithmetic.name, "question": question, "answer": answer, "op": op,
          "operands": [a, b]}


def _digit_range(digits: int | tuple[int, int]) -> tuple[int, int]:
  if isinstance(digits, int):
    return digits, digits
  low, high = digits
  return int(low), int(high)


def _number(rng: random.Random, num_digits: int) -> int:
  low = 0 if num_digits == 1 else 10**(num_digits - 1)
  return rng.randint(low, 10**num_digits - 1)
