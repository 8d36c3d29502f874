"""Every reward on many fuzzed completions: no exception, no hang, and the slowest call stated.

    python -m benchmarks.reward_fuzz --num 100000

Completions are drawn (seeded) from five sources in turn: random Unicode text from every plane, soups of
the pieces rewards look for (think/answer tags, `\\boxed{`, numbers, LaTeX, "remainder", code), well-formed
`<think>...</think><answer>...</answer>` completions with random answers, the same with invisible and
mixed-script characters, and, one in `--adversarial_every`, a large adversarial text (a megabyte of
digits, nested braces, power towers, every plane of Unicode...). Each goes through every reward the
trainer can use: format (strict and lenient), language consistency (Latin and CJK targets), accuracy for
every task kind (gsm8k numbers, arithmetic + - * / with remainders, countdown expressions, MATH LaTeX
through the math-verify worker pool), and the weighted `combine`. Calls run on as many threads as the
math-verify pool has workers (as the trainer scores a rollout); every call is timed, and a watchdog ends
the run with status 1 if one call takes longer than `--hang_s`.

Output: one JSON line per reward {"reward", "calls", "exceptions", "max_s", "p99_s", "mean_s", "slowest"}
(the slowest input's source and length) and a summary line with the math-verify deadline hits. An
exception is a reward raising, or a verifier reaching its catch-all (which grades wrong and logs): both
count, and the first few are printed to stderr.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import sys
import threading
import time
import traceback

import numpy as np

from benchmarks.common import emit
from r1jax.rewards import (accuracy_reward, combine, format_reward, language_consistency_reward,
                           math_verify_timeouts, math_verify_workers)
from r1jax.rewards import countdown as countdown_lib
from r1jax.rewards import math as math_lib

EXAMPLES = {
    "gsm8k": {"task": "gsm8k", "answer": "18"},
    "arithmetic+": {"task": "arithmetic", "answer": "164", "op": "+", "operands": [69, 95]},
    "arithmetic-": {"task": "arithmetic", "answer": "-2745", "op": "-", "operands": [3930, 6675]},
    "arithmetic*": {"task": "arithmetic", "answer": "5074", "op": "*", "operands": [86, 59]},
    "arithmetic/": {"task": "arithmetic", "answer": "176 R 2", "op": "/", "operands": [1234, 7]},
    "countdown": {"task": "countdown", "numbers": [3, 5, 7, 25], "target": 22},
    "math500": {"task": "math500", "answer": "\\frac{1}{2}"},
}
WEIGHTS = {"accuracy": 1.0, "format": 0.2, "language_consistency": 0.5}

_PIECES = ["<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "{", "}", "\\frac{", "(", ")", "+", "-",
           "*", "/", "**", "=", "^", ",", ".", " ", "\n", "$", "\\", "1", "9", "0", "42", "18", "164", "22",
           "R", "remainder", "__import__('os')", "eval(", "数", "Пусть", "десятки", "é", "\u0301", "\u2212",
           "\u200b", "\u200d", "x", "\\sqrt{", "\\text{", "10^{10^{", "\\left(", "\\right)", "1,234", "%",
           "3 * 5 + 7", "(25 - 3)", "ones", "tens"]
MB = 1 << 20
_ADVERSARIAL = [
    lambda: "9" * MB,
    lambda: "<answer>" + "9" * MB + "</answer>",
    lambda: "<answer>\\boxed{" + "9" * 100_000 + "}</answer>",
    lambda: "1,234" * (MB // 5),
    lambda: "<think>" * (MB // 16) + "</think>" * (MB // 16),
    lambda: "\\boxed{" * (MB // 8) + "1" + "}" * (MB // 8),
    lambda: "<answer>" + "(" * MB + "</answer>",
    lambda: "<answer>\\boxed{10^{10^{10}}}</answer>",
    lambda: "<answer>9^{" + "9" * 5000 + "}</answer>",
    lambda: "<answer>" + "(" * 37 + "1" + ")" * 37 + "</answer>",
    lambda: "<think>" + "aб数 é\u0301x1\u200b" * (MB // 8) + "</think>",
    lambda: "".join(chr(c) for c in range(0x20, 0x30000, 7) if not 0xD800 <= c < 0xE000),
    lambda: "<answer>" + "3*" * 20_000 + "3</answer>",
]


def _random_unicode(rng: np.random.Generator) -> str:
  n = int(rng.integers(0, 300))
  cps = rng.integers(0x20, 0x30000, n)
  return "".join(chr(c) for c in cps if not 0xD800 <= c < 0xE000)


def _soup(rng: np.random.Generator) -> str:
  return "".join(_PIECES[i] for i in rng.integers(0, len(_PIECES), int(rng.integers(0, 60))))


def _well_formed(rng: np.random.Generator) -> str:
  a, b = int(rng.integers(10, 100)), int(rng.integers(10, 100))
  answer = rng.choice([str(a + b), str(int(rng.integers(-10**6, 10**6))), f"\\boxed{{{a + b}}}", "\\frac{1}{2}",
                       "0.5", "176 R 2", "3 * 5 + 7", "(25 - 3)", _soup(rng)])
  return f"ones {a % 10}+{b % 10}={a % 10 + b % 10} tens {a // 10}+{b // 10}</think><answer>{answer}</answer>"


def _disguised(rng: np.random.Generator) -> str:
  text = _well_formed(rng)
  cuts = sorted(int(i) for i in rng.integers(0, len(text), 6))
  pieces = [text[i:j] for i, j in zip([0] + cuts, cuts + [len(text)])]
  joiners = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", ".", "д", "数"]
  return "".join(p + joiners[int(rng.integers(0, len(joiners)))] for p in pieces)


SOURCES = {"unicode": _random_unicode, "soup": _soup, "well_formed": _well_formed, "disguised": _disguised}


def completions(num: int, seed: int, adversarial_every: int):
  """(source, text) pairs, deterministic in (num, seed)."""
  rng = np.random.default_rng(seed)
  names = list(SOURCES)
  for i in range(num):
    if adversarial_every and i % adversarial_every == adversarial_every - 1:
      k = (i // adversarial_every) % len(_ADVERSARIAL)
      yield f"adversarial_{k}", _ADVERSARIAL[k]()
    else:
      name = names[i % len(names)]
      yield name, SOURCES[name](rng)


def rewards():
  """(name, fn(text) -> float, allowed values or (low, high)) of every reward the trainer can use."""
  out = [("format_strict", lambda t: format_reward(t), (0.0, 1.0)),
         ("format_lenient", lambda t: format_reward(t, strict=False), (0.0, 1.0)),
         ("language_latin", lambda t: language_consistency_reward(t), (0.0, 1.0)),
         ("language_cjk", lambda t: language_consistency_reward(t, target="cjk"), (0.0, 1.0))]
  for name, ex in EXAMPLES.items():
    out.append((f"accuracy_{name}", lambda t, ex=ex: accuracy_reward(t, ex), (0.0, 1.0)))
  out.append(("combine_arithmetic", lambda t: combine(t, EXAMPLES["arithmetic+"], WEIGHTS)[0], (0.0, 1.7)))
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--num", type=int, default=100_000, help="fuzzed completions")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--adversarial_every", type=int, default=1000, help="one large adversarial text in N (0: none)")
  p.add_argument("--hang_s", type=float, default=60.0, help="a call longer than this ends the run as a hang")
  args = p.parse_args(argv)

  errors: list[str] = []
  lock = threading.Lock()
  local = threading.local()           # per thread: errors of the call it is running

  def caught(name):                   # a verifier's catch-all: an exception it swallowed, counted here
    local.errors = getattr(local, "errors", 0) + 1
    with lock:
      errors.append(f"{name}: {traceback.format_exc(limit=3)}")
    return False

  math_lib._on_unexpected = caught
  countdown_lib._on_unexpected = caught
  fns = rewards()
  stats = {name: {"times": [], "exceptions": 0, "slowest": (0.0, "")} for name, _, _ in fns}
  busy: dict[int, tuple[float, str]] = {}

  def watchdog():
    while True:
      time.sleep(1.0)
      with lock:
        late = [(what, time.monotonic() - t0) for t0, what in busy.values() if time.monotonic() - t0 > args.hang_s]
      if late:
        print(f"HANG: {late[0][0]} has run {late[0][1]:.0f} s (> --hang_s={args.hang_s})", file=sys.stderr, flush=True)
        os._exit(1)

  threading.Thread(target=watchdog, daemon=True).start()

  def score(item):
    source, text = item
    out = []
    for name, fn, (low, high) in fns:
      with lock:
        busy[threading.get_ident()] = (time.monotonic(), f"{name} on {source} ({len(text)} chars)")
      local.errors = 0
      t0 = time.perf_counter()
      try:
        value = fn(text)
        if not (isinstance(value, float) and low <= value <= high):
          caught(f"{name} returned {value!r} on {source}")
      except Exception:            # pylint: disable=broad-except
        caught(name)
      dt = time.perf_counter() - t0
      raised = local.errors > 0
      out.append((name, dt, raised, f"{source} ({len(text)} chars)"))
    with lock:
      busy.pop(threading.get_ident(), None)
    return out

  width = max(2, math_verify_workers())
  timeouts0 = math_verify_timeouts()
  start = time.perf_counter()
  done = 0
  with concurrent.futures.ThreadPoolExecutor(width) as pool:
    for results in pool.map(score, completions(args.num, args.seed, args.adversarial_every), chunksize=16):
      for name, dt, raised, what in results:
        s = stats[name]
        s["times"].append(dt)
        s["exceptions"] += int(raised)
        if dt > s["slowest"][0]:
          s["slowest"] = (dt, what)
      done += 1
      if done % 10_000 == 0:
        print(f"reward_fuzz {done}/{args.num} completions, {time.perf_counter() - start:.0f} s", file=sys.stderr,
              flush=True)
  wall = time.perf_counter() - start
  for name, s in stats.items():
    t = np.asarray(s["times"])
    emit(reward=name, calls=len(t), exceptions=s["exceptions"], max_s=round(float(t.max()), 4),
         p99_s=round(float(np.percentile(t, 99)), 5), mean_s=round(float(t.mean()), 6), slowest=s["slowest"][1])
  total_exc = sum(s["exceptions"] for s in stats.values())
  emit(summary="reward_fuzz", completions=args.num, calls=sum(len(s["times"]) for s in stats.values()),
       exceptions=total_exc, hangs=0, slowest_s=round(max(max(s["times"]) for s in stats.values()), 4),
       math_verify_timeouts=math_verify_timeouts() - timeouts0, threads=width, wall_s=round(wall, 1))
  for e in errors[:5]:
    print(e, file=sys.stderr)
  return 1 if total_exc else 0


if __name__ == "__main__":
  sys.exit(main())
