"""Input shards (r1jax.data.pipeline.ShardedBatches): S pipelines side by side, each reading every S-th
example and making its block of rows of each global batch; what a process reads, how it resumes, and how
the blocks become one global batch on a mesh (r1jax.sharding.distributed.global_batch)."""
import jax
import numpy as np
import pytest

from r1jax import data
from r1jax.checkpoint import CheckpointManager
from r1jax.data.pipeline import ShardedBatches, concat_batches
from r1jax.sharding import distributed, make_mesh
from r1jax.testing.fake_tokenizer import FakeTokenizer

TOK = FakeTokenizer()


def _examples(n):
  return [{"task": "add", "question": f"{i}+{i}", "answer": str(2 * i), "id": i} for i in range(n)]


def _prompts(shards, count=3, b=2, n=30):
  return ShardedBatches(lambda s: data.prompt_batches(_examples(n), TOK, lambda q: q, batch_size=b, max_prompt_len=8,
                                                      seed=4, shard_index=s, shard_count=count), shards, count)


def test_each_shard_reads_only_its_examples_and_makes_its_block_of_rows():
  it = _prompts([0, 1, 2])
  for _ in range(12):                       # past the end of an epoch (10 examples per shard)
    blocks = next(it)
    assert sorted(blocks) == [0, 1, 2]
    for s, block in blocks.items():
      assert [e["id"] % 3 for e in block["examples"]] == [s, s]
    whole = concat_batches([blocks[s] for s in range(3)])
    assert whole["prompt_tokens"].shape == (6, 8)
    assert [e["id"] % 3 for e in whole["examples"]] == [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(whole["prompt_tokens"][2:4], blocks[1]["prompt_tokens"])
  # A process that holds only shard 1 reads exactly what shard 1 of the full reader reads.
  one, full = _prompts([1]), _prompts([0, 1, 2])
  for _ in range(5):
    assert [e["id"] for e in next(one)[1]["examples"]] == [e["id"] for e in next(full)[1]["examples"]]


def test_one_shard_is_the_plain_pipeline():
  texts = [f"doc number {i}" for i in range(20)]
  plain = data.packed_lm_batches(texts, TOK, batch_size=4, seq_len=16, seed=1)
  sharded = ShardedBatches(lambda s: data.packed_lm_batches(texts, TOK, batch_size=4, seq_len=16, seed=1,
                                                            shard_index=s, shard_count=1), [0], 1)
  for _ in range(6):
    a, b = next(plain), next(sharded)[0]
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_position_resumes_exactly_and_a_different_layout_is_refused(tmp_path):
  it = _prompts([0, 2])
  for _ in range(7):
    next(it)
  state = it.get_state()
  expected = [next(it) for _ in range(6)]
  again = _prompts([0, 2])
  again.set_state(state)
  for want in expected:
    got = next(again)
    assert {s: [e["id"] for e in b["examples"]] for s, b in got.items()} == \
        {s: [e["id"] for e in b["examples"]] for s, b in want.items()}
  with pytest.raises(ValueError, match=r"shards \[0, 2\] of 3; this process reads shards \[1\] of 3"):
    _prompts([1]).set_state(state)
  with pytest.raises(ValueError, match="saved by a single pipeline"):
    _prompts([0, 2]).set_state(b'{"index": 3}')
  # Through an Orbax checkpoint, as the stages save it (Grain's handler, one file per process).
  it = _prompts([0, 1, 2])
  next(it)
  with CheckpointManager(tmp_path / "ckpt") as mgr:
    mgr.save(1, {"x": np.zeros(2, np.float32)}, data_iter=it, force=True)
    mgr.wait()
    want = [next(it) for _ in range(3)]
    fresh = _prompts([0, 1, 2])
    mgr.restore(1, data_iter=fresh)
  for w in want:
    assert [e["id"] for e in next(fresh)[2]["examples"]] == [e["id"] for e in w[2]["examples"]]


def test_bad_shards_are_refused():
  with pytest.raises(ValueError, match="non-empty subset of range"):
    _prompts([3])
  with pytest.raises(ValueError, match="non-empty subset of range"):
    _prompts([])


def test_global_batch_on_a_mesh_is_the_blocks_in_shard_order():
  mesh = make_mesh({"data": 2, "expert": 4})
  rng = np.random.default_rng(0)
  blocks = {s: {"tokens": rng.integers(0, 9, (3, 5)).astype(np.int32), "n": np.arange(3, dtype=np.int32) + 10 * s,
                "names": ["a", "b", "c"]} for s in range(2)}
  out = distributed.global_batch(blocks, 2, mesh)
  assert sorted(out) == ["n", "tokens"]                 # lists stay on the host
  np.testing.assert_array_equal(out["tokens"], np.concatenate([blocks[0]["tokens"], blocks[1]["tokens"]]))
  np.testing.assert_array_equal(out["n"], [0, 1, 2, 10, 11, 12])
  assert out["tokens"].sharding.spec[0] == ("data", "fsdp") and out["tokens"].sharding.mesh.shape == mesh.shape
  single = distributed.global_batch(blocks, 2, None)
  np.testing.assert_array_equal(single["tokens"], out["tokens"])


def test_which_shards_a_single_process_reads_and_the_default_count():
  mesh = make_mesh({"data": 2, "fsdp": 2, "expert": 2})
  assert distributed.default_input_shards(mesh) == 4 and distributed.default_input_shards(None) == 1
  assert distributed.default_input_shards(make_mesh({"expert": 8})) == 1
  assert distributed.input_shards(mesh, 8, 4) == [0, 1, 2, 3]       # one process holds every row
  with pytest.raises(ValueError, match="does not split into 3 input shards"):
    distributed.input_shards(mesh, 8, 3)
  assert distributed.allgather_objects({"a": [1, "x"]}) == [{"a": [1, "x"]}]
