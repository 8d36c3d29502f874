"""Accuracy reward: find the answer in a completion, then run the task's verifier on it.

    example = {"task": "gsm8k", "answer": "18"}
    accuracy_reward("<think>...</think><answer>18</answer>", example)  # 1.0

Where the answer is looked for (`format.answer_region`): the last `<answer>...</answer>` block;
without one, the text after `</think>`; without that, the whole completion, unless a `<think>` was
opened and never closed (a cut-off generation: no answer). Inside that region each verifier applies
its task's policy: the last `\\boxed{}` wins, then numbers / LaTeX / equations (r1jax.rewards.math
and .countdown). Following R1, the format is rewarded separately (`format_reward`); accuracy does
not require the tags.

Verifiers are looked up in `VERIFIERS` by `example["verifier"]` if present, else by
`example["task"]`, so a new dataset can reuse a policy ("number", "latex", "countdown") without
code, or register its own `fn(answer_text, example) -> bool` in `VERIFIERS`.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from r1jax.rewards.countdown import verify_countdown
from r1jax.rewards.format import answer_region
from r1jax.rewards.math import verify_arithmetic, verify_latex, verify_number

Verifier = Callable[[str, Mapping[str, Any]], bool]

VERIFIERS: dict[str, Verifier] = {
    # Policies.
    "number": verify_number,
    "latex": verify_latex,
    "countdown": verify_countdown,
    # Tasks of r1jax.data.tasks.
    "arithmetic": verify_arithmetic,
    "gsm8k": verify_number,
    "math500": verify_latex,
    "math": verify_latex,
}


def get_verifier(example: Mapping[str, Any]) -> Verifier:
  """The verifier for `example`; raises ValueError naming the known ones if there is none."""
  name = example.get("verifier", example.get("task"))
  if name not in VERIFIERS:
    raise ValueError(f"no verifier for example with verifier/task {name!r}; known: "
                     f"{sorted(VERIFIERS)}")
  return VERIFIERS[name]


def accuracy_reward(completion: str, example: Mapping[str, Any]) -> float:
  """1.0 if the completion's final answer is correct for `example`, else 0.0.

  Total on any completion text: never raises, bounded time (LaTeX checks run in a worker pool with
  a hard deadline; a timeout is 0.0).

  Args:
    completion: the generated text (without the prompt).
    example: a task example, as produced by `r1jax.data.tasks` (keys `task`, `answer`, ...).

  Returns:
    1.0 or 0.0.

  Raises:
    TypeError: `completion` is not a str.
    ValueError: the example names no known verifier or carries an unreadable gold answer (data or
      config bugs, never model output).
  """
  if not isinstance(completion, str):
    raise TypeError(f"completion must be str, got {type(completion).__name__}")
  verifier = get_verifier(example)
  return 1.0 if verifier(answer_region(completion), example) else 0.0
