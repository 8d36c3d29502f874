"""Synthetic pretraining corpora with worked solutions, for bases that RL can improve on a CPU.

R1-Zero selects and sharpens a reasoning mode the base model already has (notes/r1_zero_on_cpu.md).
A base whose *greedy* answer is already right leaves RL nothing to do, so these corpora mix, per
problem, (a) a worked solution inside <think> with the correct answer, (b) a direct answer with an
empty think block that follows a systematic misconception, and (c) a bare misconceived answer with no
tags at all. The misconception is the likely direct answer; the worked mode is present but rarer.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from typing import Any

from r1jax.data.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE

DEFAULT_MODES = {"worked": 0.25, "direct": 0.45, "bare": 0.30}


def column_addition_steps(a: int, b: int) -> list[str]:
  """Right-to-left column addition, one step per digit: ['7+8=15', '5+6+1=12', '3+4+1=8']."""
  da, db = str(a)[::-1], str(b)[::-1]
  steps, carry = [], 0
  for i in range(max(len(da), len(db))):
    x, y = int(da[i]) if i < len(da) else 0, int(db[i]) if i < len(db) else 0
    s = x + y + carry
    steps.append(f"{x}+{y}" + (f"+{carry}" if carry else "") + f"={s}")
    carry = s // 10
  return steps


def no_carry_sum(a: int, b: int) -> int:
  """The 'forgot to carry' misconception: each column's sum mod 10, no carries (357+468 -> 715)."""
  da, db = str(a)[::-1], str(b)[::-1]
  digits = [(int(da[i]) if i < len(da) else 0) + (int(db[i]) if i < len(db) else 0)
            for i in range(max(len(da), len(db)))]
  return int("".join(str(d % 10) for d in reversed(digits)))


def addition_completion(example: Mapping[str, Any], mode: str) -> str:
  """A completion (continuing a prompt that ends in <think>) in one of the corpus modes."""
  op = example.get("op")
  a, b = example["operands"]
  if op != "+":
    raise ValueError(f"addition corpus needs '+' examples, got op={op!r}")
  if mode == "worked":
    return " ".join(column_addition_steps(a, b)) + f"{THINK_CLOSE}{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}"
  if mode == "direct":
    return f"{THINK_CLOSE}{ANSWER_OPEN}{no_carry_sum(a, b)}{ANSWER_CLOSE}"
  if mode == "bare":
    return str(no_carry_sum(a, b))
  raise ValueError(f"unknown corpus mode {mode!r}; known: {sorted(DEFAULT_MODES)}")


def addition_corpus(examples: Iterable[Mapping[str, Any]], template, *, modes: Mapping[str, float] | None = None,
                    seed: int = 0) -> list[dict]:
  """{"prompt", "completion", "mode"} records: template(question) + a completion in a random mode."""
  modes = dict(DEFAULT_MODES if modes is None else modes)
  if not modes or any(w < 0 for w in modes.values()) or sum(modes.values()) <= 0:
    raise ValueError(f"modes must be non-negative weights with a positive sum, got {modes}")
  rng = random.Random(seed)
  names, weights = zip(*sorted(modes.items()))
  out = []
  for ex in examples:
    mode = rng.choices(names, weights)[0]
    out.append({"prompt": template(ex["question"]), "completion": addition_completion(ex, mode), "mode": mode})
  return out
