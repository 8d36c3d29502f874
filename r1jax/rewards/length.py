"""Length shaping: DAPO's soft overlong punishment (Yu et al., 2025, arXiv:2503.14476, Eq. 13).

In a config it is the reward "overlong" (a name of LENGTH_REWARDS): weight it in reward_weights, and set
its keyword arguments in reward_options (max_len defaults to the sampler's token budget, buffer_len to 0,
penalty to 1). r1jax.sampling.rollout computes it from each completion's token count and passes it to
`combine` as an extra part.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def overlong_penalty(length: int, *, max_len: int, buffer_len: int, penalty: float = 1.0
                     ) -> float:
  """DAPO soft overlong punishment of a response of `length` tokens.

      0                                          if length <= max_len - buffer_len
      (max_len - buffer_len - length) / buffer_len * penalty    if that < length <= max_len
      -penalty                                   if length > max_len

  The ramp inside the last `buffer_len` tokens tells the policy that it is running long before
  the hard cut; `buffer_len=0` is a plain step at `max_len`. Token counts come from the sampler,
  which is why this is not one of the text rewards of `combine` (pass it in `extra=`).

  Args:
    length: response length in tokens.
    max_len: the length at which the penalty reaches `-penalty` (DAPO's L_max).
    buffer_len: length of the ramp (DAPO's L_cache), 0 <= buffer_len <= max_len.
    penalty: magnitude of the full penalty, >= 0.

  Returns:
    A float in [-penalty, 0].

  Raises:
    ValueError: invalid `max_len`, `buffer_len` or `penalty`.
  """
  if max_len <= 0 or not 0 <= buffer_len <= max_len or penalty < 0:
    raise ValueError(f"need max_len > 0, 0 <= buffer_len <= max_len and penalty >= 0; got "
                     f"max_len={max_len}, buffer_len={buffer_len}, penalty={penalty}")
  expected = max_len - buffer_len
  if length <= expected:
    return 0.0
  if length > max_len:
    return -float(penalty)
  return (expected - length) / buffer_len * penalty


# Rewards of a completion's token count (not its text): name -> function(num_tokens, **options).
LENGTH_REWARDS = {"overlong": overlong_penalty}
_OVERLONG_OPTIONS = ("max_len", "buffer_len", "penalty")


def overlong_options(options: Mapping[str, Any], max_new_tokens: int) -> dict:
  """`overlong_penalty`'s keyword arguments from a config's options (max_len defaults to max_new_tokens).

  Raises:
    ValueError naming the option: an unknown option or invalid values.
  """
  unknown = sorted(set(options) - set(_OVERLONG_OPTIONS))
  if unknown:
    raise ValueError(f"reward_options['overlong']: unknown option(s) {unknown}; known: {list(_OVERLONG_OPTIONS)}")
  kw = {"max_len": max_new_tokens, "buffer_len": 0, "penalty": 1.0, **options}
  overlong_penalty(0, **kw)            # raises on invalid values, before any sampling
  return kw
