"""Tests for r1jax.rewards.math: numbers, \\boxed{}, GSM8K / arithmetic / MATH-500 verifiers."""
import concurrent.futures
import time
from fractions import Fraction

import pytest

from r1jax.data import tasks
from r1jax.rewards import (accuracy_reward, last_boxed, last_number, numbers_match, parse_number,
                           parse_quotient_remainder, verify_arithmetic, verify_latex,
                           verify_number)
from r1jax.rewards import _math_verify_pool
from r1jax.rewards import _math_verify_worker


def completion(answer: str) -> str:
  return f"<think>Let me work it out step by step.</think>\n<answer>{answer}</answer>"


# ----------------------------------------------------------------------------------------------
# Numbers.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("42", Fraction(42)), (" 42. ", Fraction(42)), ("-42", Fraction(-42)),
    ("\u221242", Fraction(-42)), ("+7", Fraction(7)), ("1,234", Fraction(1234)),
    ("1,234,567.5", Fraction(2469135, 2)), ("$1,234.50", Fraction(2469, 2)),
    ("\\$36", Fraction(36)), ("42%", Fraction(42)), ("42\\%", Fraction(42)),
    ("0.5", Fraction(1, 2)), (".5", Fraction(1, 2)), ("3/4", Fraction(3, 4)),
    ("\\frac{3}{4}", Fraction(3, 4)), ("\\dfrac{3}{4}", Fraction(3, 4)),
    ("-\\frac {3} {4}", Fraction(-3, 4)), ("30^\\circ", Fraction(30)), ("{7}", Fraction(7)),
    ("10,\\!080", Fraction(10080)), ("1{,}000", Fraction(1000)), ("007", Fraction(7)),
])
def test_parse_number(text, value):
  assert parse_number(text) == value


@pytest.mark.parametrize("text", [
    "", "abc", "42 dollars", "3 5", "1/0", "\\frac{1}{0}", "1,23", "x2", "9" * 1001, "1e5",
    "\\sqrt{2}",
])
def test_parse_number_rejects(text):
  assert parse_number(text) is None


@pytest.mark.parametrize("text, value", [
    ("So 10 - 3 = 7 dollars.", Fraction(7)),
    ("The temperature is -5 now", Fraction(-5)),
    ("x-3", Fraction(3)),          # A minus glued to a word is an operator, not a sign.
    ("H2O and 12", Fraction(12)),  # Digits glued to letters are not numbers.
    ("1,234,5678", Fraction(5678)),
    ("no numbers", None),
    ("9" * 5000, None),            # Too long to be a number; never converted to int.
])
def test_last_number(text, value):
  assert last_number(text) == value


def test_numbers_match_is_exact_for_integers_and_tolerant_for_decimals():
  assert numbers_match(Fraction(42), Fraction(42))
  assert numbers_match(Fraction("42.0"), Fraction(42))
  assert not numbers_match(Fraction("41.9999"), Fraction(42))
  assert not numbers_match(Fraction("42.0000001"), Fraction(42))
  assert numbers_match(Fraction("0.333333"), Fraction(1, 3))      # |err| / gold = 1e-6.
  assert not numbers_match(Fraction("0.33"), Fraction(1, 3))
  assert numbers_match(Fraction("0.5000001"), Fraction(1, 2))


