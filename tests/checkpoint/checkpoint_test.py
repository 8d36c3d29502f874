"""Tests for r1jax.checkpoint: round trips, data position, keep-N, async, resharding, crash safety."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax import data
from r1jax.checkpoint import CheckpointManager
from r1jax.model import ModelConfig, init_variables, param_shardings
from r1jax.sharding import make_mesh
from r1jax.testing.fake_tokenizer import FakeTokenizer

TINY = ModelConfig.preset("tiny")


def _assert_trees_equal(a, b):
  """Same structure (incl. container types), dtypes and values; typed keys compared by key data."""
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      assert y.dtype == x.dtype
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def mesh_a():
  return make_mesh({"data": 2, "expert": 4})


@pytest.fixture(scope="module")
def variables(mesh_a):
  """Tiny-model variables sharded on mesh_a (experts split 4 ways); built once, ~2 s."""
  return init_variables(TINY, jax.random.key(0), mesh=mesh_a)


def _training_state(variables):
  return {
      "params": variables,  # {"params": ..., "router_bias": ...}: the router bias is not trained
      "opt_state": optax.adamw(1e-3).init(variables["params"]),
      "step": 12,
      "rng": jax.random.key(7),
      "sample_keys": jax.random.split(jax.random.key(8, impl="rbg"), 4),
  }


def _prompt_iter():
  examples = [{"question": f"{i}+{i}", "answer": str(2 * i)} for i in range(20)]
  return data.prompt_batches(examples, FakeTokenizer(), "compact", batch_size=2,
                             max_prompt_len=16, seed=3)


def test_roundtrip_full_training_state(tmp_path, variables):
  state = _training_state(variables)
  assert "router_bias" in state["params"]  # the tiny preset is an aux-loss-free MoE
  metadata = {"config": TINY.to_dict(), "loss": np.float32(1.5), "tokens": jnp.array([1, 2])}
  with CheckpointManager(tmp_path) as ckpt:
    assert ckpt.save(12, state, metadata=metadata)
    restored, restored_metadata = ckpt.restore(target=state)
    _assert_trees_equal(restored, state)
    assert isinstance(restored["opt_state"][0], optax.ScaleByAdamState)
    assert isinstance(restored["step"], int)
    assert restored_metadata["loss"] == 1.5 and restored_metadata["tokens"] == [1, 2]
    assert restored_metadata["config"] == json.loads(json.dumps(TINY.to_dict()))
    # Without a target: plain containers, same leaves, typed keys still typed.
    untyped, _ = ckpt.restore(12)
    _assert_trees_equal(untyped["params"], state["params"])
    assert untyped["rng"].dtype == state["rng"].dtype


def test_data_iterator_resumes_at_next_batch(tmp_path):
  it = _prompt_iter()
  next(it), next(it)
  ckpt = CheckpointManager(tmp_path, async_save=False)
  ckpt.save(2, {"step": 2}, data_iter=it)
  expected = [next(it) for _ in range(2)]  # advancing after save must not change the saved position

  fresh = _prompt_iter()
  state, _ = ckpt.restore(data_iter=fresh)
  assert state == {"step": 2}
  for want in expected:
    got = next(fresh)
    np.testing.assert_array_equal(got["prompt_tokens"], want["prompt_tokens"])
    assert got["examples"] == want["examples"]
  ckpt.close()


def test_packed_lm_iterator_resumes(tmp_path):
  texts = [f"text number {i} " * (1 + i % 3) for i in range(30)]
  make = lambda: data.packed_lm_batches(texts, FakeTokenizer(), batch_size=2, seq_len=24, seed=0)
  it = make()
  next(it)
  ckpt = CheckpointManager(tmp_path)
  ckpt.save(1, {"x": jnp.zeros(2)}, data_iter=it)
  want = next(it)
  fresh = make()
  ckpt.restore(1, data_iter=fresh)
  np.testing.assert_array_equal(next(fresh)["tokens"], want["tokens"])
  ckpt.close()


def test_keep_n_and_save_interval(tmp_path):
  ckpt = CheckpointManager(tmp_path, max_to_keep=2, save_interval_steps=2)
  saved = [ckpt.save(s, {"x": jnp.full((3,), s)}) for s in range(6)]
  assert saved == [True, False, True, False, True, False]
  assert ckpt.save(5, {"x": jnp.full((3,), 5)}, force=True)
  ckpt.wait()
  assert ckpt.all_steps() == [4, 5]
  assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == ["4", "5"]
  state, _ = ckpt.restore()
  np.testing.assert_array_equal(state["x"], [5, 5, 5])
  ckpt.close()


def test_async_save_completes_after_wait_and_allows_donation(tmp_path):
  ckpt = CheckpointManager(tmp_path)  # async by default
  x = jnp.arange(4 * 2**20, dtype=jnp.float32)  # 16 MiB, so the write outlives save()
  expected = np.asarray(x)
  assert ckpt.save(1, {"x": x})
  # save() returned after the device->host copy: a donating train step may now free the buffer.
  x.delete()
  ckpt.wait()
  assert [p.name for p in tmp_path.iterdir() if "tmp" in p.name] == []
  assert (tmp_path / "1").is_dir()
  ckpt.close()
  with CheckpointManager(tmp_path) as reader:
    state, _ = reader.restore(1)
  np.testing.assert_array_equal(state["x"], expected)


def test_restore_onto_another_mesh_shape(tmp_path, variables):
  mesh_b = make_mesh({"data": 4, "expert": 2})
  with CheckpointManager(tmp_path) as ckpt:
    ckpt.save(0, variables)
  shardings_b = param_shardings(TINY, mesh_b)
  target = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        variables, shardings_b)

  with CheckpointManager(tmp_path) as ckpt:
    restored, _ = ckpt.restore(target=target)

  _assert_trees_equal(restored, variables)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(shardings_b)):
    assert got.sharding == want
  # The expert weights really moved: 4 -> 2 shards along the expert axis.
  expert_w = [x for x in jax.tree.leaves(restored) if "expert" in str(x.sharding.spec)]
  assert expert_w and all(x.sharding.mesh.shape["expert"] == 2 for x in expert_w)
  assert any(x.sharding.shard_shape(x.shape) != x.shape for x in expert_w)


_KILLED_SAVER = textwrap.dedent("""
    import os, signal, sys, time
    import jax.numpy as jnp
    from r1jax.checkpoint import CheckpointManager
    ckpt = CheckpointManager(sys.argv[1])
    ckpt.save(1, {"x": jnp.full((4,), 1.0)})
    ckpt.wait()
    ckpt.save(2, {"x": jnp.ones((64 * 2**20,), jnp.float32)})  # 256 MiB: about a second to write
    time.sleep(0.05)  # let the background write get going, then die without any clean-up
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_save_killed_midway_is_never_restored(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
  proc = subprocess.run([sys.executable, "-c", _KILLED_SAVER, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith("2.orbax-checkpoint-tmp")]
  assert leftovers and not (tmp_path / "2").exists(), "the save finished before the kill"

  ckpt = CheckpointManager(tmp_path)
  assert ckpt.all_steps() == [1] and ckpt.latest_step() == 1
  state, _ = ckpt.restore()
  np.testing.assert_array_equal(state["x"], [1.0] * 4)
  # The step can be written again; the leftover tmp directory is gone.
  ckpt.save(2, {"x": jnp.full((4,), 2.0)})
  ckpt.wait()
  assert sorted(p.name for p in tmp_path.iterdir() if p.name[0].isdigit()) == ["1", "2"]
  np.testing.assert_array_equal(ckpt.restore()[0]["x"], [2.0] * 4)
  ckpt.close()


def test_missing_step_error_names_directory_and_steps(tmp_path):
  ckpt = CheckpointManager(tmp_path, async_save=False)
  with pytest.raises(FileNotFoundError, match="no committed step"):
    ckpt.restore()
  ckpt.save(3, {"x": jnp.zeros(1)})
  ckpt.save(5, {"x": jnp.zeros(1)})
  with pytest.raises(FileNotFoundError) as e:
    ckpt.restore(4)
  assert str(tmp_path) in str(e.value) and "[3, 5]" in str(e.value)
  with pytest.raises(ValueError, match="without data_iter"):
    ckpt.restore(5, data_iter=iter(grain.MapDataset.range(4).to_iter_dataset()))
  ckpt.close()


def test_relative_directory_is_accepted(tmp_path, monkeypatch):
  # `--workdir=runs/x` is how people launch jobs; Orbax itself insists on absolute paths.
  monkeypatch.chdir(tmp_path)
  import jax.numpy as jnp
  from r1jax.checkpoint import CheckpointManager
  with CheckpointManager("runs/rel/ckpt", async_save=False) as ckpt:
    ckpt.save(1, {"x": jnp.arange(3)})
  with CheckpointManager("runs/rel/ckpt") as ckpt:
    state, _ = ckpt.restore(1)
  assert list(state["x"]) == [0, 1, 2]
