"""Tests for r1jax.rewards.length.overlong_penalty (DAPO Eq. 13), against hand-computed values."""
import pytest

from r1jax.rewards import overlong_penalty


@pytest.mark.parametrize("length, expected", [
    (0, 0.0), (700, 0.0), (768, 0.0),       # At or below max_len - buffer_len = 768: no penalty.
    (769, -1 / 256), (832, -0.25), (896, -0.5), (1024, -1.0),   # The ramp: (768 - L) / 256.
    (1025, -1.0), (10**9, -1.0),            # Over max_len.
])
def test_overlong_penalty_values(length, expected):
  assert overlong_penalty(length, max_len=1024, buffer_len=256) == pytest.approx(expected)


def test_penalty_scales_and_zero_buffer_is_a_step():
  assert overlong_penalty(896, max_len=1024, buffer_len=256, penalty=0.5) == pytest.approx(-0.25)
  assert overlong_penalty(1024, max_len=1024, buffer_len=0) == 0.0
  assert overlong_penalty(1025, max_len=1024, buffer_len=0) == -1.0


@pytest.mark.parametrize("kwargs", [
    dict(max_len=0, buffer_len=0), dict(max_len=10, buffer_len=11), dict(max_len=10, buffer_len=-1),
    dict(max_len=10, buffer_len=5, penalty=-1.0),
])
def test_invalid_settings_raise(kwargs):
  with pytest.raises(ValueError):
    overlong_penalty(5, **kwargs)
