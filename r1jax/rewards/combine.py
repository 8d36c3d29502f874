"""Weighted sums of named rewards, with the weights taken from a config.

    total, parts = combine(completion, example, weights={"accuracy": 1.0, "format": 0.2})
    # parts == {"accuracy": 1.0, "format": 1.0}; total == 1.2

`REWARDS` maps names to `fn(completion, example, **options) -> float`:
  accuracy              `accuracy_reward`, in {0, 1}
  format                `format_reward` (options: strict=True), in {0, 1}
  language_consistency  `language_consistency_reward` (options: target="latin"), in [0, 1]
Rewards computed elsewhere (e.g. DAPO's `overlong_penalty` from token counts) join the sum through
`extra=`. A reward with weight 0 is not computed at all (it may cost a math-verify call).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from r1jax.rewards.accuracy import accuracy_reward
from r1jax.rewards.format import format_reward
from r1jax.rewards.language import language_consistency_reward

RewardFn = Callable[..., float]



def _format(completion: str, example: Mapping[str, Any], **options) -> float:
  del example  # The format does not depend on the task.
  return format_reward(completion, **options)


def _language_consistency(completion: str, example: Mapping[str, Any], **options) -> float:
  del example
  return language_consistency_reward(completion, **options)


REWARDS: dict[str, RewardFn] = {
    "accuracy": accuracy_reward,
    "format": _format,
    "language_consistency": _language_consistency,
}


def combine(completion: str, example: Mapping[str, Any], weights: Mapping[str, float], *,
            options: Mapping[str, Mapping[str, Any]] | None = None,
            extra: Mapping[str, float] | None = None) -> tuple[float, dict[str, float]]:
  """Weighted sum of rewards.

  Args:
    completion: the generated text.
    example: the task example the completion answers.
    weights: reward name -> weight; names come from `REWARDS` or `extra`.
    options: reward name -> keyword arguments for that reward, e.g.
      `{"format": {"strict": False}, "language_consistency": {"target": "chinese"}}`.
    extra: reward name -> value already computed by the caller (e.g. "overlong").

  Returns:
    (total, parts): total = sum(weights[k] * parts[k]); parts holds the unweighted value of every
    reward with a non-zero weight.

  Raises:
    ValueError: a weight or option names an unknown reward (a config bug).
  """
  extra = dict(extra or {})
  options = dict(options or {})
  known = set(REWARDS) | set(extra)
  unknown = sorted((set(weights) | set(options)) - known)
  if unknown:
    raise ValueError(f"unknown reward(s) {unknown}; known: {sorted(known)}")
  parts: dict[str, float] = {}
  total = 0.0
  for name, weight in weights.items():
    if weight == 0:
      continue
    if name in extra:
      value = float(extra[name])
    else:
      value = float(REWARDS[name](completion, example, **options.get(name, {})))
    parts[name] = value
    total += weight * value
  return total, parts
