"""Countdown verifier: an equation over the given numbers that hits the target (TinyZero task).

The equation is parsed, never run: `ast.parse(mode="eval")` builds a syntax tree (it compiles and
executes nothing) and a whitelist walker computes its value with exact `fractions.Fraction`s.
Allowed are binary `+ - * /`, parentheses and non-negative decimal integer literals; everything
else (names, calls, attributes, `**`, unary minus, floats, `0x10`, `1_000`, ...) is rejected. The
integers used must be exactly the given numbers as a multiset: each used once, none left out.

Bounds: the equation is at most `MAX_EQUATION_CHARS` characters and may only contain digits,
spaces, `+-*/()`, so parsing is cheap and no literal is long enough for int() to be slow; the value
is computed only after the literal count matched, so the tree has at most len(numbers) leaves.
"""
from __future__ import annotations

import ast
import operator
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from r1jax.rewards.math import last_boxed, _on_unexpected

MAX_EQUATION_CHARS = 256
_ALLOWED_CHARS = frozenset("0123456789+-*/() ")
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv}
# How models write the operators and delimiters in prose or LaTeX, mapped to the ASCII whitelist.
_OPERATOR_SPELLINGS = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("\u00d7", "*"),
                       ("\u22c5", "*"), ("\u00b7", "*"), ("\u00f7", "/"), ("\u2212", "-"),
                       ("\u2013", "-"), ("\\left", ""), ("\\right", ""), ("\\(", ""),
                       ("\\)", ""), ("$", ""), ("\t", " "), ("\n", " "))


def evaluate_equation(text: str, numbers: Sequence[int]) -> Fraction | None:
  """Exact value of an equation that uses each of `numbers` exactly once, or None.

  Args:
    text: the expression, e.g. "(25 - 5) * 4 / 2"; a trailing "= <integer>" is allowed and
      ignored here (`verify_countdown` checks it against the target).
    numbers: the given numbers.

  Returns:
    The value, or None when the text is not a whitelisted expression, uses other numbers than
    `numbers` (as a multiset), or divides by zero.
  """
  expression = _expression_part(text)
  if expression is None:
    return None
  try:
    tree = ast.parse(expression, mode="eval")
  except (SyntaxError, ValueError, RecursionError, MemoryError):
    return None
  literals = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Constant):
      if type(node.value) is not int:  # bool is an int subclass; floats can't get here anyway.
        return None
      literals.append(node.value)
    elif not isinstance(node, (ast.Expression, ast.BinOp, *_BINOPS)):
      return None
  if Counter(literals) != Counter(numbers):
    return None
  try:
    return _value(tree.body)
  except ZeroDivisionError:
    return None


def verify_countdown(answer_text: str, example: Mapping[str, Any]) -> bool:
  """Countdown check: the answer equation uses `example["numbers"]` and equals the target.

  The equation is the last `\\boxed{}` content if any, else the last non-empty line of the answer
  text (the whole text, for a one-line answer tag). It may end in "= <target>"; a different
  right-hand side is wrong even when the left side hits the target.

  Args:
    answer_text: the answer region of a completion.
    example: a countdown example with `numbers` (list of int) and `target` (int).

  Returns:
    Whether the equation is valid and equals the target.

  Raises:
    ValueError: the example lacks valid `numbers` / `target` (a data bug).
  """
  numbers, target = example.get("numbers"), example.get("target")
  if (not isinstance(numbers, (list, tuple)) or not numbers
      or not all(type(n) is int for n in numbers) or type(target) is not int):
    raise ValueError(f"countdown example needs int `numbers` and `target`, got {numbers!r}, "
                     f"{target!r}")
  try:
    boxed = last_boxed(answer_text)
    candidate = boxed if boxed is not None else _last_line(answer_text)
    if candidate is None:
      return False
    candidate = _normalize(candidate)
    if candidate is None:
      return False
    _, _, rhs = candidate.partition("=")
    if rhs and rhs.strip() != str(target):
      return False
    return evaluate_equation(candidate, numbers) == target
  except Exception:  # pylint: disable=broad-except
    return _on_unexpected("verify_countdown")


def _value(node: ast.AST) -> Fraction:
  # Depth is bounded: the literal count equals len(numbers), so the tree has that many leaves.
  if isinstance(node, ast.Constant):
    return Fraction(node.value)
  return _BINOPS[type(node.op)](_value(node.left), _value(node.right))


def _last_line(text: str) -> str | None:
  text = text.rstrip()
  line = text[text.rfind("\n") + 1:]
  return line if line.strip() else None


def _normalize(candidate: str) -> str | None:
  if len(candidate) > 4 * MAX_EQUATION_CHARS:
    return None
  for old, new in _OPERATOR_SPELLINGS:
    candidate = candidate.replace(old, new)
  candidate = candidate.strip().rstrip(".").strip()
  return candidate if len(candidate) <= MAX_EQUATION_CHARS else None


def _expression_part(text: str) -> str | None:
  """The left side of "expr = n" (or all of "expr"), if it uses only whitelisted characters."""
  if len(text) > MAX_EQUATION_CHARS:
    return None
  expression, equals, rhs = text.partition("=")
  if equals and (not rhs.strip().isdigit() or not rhs.strip().isascii()):
    return None
  expression = expression.strip()
  if not expression or not set(expression) <= _ALLOWED_CHARS:
    return None
  return expression
