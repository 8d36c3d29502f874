"""Tests for r1jax.rl.advantages against numpy references, under jit and on a sharded mesh."""
import functools

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from r1jax.rl import advantages


def np_group_advantages(r, g, scale, eps=1e-6, ddof=1):
  r_bg = np.asarray(r, np.float64).reshape(-1, g)
  centered = r_bg - r_bg.mean(axis=1, keepdims=True)
  if scale == "none":
    return centered.reshape(-1)
  std = r_bg.std(axis=1, ddof=ddof, keepdims=True) if scale == "group" else r_bg.std(ddof=ddof)
  return (centered / (std + eps)).reshape(-1)


def _rewards(num_groups=4, g=4, seed=0):
  rng = np.random.default_rng(seed)
  r = rng.normal(size=num_groups * g).astype(np.float32)
  r[:g] = 1.0  # one zero-variance group.
  return r


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("ddof", [0, 1])
def test_group_advantages_matches_numpy_under_jit(scale, ddof):
  r = _rewards()
  fn = jax.jit(functools.partial(advantages.group_advantages, group_size=4, scale=scale,
                                 std_ddof=ddof))
  np.testing.assert_allclose(fn(r), np_group_advantages(r, 4, scale, ddof=ddof),
                             rtol=1e-5, atol=1e-6)


def test_zero_variance_group_gets_zero_advantage():
  r = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0], np.float32)
  for scale in advantages.SCALES:
    adv = advantages.group_advantages(r, 3, scale=scale)
    np.testing.assert_array_equal(np.asarray(adv), np.zeros(6))


def test_binary_rewards_hand_computed():
  # G=2, rewards {0, 1}: mean .5; std .5 (ddof=0) or 1/sqrt(2) (ddof=1).
  r = np.array([0.0, 1.0], np.float32)
  np.testing.assert_allclose(advantages.group_advantages(r, 2, std_ddof=0, eps=0.0), [-1.0, 1.0])
  np.testing.assert_allclose(advantages.group_advantages(r, 2, std_ddof=1, eps=0.0),
                             [-np.sqrt(0.5), np.sqrt(0.5)], rtol=1e-6)
  np.testing.assert_allclose(advantages.group_advantages(r, 2, scale="none"), [-0.5, 0.5])


def test_rloo_matches_numpy():
  r = _rewards(seed=1)
  r_bg = r.reshape(-1, 4).astype(np.float64)
  want = r_bg - (r_bg.sum(1, keepdims=True) - r_bg) / 3
  np.testing.assert_allclose(jax.jit(advantages.rloo_advantages, static_argnums=1)(r, 4),
                             want.reshape(-1), rtol=1e-5, atol=1e-6)


def test_zero_variance_groups():
  r = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5], np.float32)
  np.testing.assert_array_equal(advantages.zero_variance_groups(r, 4), [False, True, True])
  np.testing.assert_array_equal(advantages.zero_variance_groups(r, 4, atol=1.0), [True] * 3)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
@pytest.mark.parametrize("num_groups,g", [(4, 4), (2, 8), (8, 2)])
def test_sharded_groups_split_across_devices(scale, num_groups, g):
  # 16 rewards on 8 devices: 2 per device, so with G=4 (8) a group spans 2 (4) devices.
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  r = _rewards(num_groups, g, seed=2)
  r_sharded = jax.device_put(r, NamedSharding(mesh, P("data")))
  assert len(r_sharded.sharding.device_set) == 8
  fn = jax.jit(functools.partial(advantages.group_advantages, group_size=g, scale=scale))
  np.testing.assert_allclose(fn(r_sharded), np_group_advantages(r, g, scale), rtol=1e-5,
                             atol=1e-6)
  zv = jax.jit(advantages.zero_variance_groups, static_argnums=1)(r_sharded, g)
  np.testing.assert_array_equal(zv, np.ptp(r.reshape(-1, g), axis=1) == 0)
  rloo = jax.jit(advantages.rloo_advantages, static_argnums=1)(r_sharded, g)
  np.testing.assert_allclose(rloo, advantages.rloo_advantages(r, g), rtol=1e-5, atol=1e-6)


def test_registry():
  r = _rewards()
  np.testing.assert_allclose(advantages.get_advantage_fn("grpo")(r, 4),
                             np_group_advantages(r, 4, "group"), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(advantages.get_advantage_fn("dr_grpo")(r, 4),
                             np_group_advantages(r, 4, "none"), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(advantages.get_advantage_fn("batch_std")(r, 4, std_ddof=0),
                             np_group_advantages(r, 4, "batch", ddof=0), rtol=1e-5, atol=1e-6)
  assert set(advantages.ADVANTAGE_ESTIMATORS) == {"grpo", "batch_std", "dr_grpo", "rloo"}
  with pytest.raises(ValueError, match="valid"):
    advantages.get_advantage_fn("ppo")


def test_errors():
  r = np.zeros(6, np.float32)
  with pytest.raises(ValueError, match="valid"):
    advantages.group_advantages(r, 3, scale="global")
  with pytest.raises(ValueError, match="multiple"):
    advantages.group_advantages(r, 4)
  with pytest.raises(ValueError, match="group_size"):
    advantages.group_advantages(r, 1, std_ddof=1)
  with pytest.raises(ValueError, match="eps"):
    advantages.group_advantages(r, 3, eps=-1.0)
  with pytest.raises(ValueError, match="1-D"):
    advantages.group_advantages(r.reshape(2, 3), 3)
  # G=1 without std division is well defined (all advantages 0).
  np.testing.assert_array_equal(advantages.group_advantages(r, 1, scale="none"), np.zeros(6))