@pytest.mark.parametrize("text, content", [
    ("\\boxed{42}", "42"),
    ("first \\boxed{1} then \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # Escaped braces don't close the box.
    ("\\fbox{7}", "7"),
    ("\\boxed 5.", "5"),
    ("\\boxed{\\boxed{3}}", "3"),
    ("\\boxed{unclosed", None),
    ("nothing", None),
])
def test_last_boxed(text, content):
  assert last_boxed(text) == content


# ----------------------------------------------------------------------------------------------
# GSM8K and number answers.
# ----------------------------------------------------------------------------------------------


def test_every_gsm8k_test_gold_is_correct_and_a_changed_number_is_wrong():
  examples = list(tasks.get("gsm8k").examples("test"))
  assert len(examples) == 1319
  for ex in examples:
    gold = ex["answer"]
    assert accuracy_reward(completion(gold), ex) == 1.0, gold
    assert accuracy_reward(completion(str(int(gold) + 1)), ex) == 0.0, gold


@pytest.mark.parametrize("answer, expected", [
    ("1234", 1.0), ("1,234", 1.0), ("$1,234", 1.0), ("$1,234.00", 1.0), ("1234 dollars", 1.0),
    ("\\boxed{1234}", 1.0), ("The total is \\boxed{1,234} dollars.", 1.0),
    ("The answer is 1234.", 1.0), ("1230 + 4 = 1234", 1.0),
    ("1233.9999", 0.0), ("1235", 0.0), ("-1234", 0.0), ("12345", 0.0),
    ("\\boxed{1233} but really 1234", 0.0),  # The box is the committed answer.
    ("", 0.0), ("one thousand", 0.0),
])
def test_number_answer_spellings(answer, expected):
  ex = {"task": "gsm8k", "answer": "1234"}
  assert accuracy_reward(completion(answer), ex) == expected


def test_fallbacks_without_answer_tags():
  ex = {"task": "gsm8k", "answer": "18"}
  assert accuracy_reward("<think>9 * 2 = 18? no, 17</think> It is 18.", ex) == 1.0
  assert accuracy_reward("<think>9 * 2 = 18</think> It is 17.", ex) == 0.0  # Reasoning ignored.
  assert accuracy_reward("So the answer is \\boxed{18}.", ex) == 1.0
  assert accuracy_reward("<think>9 * 2 = 18", ex) == 0.0  # Cut off inside the think block.


def test_bad_examples_are_errors_not_zero_rewards():
  with pytest.raises(ValueError, match="known"):
    accuracy_reward("4", {"task": "no-such-task", "answer": "4"})
  with pytest.raises(ValueError, match="not a number"):
    verify_number("4", {"task": "gsm8k", "answer": "four"})
  with pytest.raises(ValueError):
    verify_latex("4", {"task": "math500", "answer": ""})


def test_verifier_override_by_example_field():
  ex = {"task": "my_new_dataset", "verifier": "number", "answer": "7"}
  assert accuracy_reward(completion("7"), ex) == 1.0


# ----------------------------------------------------------------------------------------------
# Arithmetic: long division with remainder.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, expected", [
    ("176 R 2", True), ("176 r 2", True), ("176R2", True), ("176 remainder 2", True),
    ("176, remainder: 2", True), ("176 with a remainder of 2", True), ("176 rem. 2", True),
    ("1234 / 7 = 176 R 2", True), ("\\boxed{176 R 2}", True),
    ("176 R 3", False), ("177 R 2", False), ("176", False), ("176.2857", False), ("", False),
])
def test_division_with_remainder(answer, expected):
  ex = {"task": "arithmetic", "answer": "176 R 2", "op": "/", "operands": [1234, 7]}
  assert verify_arithmetic(answer, ex) is expected


def test_division_without_remainder_accepts_bare_quotient():
  ex = {"task": "arithmetic", "answer": "12 R 0", "op": "/", "operands": [84, 7]}
  assert verify_arithmetic("12", ex)
  assert verify_arithmetic("12 R 0", ex)
  assert not verify_arithmetic("12.5", ex)
  assert parse_quotient_remainder("q is 3 R 1 and then 5 R 4") == (5, 4)


# ----------------------------------------------------------------------------------------------
# MATH-500 and LaTeX answers.
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def math500():
  return list(tasks.get("math500").examples("test"))


def test_every_math500_gold_is_correct_as_a_completion(math500):
  assert len(math500) == 500
  for ex in math500:
    gold = ex["answer"]
    spaced = gold.replace(",", " , ").replace("+", " + ").replace("=", " = ")
    for answer in (gold, f"\\boxed{{{gold}}}", f"${gold}$", gold.replace("\\frac", "\\dfrac"),
                   "".join(gold.split()), spaced, f"The answer is $\\boxed{{{gold}}}$."):
      assert accuracy_reward(completion(answer), ex) == 1.0, (gold, answer)


def test_every_math500_gold_is_equivalent_through_the_worker_pool(math500):
  # The rewrites above are decided by the fast path; this sends all 500 through math-verify in
  # the production pool, from 4 threads at once (also a thread-safety check).
  pool = _math_verify_pool.get_pool()

  def check(ex):
    rewritten = ex["answer"].replace("\\frac", "\\dfrac").replace(" ", "")
    return pool.check(ex["answer"], rewritten, boxed=True)

  with concurrent.futures.ThreadPoolExecutor(4) as executor:
    results = list(executor.map(check, math500))
  assert [ex["answer"] for ex, ok in zip(math500, results) if not ok] == []


def test_changed_numeric_math500_golds_are_wrong(math500):
  numeric = [ex for ex in math500 if parse_number(ex["answer"]) is not None]
  assert len(numeric) > 250
  for ex in numeric:
    changed = parse_number(ex["answer"]) + 1
    assert accuracy_reward(completion(f"\\boxed{{{changed}}}"), ex) == 0.0, ex["answer"]


