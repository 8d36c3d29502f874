"""Seeded, split-aware example streams for procedurally generated tasks.

Train and test are disjoint by construction: a problem's split is a hash of its identity (e.g.
"7+12" for arithmetic, the sorted numbers for countdown), not of the seed or of the position in the
stream. Each split's generator draws identities and keeps only those that hash into it, so no seed,
config or stream length can ever put one problem into both splits. The identity is drawn first and
the rest of the example built after the split check, so a 10% test split costs ten cheap draws per
example, not ten full examples.
"""
from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

P = TypeVar("P")

SPLITS = ("train", "test")
# Consecutive draws that may all be rejected (wrong split or, for finite streams, a repeat)
# before a stream gives up: the problem space is then too small for the request.
MAX_REJECTED_DRAWS = 20_000


def split_of(task: str, identity: str, test_fraction: float) -> str:
  """The split a problem belongs to: "test" for a `test_fraction` share of identities, else "train".

  Uses SHA-256, so the assignment is the same in every process and Python version (unlike hash()).
  """
  digest = hashlib.sha256(f"{task}\x00{identity}".encode()).digest()
  return "test" if int.from_bytes(digest[:8], "big") < test_fraction * 2**64 else "train"


def check_split(task: str, split: str, splits: tuple[str, ...]) -> None:
  """Raises ValueError unless `split` is one of `splits`."""
  if split not in splits:
    raise ValueError(f"task {task!r} has splits {list(splits)}, not {split!r}")


def check_num(num: int | None) -> None:
  if num is not None and (not isinstance(num, int) or num < 0):
    raise ValueError(f"num must be None (infinite) or an int >= 0, got {num!r}")


def stream(task: str, draw: Callable[[random.Random], tuple[str, P]],
           build: Callable[[random.Random, P], dict[str, Any] | None], *,
           split: str, seed: int, num: int | None, test_fraction: float,
           max_rejected: int = MAX_REJECTED_DRAWS) -> Iterator[dict[str, Any]]:
  """Examples of one split: `num` distinct problems, or an endless stream (repeats possible).

  Args:
    task: task name (part of the split hash and of the RNG seed).
    draw: draws (identity, problem) from an RNG; the identity decides the split.
    build: turns a problem into an example, or None to reject it (then a new one is drawn).
    split: "train" or "test".
    seed: RNG seed; the same (task, split, seed, sample) always yields the same stream.
    num: how many examples; None streams forever (without de-duplication, which would need
      unbounded memory).
    test_fraction: share of problem identities that belong to the test split.
    max_rejected: give up after this many rejected draws in a row.

  Raises:
    ValueError: (lazily) `max_rejected` draws in a row were rejected.
  """
  # A str seed is hashed with SHA-512 by random.Random: stable across processes and versions.
  rng = random.Random(f"{task}/{split}/{seed}")
  seen: set[str] = set()
  produced = rejected = 0
  while num is None or produced < num:
    identity, problem = draw(rng)
    example = None
    if split_of(task, identity, test_fraction) == split and identity not in seen:
      example = build(rng, problem)
    if example is None:
      rejected += 1
      if rejected >= max_rejected:
        raise ValueError(f"{task}: {max_rejected} draws in a row gave no new {split} "
                         f"problem after {produced}; the configured problem space is too small "
                         f"for num={num}")
      continue
    rejected = 0
    if num is not None:
      seen.add(identity)
    produced += 1
    yield example
