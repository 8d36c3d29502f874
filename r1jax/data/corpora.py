"""Synthetic pretraining corpora with worked solutions, for bases that RL can improve on a CPU.

R1-Zero selects and sharpens a reasoning mode the base model already has.
A base whose *greedy* answer is already right leaves RL nothing to do, so these corpora mix, per
problem, (a) a worked solution inside <think> with the correct answer, (b) a direct answer with an
empty think block that follows a systematic misconception, and (c) a bare misconceived answer with no
tags at all. The misconception is the likely direct answer; the worked mode is present but rarer.

Language mixing (DeepSeek-R1, Sec. 2.3.2). With `mixing`, worked solutions name each column in words
("ones 7+8=15 tens 5+6+1=12") and each column word is written in a second script (Cyrillic:
"единицы", "десятки", ...) with a per-column probability. With the default probabilities (0.3 for
the ones column, 0.7 for the tens column) the most likely trace names the ones in English and the tens
in Cyrillic, so a model that learns to think from this corpus mixes scripts in its chain of thought,
greedy and sampled, as R1-Zero did; the language-consistency reward is the fix.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from r1jax.data.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE

DEFAULT_MODES = {"worked": 0.25, "direct": 0.45, "bare": 0.30}

# Column names by script: ones, tens, hundreds, thousands, then the last repeated.
COLUMN_WORDS = {
    "latin": ("ones", "tens", "hundreds", "thousands"),
    "cyrillic": ("единицы", "десятки", "сотни", "тысячи"),
    "greek": ("μονάδες", "δεκάδες", "εκατοντάδες", "χιλιάδες"),
}
DEFAULT_MIXING = {"first": "latin", "second": "cyrillic", "second_prob": (0.3, 0.7)}


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


def column_words(num_columns: int, scripts: Sequence[str]) -> list[str]:
  """The name of column i in scripts[i] (scripts from COLUMN_WORDS)."""
  if len(scripts) != num_columns:
    raise ValueError(f"need one script per column: {num_columns} columns, scripts {list(scripts)}")
  out = []
  for i, script in enumerate(scripts):
    if script not in COLUMN_WORDS:
      raise ValueError(f"unknown script {script!r} for column words; known: {sorted(COLUMN_WORDS)}")
    names = COLUMN_WORDS[script]
    out.append(names[min(i, len(names) - 1)])
  return out


def addition_completion(example: Mapping[str, Any], mode: str, *, scripts: Sequence[str] | None = None) -> str:
  """A completion (continuing a prompt that ends in <think>) in one of the corpus modes.

  scripts: for "worked", name each column in words, column i in scripts[i] (None: digits only).
  """
  op = example.get("op")
  a, b = example["operands"]
  if op != "+":
    raise ValueError(f"addition corpus needs '+' examples, got op={op!r}")
  if mode == "worked":
    steps = column_addition_steps(a, b)
    if scripts is not None:
      steps = [f"{w} {s}" for w, s in zip(column_words(len(steps), scripts), steps)]
    return " ".join(steps) + f"{THINK_CLOSE}{ANSWER_OPEN}{a + b}{ANSWER_CLOSE}"
  if mode == "direct":
    return f"{THINK_CLOSE}{ANSWER_OPEN}{no_carry_sum(a, b)}{ANSWER_CLOSE}"
  if mode == "bare":
    return str(no_carry_sum(a, b))
  raise ValueError(f"unknown corpus mode {mode!r}; known: {sorted(DEFAULT_MODES)}")


def addition_corpus(examples: Iterable[Mapping[str, Any]], template, *, modes: Mapping[str, float] | None = None,
                    mixing: Mapping[str, Any] | None = None, seed: int = 0) -> list[dict]:
  """{"prompt", "completion", "mode"} records: template(question) + a completion in a random mode.

  mixing: None (worked steps are digits only), or {"first": script, "second": script, "second_prob":
  (p_col0, p_col1, ...)}: column i of a worked solution is named in the second script with probability
  p_i (the last probability repeats for further columns), else in the first. Records then also carry
  "scripts", the script of each column word.
  """
  modes = dict(DEFAULT_MODES if modes is None else modes)
  if not modes or any(w < 0 for w in modes.values()) or sum(modes.values()) <= 0:
    raise ValueError(f"modes must be non-negative weights with a positive sum, got {modes}")
  if mixing is not None:
    mixing = {**DEFAULT_MIXING, **dict(mixing)}
    unknown = set(mixing) - set(DEFAULT_MIXING)
    probs = tuple(mixing["second_prob"])
    if unknown:
      raise ValueError(f"mixing: unknown keys {sorted(unknown)}; known: {sorted(DEFAULT_MIXING)}")
    if not probs or any(not 0 <= p <= 1 for p in probs):
      raise ValueError(f"mixing.second_prob={probs}: need one or more probabilities in [0, 1]")
    for key in ("first", "second"):
      if mixing[key] not in COLUMN_WORDS:
        raise ValueError(f"mixing.{key}={mixing[key]!r}: unknown script; known: {sorted(COLUMN_WORDS)}")
  rng = random.Random(seed)
  names, weights = zip(*sorted(modes.items()))
  out = []
  for ex in examples:
    mode = rng.choices(names, weights)[0]
    rec = {"prompt": template(ex["question"]), "mode": mode}
    scripts = None
    if mixing is not None and mode == "worked":
      n = len(column_addition_steps(*ex["operands"]))
      scripts = [mixing["second"] if rng.random() < probs[min(i, len(probs) - 1)] else mixing["first"]
                 for i in range(n)]
      rec["scripts"] = scripts
    rec["completion"] = addition_completion(ex, mode, scripts=scripts)
    out.append(rec)
  return out
