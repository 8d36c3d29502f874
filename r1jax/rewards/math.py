"""Answer verifiers for numeric and LaTeX answers: GSM8K, arithmetic, MATH-500.

Every verifier has the signature `verify(answer_text, example) -> bool`, where `answer_text` is the
part of the completion that holds the answer (`format.answer_region`: the content of the answer
tags, else what follows `</think>`) and `example` is a task example with the gold `answer`.

Answer policy, in order:
  1. if the text contains `\\boxed{...}`, only the content of the last one counts;
  2. numbers (`verify_number`): the text read as one number, else its last number;
  3. LaTeX (`verify_latex`): the text as a whole, compared by normalised string, then as numbers,
     then by math-verify in a worker process under a hard deadline.

Numbers are exact rationals (`fractions.Fraction`). Accepted spellings: signs (also U+2212),
thousands commas ("1,234"), decimals, "a/b", `\\frac{a}{b}` (and \\dfrac, \\tfrac), and trappings
that don't change the value: "$", "\\$", "%", "^\\circ", LaTeX spacing, a final period, units or
words around the number ("42 dollars"). An integer gold needs an exactly equal prediction ("42.0"
is right, "41.9999" is wrong); a non-integer gold accepts a relative error of 1e-6, which lets a
decimal expansion of a repeating fraction (0.333333 for 1/3) match but not a rounded one (0.33).

Bounds, so that adversarial completions cost little: a digit string longer than `MAX_DIGITS` is not
a number (it is never converted to int; Python refuses > 4300 digits anyway), numbers are searched
only in the last `MAX_SCAN_CHARS` characters, brace matching stops after `MAX_BOXED_CHARS`, and a
LaTeX answer longer than `MAX_LATEX_CHARS` is wrong without being parsed. No two quantifiers in the
regular expressions here can match the same characters, so they never backtrack catastrophically
(the 1 MB cases in tests/rewards/reward_fuzz_test.py run in milliseconds).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from r1jax.rewards import _math_verify_pool

MAX_DIGITS = 1000
MAX_SCAN_CHARS = 20_000
MAX_BOXED_CHARS = 20_000
MAX_LATEX_CHARS = 2_000
REL_TOL = Fraction(1, 10**6)

_log = logging.getLogger(__name__)

_NUMBER_RE = re.compile(
    r"""
    (?<![\w.])                                  # not the tail of a word, a number or a decimal
    (?P<sign>[-+\u2212]?)
    (?:
        \\[dt]?frac\s*\{\s*(?P<fn>\d+)\s*\}\s*\{\s*(?P<fd>\d+)\s*\}     # \frac{a}{b}
      | (?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.(?P<dec>\d+))?       # 1,234  or 1234.5
        (?:/(?P<den>\d+))?                                           # a/b
      | \.(?P<dec0>\d+)                                              # .5
    )
    """, re.VERBOSE)

# Trappings removed before reading a whole answer as one number. Order matters: "\\$" before "$".
_NUMBER_NOISE = ("\\$", "$", "\\%", "%", "\\!", "\\,", "\\;", "\\:", "\\ ", "^{\\circ}", "^\\circ",
                 "\u00b0", "\\left", "\\right", "\\displaystyle", "\\mathrm", "\\textbf")


def parse_number(text: str) -> Fraction | None:
  """`text` read as exactly one number (after dropping trappings), or None.

  >>> parse_number("$1,234.50"), parse_number("\\\\frac{3}{4}"), parse_number("42 dollars")
  (Fraction(2469, 2), Fraction(3, 4), None)
  """
  if len(text) > 4 * MAX_DIGITS:
    return None
  s = text.replace("{,}", ",")  # LaTeX thousands separator: 1{,}000.
  for noise in _NUMBER_NOISE:
    s = s.replace(noise, "")
  s = s.strip().rstrip(".").strip()
  if s.startswith("{") and s.endswith("}"):
    s = s[1:-1]
  match = _NUMBER_RE.fullmatch(s)
  return None if match is None else _to_fraction(match)


def last_number(text: str) -> Fraction | None:
  """The last number in `text` (searched in its last `MAX_SCAN_CHARS` characters), or None."""
  text = _tail(text, MAX_SCAN_CHARS)
  value = None
  for match in _NUMBER_RE.finditer(text):
    converted = _to_fraction(match)
    if converted is not None:
      value = converted
  return value


def numbers_match(pred: Fraction, gold: Fraction) -> bool:
  """Exact for an integer gold; relative tolerance `REL_TOL` for a non-integer gold."""
  if pred == gold:
    return True
  if gold.denominator == 1:
    return False
  return abs(pred - gold) <= REL_TOL * abs(gold)


def last_boxed(text: str) -> str | None:
  """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched; None if there is none.

  `\\boxed 5` (no braces) gives "5". An unbalanced last box gives None.
  """
  start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
  if start < 0:
    return None
  i = start + (len("\\boxed") if text.startswith("\\boxed", start) else len("\\fbox"))
  end_scan = min(len(text), i + MAX_BOXED_CHARS)
  while i < end_scan and text[i] in " \t":
    i += 1
  if i >= end_scan:
    return None
  if text[i] != "{":
    j = i
    while j < end_scan and not text[j].isspace() and text[j] not in "$.,;":
      j += 1
    return text[i:j] or None
  depth = 0
  j = i
  while j < end_scan:
    c = text[j]
    if c == "\\":
      j += 2  # An escaped character, e.g. the set braces in \{1, 2\}.
      continue
    if c == "{":
      depth += 1
    elif c == "}":
      depth -= 1
      if depth == 0:
        return text[i + 1:j]
    j += 1
  return None


def verify_number(answer_text: str, example: Mapping[str, Any]) -> bool:
  """Numeric answer check (GSM8K and any task with a number as gold `answer`).

  Args:
    answer_text: the answer region of a completion.
    example: a task example; `example["answer"]` is the gold number (str or int).

  Returns:
    Whether the predicted number (last boxed, else the whole text as one number, else the last
    number in it) equals the gold.

  Raises:
    ValueError: the gold answer is not a number (a data bug, never model output).
  """
  gold = _gold_number(example)
  try:
    pred = _predicted_number(answer_text)
    return pred is not None and numbers_match(pred, gold)
  except Exception:  # pylint: disable=broad-except
    return _on_unexpected("verify_number")


# "176 R 2", "176 r2", "176, remainder 2", "176 with a remainder of 2", "176 rem. 2".
_QUOTIENT_REMAINDER_RE = re.compile(
    r"(?<![\w.])(?P<q>[-\u2212]?\d+)[\s,;]*"
    r"(?:remainder|rem(?![a-z])\.?|r(?![a-z])|with\s+(?:a\s+)?remainder)"
    r"[\s:=]*(?:of[\s:=]*)?(?P<r>\d+)(?![\d.])",
    re.IGNORECASE)


def parse_quotient_remainder(text: str) -> tuple[int, int] | None:
  """The last "Q R r" style pair in `text` (see `verify_arithmetic`), or None."""
  pair = None
  for match in _QUOTIENT_REMAINDER_RE.finditer(_tail(text, MAX_SCAN_CHARS)):
    q, r = match["q"].replace("\u2212", "-"), match["r"]
    if len(q) <= MAX_DIGITS and len(r) <= MAX_DIGITS:
      pair = (int(q), int(r))
  return pair


def verify_arithmetic(answer_text: str, example: Mapping[str, Any]) -> bool:
  """Arithmetic task check: a number, or for long division a quotient with remainder.

  For `example["op"] == "/"` the gold `answer` is "Q R r" (r may be 0). The prediction is read as
  the last "Q R r" pair (also "Q remainder r", "Q r r", "Q, remainder: r", "Q with a remainder of
  r"); a bare number counts as "Q R 0". Other operators are `verify_number`.

  Args:
    answer_text: the answer region of a completion.
    example: an arithmetic example (`answer`, `op`).

  Returns:
    Whether the prediction equals the gold.

  Raises:
    ValueError: the gold answer cannot be read (a data bug).
  """
  if example.get("op") != "/":
    return verify_number(answer_text, example)
  gold = parse_quotient_remainder(str(example["answer"]))
  if gold is None:
    raise ValueError(f"arithmetic gold answer is not 'Q R r': {example['answer']!r}")
  try:
    boxed = last_boxed(answer_text)
    candidate = boxed if boxed is not None else answer_text
    pred = parse_quotient_remainder(candidate)
    if pred is None:
      number = _predicted_number(candidate)
      if number is None or number.denominator != 1:
        return False
      pred = (int(number), 0)
    return pred == gold
  except Exception:  # pylint: disable=broad-except
    return _on_unexpected("verify_arithmetic")


def verify_latex(answer_text: str, example: Mapping[str, Any]) -> bool:
  """MATH-style check: LaTeX answers compared for mathematical equivalence.

  Cheap decisions first, in the calling thread: normalised strings equal -> True; both sides plain
  numbers -> compared as numbers (`numbers_match`). Only what remains goes to math-verify in the
  worker pool (`r1jax.rewards.configure_math_verify`), whose deadline makes a slow check False.

  Args:
    answer_text: the answer region of a completion; the last `\\boxed{}` in it wins.
    example: a task example; `example["answer"]` is the gold LaTeX without delimiters.

  Returns:
    Whether the prediction is equivalent to the gold.

  Raises:
    ValueError: the gold answer is empty or not a string (a data bug).
  """
  gold = example.get("answer")
  if not isinstance(gold, str) or not gold.strip():
    raise ValueError(f"LaTeX gold answer must be a non-empty str, got {gold!r}")
  try:
    boxed = last_boxed(answer_text)
    candidate = (boxed if boxed is not None else answer_text).strip()
    if not candidate or len(candidate) > MAX_LATEX_CHARS:
      return False
    decided = _fast_latex_equal(gold, candidate)
    if decided is not None:
      return decided
    if _EXPLOSIVE_RE.search(candidate):
      return False
    return _math_verify_pool.get_pool().check(gold, candidate, boxed=boxed is not None)
  except Exception:  # pylint: disable=broad-except
    return _on_unexpected("verify_latex")


# Exponent towers ("10^{10^{10}}", "10^10^10") and Python powers ("10**10**10") make sympy build
# astronomically large integers. No MATH answer has them (all 500 MATH-500 answers pass), so they
# are rejected before reaching a worker: the deadline would catch them too, at the price of a
# killed and restarted worker.
_EXPLOSIVE_RE = re.compile(r"\*\*|\^\s*\{[^{}]*\^|\^\s*\w+\s*\^")


# Spellings that don't change a LaTeX answer's meaning. Order matters: "\\$" before "$".
_LATEX_REWRITES = (
    ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\left", ""), ("\\right", ""),
    ("\\displaystyle", ""), ("\\$", ""), ("$", ""), ("\\!", ""), ("\\,", ""), ("\\;", ""),
    ("\\:", ""), ("\\ ", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\%", ""),
)


def normalize_latex(text: str) -> str:
  """A light canonical form for string comparison: delimiters, spacing, \\dfrac and \\left gone."""
  # A LaTeX row break "\\\\" must survive the removal of the spacing command "\\ " below.
  s = text.strip().replace("\\\\", "\x00")
  for old, new in _LATEX_REWRITES:
    s = s.replace(old, new)
  s = "".join(s.split())
  return s.rstrip(".").replace("\x00", "\\\\")


def _fast_latex_equal(gold: str, pred: str) -> bool | None:
  if normalize_latex(gold) == normalize_latex(pred):
    return True
  gold_number, pred_number = parse_number(gold), parse_number(pred)
  if gold_number is not None and pred_number is not None:
    return numbers_match(pred_number, gold_number)
  return None


def _gold_number(example: Mapping[str, Any]) -> Fraction:
  gold = parse_number(str(example.get("answer", "")))
  if gold is None:
    raise ValueError(f"gold answer is not a number: {example.get('answer')!r}")
  return gold


def _predicted_number(text: str) -> Fraction | None:
  boxed = last_boxed(text)
  candidate = boxed if boxed is not None else text
  value = parse_number(candidate)
  return value if value is not None else last_number(candidate)


def _to_fraction(match: re.Match) -> Fraction | None:
  """The value of a `_NUMBER_RE` match; None if it is too long or divides by zero."""
  if match["fn"] is not None:
    num, den, scale = match["fn"], match["fd"], 0
  else:
    whole = (match["int"] or "").replace(",", "")
    decimals = match["dec"] if match["int"] is not None else match["dec0"]
    decimals = decimals or ""
    num, den, scale = whole + decimals, match["den"] or "1", len(decimals)
  if len(num) > MAX_DIGITS or len(den) > MAX_DIGITS:
    return None
  denominator = int(den) * 10**scale
  if denominator == 0:
    return None
  value = Fraction(int(num), denominator)
  return -value if match["sign"] in ("-", "\u2212") else value


def _tail(text: str, limit: int) -> str:
  """The last `limit` characters, without a number cut in half at the front."""
  if len(text) <= limit:
    return text
  tail = text[-limit:]
  return tail.lstrip("0123456789,./")


def _on_unexpected(name: str) -> bool:
  # The verifiers are written not to raise on any text; this is the last line of defence so one
  # odd completion cannot stop a training run. Logged with the traceback so the bug gets fixed.
  _log.warning("%s raised on a completion; graded wrong", name, exc_info=True)
  return False
