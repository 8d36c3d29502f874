"""Rewards are total and bounded on adversarial text: no exception, no hang, no code execution.

Every reward must return a float in its documented range for any str, within a fixed time.
Bounds are generous so they never flake on a loaded machine: 2 s per call, plus, where an answer
reaches the math-verify pool, its deadline and the start-up of a replacement worker.
"""
import pathlib
import subprocess
import sys
import threading
import time

import hypothesis
import pytest
from hypothesis import strategies as st

from r1jax import rewards
from r1jax.rewards import (accuracy_reward, combine, format_reward, language_consistency_reward)
from r1jax.rewards import _math_verify_pool
from r1jax.rewards import countdown as countdown_lib
from r1jax.rewards import math as math_lib

EXAMPLES = [
    {"task": "gsm8k", "answer": "18"},
    {"task": "arithmetic", "answer": "176 R 2", "op": "/", "operands": [1234, 7]},
    {"task": "arithmetic", "answer": "-2745", "op": "-", "operands": [3930, 6675]},
    {"task": "countdown", "numbers": [3, 5, 7], "target": 22},
    {"task": "math500", "answer": "\\frac{1}{2}"},
]
BOUND_S = 2.0
LATEX_BOUND_S = _math_verify_pool.DEFAULT_TIMEOUT_S + 5.0
MB = 1 << 20


@pytest.fixture(scope="module", autouse=True)
def _no_safety_net():
  """The verifiers' catch-all (log and grade wrong) must never be needed: make it fail loudly."""

  def fail(name):
    raise AssertionError(f"{name} raised; see the chained exception")

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(math_lib, "_on_unexpected", fail)
    patch.setattr(countdown_lib, "_on_unexpected", fail)
    yield


def _assert_total(completion: str) -> None:
  """Runs every reward on `completion`, checking range and time."""
  for fn, kwargs, low, high in [(format_reward, {}, 0, 1), (format_reward, {"strict": False}, 0, 1),
                                (language_consistency_reward, {}, 0, 1),
                                (language_consistency_reward, {"target": "cjk"}, 0, 1)]:
    start = time.monotonic()
    value = fn(completion, **kwargs)
    assert time.monotonic() - start < BOUND_S, fn.__name__
    assert isinstance(value, float) and low <= value <= high
  for example in EXAMPLES:
    start = time.monotonic()
    value = accuracy_reward(completion, example)
    bound = LATEX_BOUND_S if example["task"] == "math500" else BOUND_S
    assert time.monotonic() - start < bound, example["task"]
    assert value in (0.0, 1.0)


_TOKENS = st.sampled_from([
    "<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "{", "}", "\\frac{", "(", ")",
    "+", "-", "*", "/", "**", "=", "^", ",", ".", " ", "\n", "$", "\\", "1", "9", "0", "42",
    "18", "3", "5", "7", "22", "R", "remainder", "__import__('os')", "数", "Пусть", "é", "\u0301",
    "\u2212", "x", "\\sqrt{", "\\text{", "10^{10^{", "\\left(", "\\right)", "1,234", "%",
])
_COMPLETIONS = st.one_of(
    st.text(max_size=300),
    st.lists(_TOKENS, max_size=60).map("".join),
    st.lists(st.one_of(_TOKENS, st.text(max_size=5)), max_size=40).map("".join),
)


@hypothesis.settings(max_examples=300, deadline=None, derandomize=True,
                     suppress_health_check=[hypothesis.HealthCheck.too_slow])
@hypothesis.given(_COMPLETIONS)
def test_fuzzed_completions(completion):
  _assert_total(completion)


ADVERSARIAL = {
    "1MB digits": "9" * MB,
    "1MB digits in answer": "<answer>" + "9" * MB + "</answer>",
    "100k digits boxed": "<answer>\\boxed{" + "9" * 100_000 + "}</answer>",
    "digits over int limit": "<answer>" + "9" * 4301 + "</answer>",
    "1MB thousands commas": "1,234" * (MB // 5),
    "1MB bare commas": "1," * (MB // 2),
    "number then 1MB spaces": "1" + " " * MB + "x",
    "many remainders": ("1 R" + " " * 1000) * 1000,
    "nested think tags": "<think>" * (MB // 16) + "</think>" * (MB // 16),
    "nested answer tags": "<answer>" * (MB // 16) + "18" + "</answer>" * (MB // 16),
    "nested boxes": "\\boxed{" * (MB // 8) + "1" + "}" * (MB // 8),
    "unclosed box": "\\boxed{" + "{" * MB,
    "unclosed frac": "<answer>\\frac{" + "1" * MB + "</answer>",
    "frac and spaces": "\\frac{" + " " * MB,
    "1MB parentheses": "<answer>" + "(" * MB + "</answer>",
    "python power tower": "<answer>10**10**10</answer>",
    "latex power tower": "<answer>\\boxed{10^{10^{10}}}</answer>",
    "huge exponent": "<answer>9^{" + "9" * 5000 + "}</answer>",
    "factorial": "<answer>100000!</answer>",
    "1MB CJK": "<think>" + "数学" * (MB // 2) + "</think>",
    "1MB decimals": "1." * (MB // 2),
    "1MB slashes": "1/" * (MB // 2),
    "1MB minus": "-" * MB + "1",
    "1MB mixed scripts": "<think>" + "aб数 é\u0301x1" * (MB // 8) + "</think>",
    "all planes": "".join(chr(c) for c in range(0x20, 0x30000, 7) if not 0xD800 <= c < 0xE000),
    "import": "<answer>__import__('os').system('touch /tmp/r1jax_pwned')</answer>",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_completions(name):
  _assert_total(ADVERSARIAL[name])


def test_nothing_is_executed():
  marker = pathlib.Path("/tmp/r1jax_pwned")
  marker.unlink(missing_ok=True)
  for example in EXAMPLES:
    accuracy_reward(ADVERSARIAL["import"], example)
    combine(ADVERSARIAL["import"], example, weights={"accuracy": 1.0, "format": 1.0})
  assert not marker.exists()


def test_rewards_work_from_threads():
  # math-verify's own signal-based timeouts fail off the main thread; the pool must not care.
  results = {}

  def run(i):
    ex = {"task": "math500", "answer": "\\frac{1}{2}"}
    answer = "\\sqrt{1/4}" if i % 2 == 0 else "\\sqrt{1/5}"
    results[i] = accuracy_reward(f"<think>t</think><answer>{answer}</answer>", ex)

  threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert results == {i: 1.0 if i % 2 == 0 else 0.0 for i in range(8)}


def _source_files():
  root = pathlib.Path(rewards.__file__).resolve().parents[1]
  return sorted((root / "rewards").rglob("*.py")) + sorted((root / "data").rglob("*.py"))


def test_no_eval_or_exec_in_rewards_and_data_code():
  files = _source_files()
  assert len(files) > 10
  for path in files:
    text = path.read_text()
    assert "eval(" not in text and "exec(" not in text, path


def test_rewards_do_not_import_jax():
  # r1jax.rewards is a leaf: importing it must not load JAX (checked in a fresh interpreter).
  code = ("import sys, r1jax.rewards; "
          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
  # The task modules don't import it themselves either (r1jax.data's own __init__ may, via grain).
  root = pathlib.Path(rewards.__file__).resolve().parents[1]
  files = sorted((root / "rewards").rglob("*.py")) + sorted((root / "data" / "tasks").rglob("*.py"))
  for path in files:
    for line in path.read_text().splitlines():
      assert not line.lstrip().startswith(("import jax", "from jax", "import flax", "from flax")), (
          path)
