"""A damaged newest checkpoint step: resume falls back to the older step still kept and moves the damaged
one aside (nothing deleted); a target that fits no step is an error, and then nothing is moved."""
import os

import grain
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.checkpoint import CheckpointManager


def _state(v):
  return {"w": jnp.full((4, 3), float(v)), "step": jnp.asarray(v, jnp.int32)}


def _saved(tmp_path, steps=(1, 2)):
  d = tmp_path / "ckpt"
  with CheckpointManager(d, max_to_keep=3) as ckpt:
    for s in steps:
      ckpt.save(s, _state(s), metadata={"step": s})
  return d


def _empty_step(d, step):
  for root, dirs, files in os.walk(d / str(step), topdown=False):
    for f in files:
      os.remove(os.path.join(root, f))
    for x in dirs:
      os.rmdir(os.path.join(root, x))


def _truncate_data_files(d, step):
  n = 0
  for root, _, files in os.walk(d / str(step) / "state"):
    for f in files:
      p = os.path.join(root, f)
      if os.path.getsize(p) > 16:
        with open(p, "r+b") as fh:
          fh.truncate(8)
        n += 1
  assert n


@pytest.mark.parametrize("damage", [_empty_step, _truncate_data_files])
def test_a_damaged_newest_step_falls_back_to_the_previous_one(tmp_path, capsys, damage):
  d = _saved(tmp_path)
  damage(d, 2)
  ckpt = CheckpointManager(d, max_to_keep=3)
  step, state, meta = ckpt.restore_latest(target=_state(0))
  assert step == 1 and meta == {"step": 1}
  np.testing.assert_array_equal(state["w"], np.ones((4, 3)))
  assert "checkpoint step 2" in capsys.readouterr().err
  aside = [n for n in os.listdir(d) if n.startswith("2.unreadable-")]
  assert len(aside) == 1 and ckpt.all_steps() == [1]                # kept for inspection, no longer a step
  ckpt.save(2, _state(5))                                            # the resumed run can save step 2 again
  ckpt.wait()
  assert ckpt.restore_latest(target=_state(0))[0] == 2
  ckpt.close()


def test_a_target_that_fits_no_step_raises_and_moves_nothing(tmp_path):
  d = _saved(tmp_path)
  ckpt = CheckpointManager(d, max_to_keep=3)
  with pytest.raises(Exception):
    ckpt.restore_latest(target={"w": jnp.zeros((5, 3)), "step": jnp.asarray(0, jnp.int32)})
  assert ckpt.all_steps() == [1, 2] and sorted(os.listdir(d)) == ["1", "2"]
  ckpt.close()


def test_no_step_gives_none_and_the_data_position_comes_with_the_step(tmp_path):
  assert CheckpointManager(tmp_path / "empty").restore_latest(target=_state(0)) is None
  d = tmp_path / "ckpt"
  it = iter(grain.MapDataset.range(100).to_iter_dataset())
  with CheckpointManager(d, max_to_keep=3) as ckpt:
    for s in (1, 2):
      next(it)
      ckpt.save(s, _state(s), data_iter=it)
  _empty_step(d, 2)
  fresh = iter(grain.MapDataset.range(100).to_iter_dataset())
  ckpt = CheckpointManager(d, max_to_keep=3)
  seen = []
  step, _, _ = ckpt.restore_latest(target=_state(0), data_iter_for=lambda s: seen.append(s) or fresh)
  assert step == 1 and seen == [2, 1] and next(fresh) == 1          # step 1's position: one element read
  ckpt.close()
