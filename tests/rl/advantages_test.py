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


@pytest.mark.parametrize("value,g", [(0.2, 6), (0.1, 10), (1.2, 3)])
def test_equal_rewards_whose_float_mean_is_inexact_still_get_zero(value, g):
  # sum(0.2 x 6) / 6 != 0.2 in float32; the residue over a std of the same size would not be 0.
  r = np.full(2 * g, value, np.float32)
  r[g] = value + 1.0                                        # the second group has variance
  for name, fn in advantages.ADVANTAGE_ESTIMATORS.items():
    adv = np.asarray(jax.jit(fn, static_argnums=1)(r, g))
    np.testing.assert_array_equal(adv[:g], 0.0, err_msg=name)
    assert np.abs(adv[g:]).max() > 0.1, name


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


def np_rloo(r, g):
  r_bg = np.asarray(r, np.float64).reshape(-1, g)
  return (r_bg - (r_bg.sum(1, keepdims=True) - r_bg) / (g - 1)).reshape(-1)


NUMPY_ESTIMATORS = {
    "grpo": lambda r, g: np_group_advantages(r, g, "group"),
    "batch_std": lambda r, g: np_group_advantages(r, g, "batch"),
    "dr_grpo": lambda r, g: np_group_advantages(r, g, "none"),
    "rloo": np_rloo,
}

# (mesh sizes, groups B, group size G) over the 8 fake devices; the batch is split over (data, fsdp).
LAYOUTS = {
    "groups_on_one_device": ({"data": 2, "expert": 4}, 4, 4),     # 8 rows per device: 2 whole groups
    "group_split_along_data": ({"data": 8}, 2, 8),               # 2 rows per device: a group on 4 devices
    "group_split_along_data_and_fsdp": ({"data": 2, "fsdp": 4}, 4, 4),   # a group on 2 devices
    "group_split_3_ways": ({"data": 4, "tensor": 2}, 2, 6),       # 3 rows per device: G=6 on 2 devices
}


def _sharded(layout, estimator):
  from r1jax.sharding import batch_sharding, make_mesh
  sizes, b, g = LAYOUTS[layout]
  mesh = make_mesh(sizes)
  r = np.round(_rewards(b, g, seed=3) * 2) / 2           # ties and a zero-variance group
  r_sharded = jax.device_put(r, batch_sharding(mesh, 1))
  fn = jax.jit(functools.partial(advantages.sharded_advantages, group_size=g, estimator=estimator, mesh=mesh))
  with jax.set_mesh(mesh):
    return r, g, fn, r_sharded


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("estimator", sorted(NUMPY_ESTIMATORS))
def test_sharded_advantages_match_numpy_in_both_layouts(layout, estimator):
  r, g, fn, r_sharded = _sharded(layout, estimator)
  got = fn(r_sharded)
  assert got.sharding.is_equivalent_to(r_sharded.sharding, 1)   # computed where the rewards lie
  np.testing.assert_allclose(got, NUMPY_ESTIMATORS[estimator](r, g), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout,estimator,collective", [
    ("groups_on_one_device", "grpo", False),        # group statistics need no other device
    ("groups_on_one_device", "rloo", False),
    ("groups_on_one_device", "batch_std", True),    # the batch std does
    ("group_split_along_data", "grpo", True),
    ("group_split_along_data", "dr_grpo", True),
])
def test_collectives_only_where_a_statistic_crosses_devices(layout, estimator, collective):
  _, _, fn, r_sharded = _sharded(layout, estimator)
  hlo = fn.lower(r_sharded).compile().as_text()
  assert ("all-reduce" in hlo) == collective
  assert "all-gather" not in hlo                   # the rewards are never gathered to every device