@pytest.mark.parametrize("gold, answer", [
    ("\\frac{1}{2}", "0.5"), ("\\frac{1}{2}", "\\dfrac12"), ("\\frac{1}{2}", "$\\tfrac{1}{2}$"),
    ("\\frac{1}{2}", "2/4"), ("\\frac{1}{2}", "\\sin(\\pi/6)"), ("0.5", "\\frac{1}{2}"),
    ("2\\sqrt{3}", "\\sqrt{12}"), ("10\\sqrt{2}", "\\sqrt{200}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi/2)"),
    ("(-\\infty,3]", "(-\\infty, 3]"), ("3, 5, 7", "7, 5, 3"), ("1\\frac{4}{5}", "9/5"),
    ("\\text{(B)}", "B"), ("6+9i", "9i + 6"), ("\\frac{\\sqrt{3}}{2}", "\\frac{1}{2}\\sqrt{3}"),
    ("30^\\circ", "30"), ("\\$36", "36"), ("y = -2x", "-2x"), ("x^2+2x+1", "(x+1)^2"),
])
def test_equivalent_latex_is_correct(gold, answer):
  ex = {"task": "math500", "answer": gold}
  assert accuracy_reward(completion(answer), ex) == 1.0
  assert accuracy_reward(completion(f"\\boxed{{{answer}}}"), ex) == 1.0


@pytest.mark.parametrize("gold, answer", [
    ("\\frac{1}{2}", "0.51"), ("\\frac{1}{2}", "\\frac{1}{3}"), ("2\\sqrt{3}", "3\\sqrt{2}"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3, \\pi)"), ("(-\\infty,3]", "(-\\infty, 3)"),
    ("x^2+2x+1", "(x-1)^2"), ("\\text{(B)}", "C"), ("42", "41.9999"),
])
def test_different_latex_is_wrong(gold, answer):
  assert accuracy_reward(completion(answer), {"task": "math500", "answer": gold}) == 0.0


def test_oversized_and_explosive_latex_is_wrong_without_a_worker():
  pool = _math_verify_pool.get_pool()
  before = pool.num_checks
  ex = {"task": "math500", "answer": "\\sqrt{2}"}
  for answer in ("\\sqrt{" + "2" * 3000 + "}", "10^{10^{10}}", "10^10^10", "10**10**10"):
    start = time.monotonic()
    assert accuracy_reward(completion(answer), ex) == 0.0
    assert time.monotonic() - start < 1.0
  assert pool.num_checks == before


def test_pool_deadline_kills_a_slow_check_and_recovers():
  # 37 nested parentheses take math-verify several seconds (measured > 2 s).
  slow = "(" * 37 + "1" + ")" * 37
  pool = _math_verify_pool.MathVerifyPool(num_workers=1, timeout_s=0.5)
  try:
    assert pool.check("1", "1", boxed=True)  # Warm: start-up is not charged to the deadline.
    start = time.monotonic()
    assert not pool.check("1", slow, boxed=True)
    assert time.monotonic() - start < 0.5 + 1.0
    assert pool.num_timeouts == 1
    assert pool.check("\\frac{1}{2}", "\\sqrt{1/4}", boxed=True)  # A fresh worker took over.
  finally:
    pool.close()


def test_pool_without_math_verify_degrades_to_false(monkeypatch):
  monkeypatch.setattr(_math_verify_pool, "_WORKER_SOURCE",
                      "import json; print(json.dumps({'ready': False, 'error': 'no module'}))")
  pool = _math_verify_pool.MathVerifyPool(num_workers=1)
  try:
    assert not pool.check("1", "1")
    assert pool.unavailable == "no module"
    assert not pool.check("1", "1")  # No new worker is started once unavailable.
  finally:
    pool.close()


def test_configure_math_verify_validates_before_changing_anything():
  from r1jax.rewards import configure_math_verify  # pylint: disable=g-import-not-at-top
  pool = _math_verify_pool.get_pool()
  for bad in ({"num_workers": 0}, {"timeout_s": 0}, {"startup_timeout_s": -1}):
    with pytest.raises(ValueError):
      configure_math_verify(**bad)
  assert _math_verify_pool.get_pool() is pool


def test_worker_check_in_process():
  # The worker's check function, called directly from the main thread.
  assert _math_verify_worker.check("\\frac{1}{2}", "0.5")
  assert _math_verify_worker.check("\\frac{1}{2}", "\\frac{1}{2}", boxed=True)
  assert not _math_verify_worker.check("\\frac{1}{2}", "\\frac{1}{3}", boxed=True)
  assert not _math_verify_worker.check("\\frac{1}{2}", "the answer is x")
