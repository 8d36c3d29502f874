"""Length shaping: DAPO's soft overlong punishment (Yu et al., 2025, arXiv:2503.14476, Eq. 13)."""
from __future__ import annotations


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
