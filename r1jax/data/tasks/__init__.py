"""Tasks: where examples come from and how their answers are checked. Pure Python, no JAX.

    from r1jax.data import tasks
    task = tasks.get("countdown")                       # or tasks.get("arithmetic", digits=(2, 5))
    for ex in task.examples("test", seed=0, num=100):   # dicts {"task", "question", "answer", ...}
      ok = task.verify(answer_text, ex)                 # bool; as in rewards.accuracy_reward

Tasks (`names()`):
  arithmetic  procedural +, -, *, long division with remainder; knobs `digits`, `ops`
  countdown   procedural TinyZero Countdown; fields `numbers`, `target`
  gsm8k       GSM8K train (7,473) / test (1,319), numeric answers
  math500     MATH-500 test (500), LaTeX answers

`examples(split, *, seed=0, num=...)` returns an iterator. Procedural tasks yield `num` distinct
problems (default 1000; `num=None` streams forever) and split train/test by a hash of the problem,
so the splits never overlap. Dataset tasks yield the file's records (all by default), in file order
or with `shuffle=True` in a `seed`-determined order.
"""
from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from r1jax.data.tasks.arithmetic import Arithmetic
from r1jax.data.tasks.countdown import Countdown
from r1jax.data.tasks.gsm8k import Gsm8k
from r1jax.data.tasks.math500 import Math500


class Task(Protocol):
  """What every task provides."""
  name: str
  splits: tuple[str, ...]

  def examples(self, split: str, *, seed: int = 0, num: int | None = ...
               ) -> Iterator[dict[str, Any]]:
    ...

  def verify(self, answer_text: str, example: Mapping[str, Any]) -> bool:
    ...


_REGISTRY: dict[str, Callable[..., Task]] = {
    "arithmetic": Arithmetic,
    "countdown": Countdown,
    "gsm8k": Gsm8k,
    "math500": Math500,
}


def names() -> list[str]:
  """Names of the known tasks, sorted."""
  return sorted(_REGISTRY)


def get(name: str, **config: Any) -> Task:
  """The task called `name`, built with `config` (e.g. `digits=(2, 4)` for arithmetic).

  Raises:
    ValueError: unknown name (the message lists the known ones).
    TypeError: a config key the task does not have.
  """
  if name not in _REGISTRY:
    raise ValueError(f"unknown task {name!r}; known tasks: {names()}")
  return _REGISTRY[name](**config)


def _options(name: str) -> set[str]:
  return set(inspect.signature(_REGISTRY[name]).parameters)


def from_config(section: Mapping[str, Any], path: str = "config.task") -> Task:
  """The task of a config section {"name": ..., option: value, ...}. Options of other tasks are left out with
  a warning (so `--config.task.name=gsm8k` switches an arithmetic section, whose digits/ops stay behind), as
  are options set to None; an option no task has is an error. Errors name `path`."""
  section = dict(section)
  name = section.get("name")
  if name not in _REGISTRY:
    raise ValueError(f"{path}.name={name!r}: unknown task; known tasks: {names()}")
  own, anyone = _options(name), set().union(*(_options(n) for n in _REGISTRY))
  options = {k: v for k, v in section.items() if k != "name" and v is not None}
  unknown = sorted(set(options) - anyone)
  if unknown:
    raise ValueError(f"{path}: unknown option(s) {unknown}; {name} takes {sorted(own)}")
  other = sorted(set(options) - own)
  if other:
    logging.warning("%s: %s takes no %s (options of another task): ignored", path, name, other)
  try:
    return get(name, **{k: v for k, v in options.items() if k in own})
  except (ValueError, TypeError) as e:
    raise ValueError(f"{path}: {e}") from e


__all__ = ["Arithmetic", "Countdown", "Gsm8k", "Math500", "Task", "from_config", "get", "names"]
