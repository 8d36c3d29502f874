"""Tests for r1jax.data.pipeline (Grain prompt / packed LM batches) and r1jax.data.jsonl."""
import collections
import json
import pickle

import hypothesis
import numpy as np
import pytest
from hypothesis import strategies as st

from r1jax import data
from r1jax.testing.fake_tokenizer import FakeTokenizer

TOK = FakeTokenizer()
IDENTITY = lambda q: q  # noqa: E731  A template that renders the question as is.


def _examples(n):
  return [{"task": "add", "question": f"{i}+{i}", "answer": str(2 * i), "id": i} for i in range(n)]


def _ids(batch):
  return [e["id"] for e in batch["examples"]]


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    if isinstance(a[k], np.ndarray):
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    else:
      assert a[k] == b[k], k


# --- prompt batches -----------------------------------------------------------------------------


def test_left_padding_hand_checked():
  examples = [{"question": "1"}, {"question": "22"}, {"question": "333"}]
  it = data.prompt_batches(examples, TOK, IDENTITY, batch_size=3, max_prompt_len=5, seed=0,
                           shuffle=False)
  b = next(it)
  # FakeTokenizer: bos=2, pad=0, "1"->9, "2"->10, "3"->11.
  np.testing.assert_array_equal(b["prompt_tokens"], [[0, 0, 0, 2, 9],
                                                     [0, 0, 2, 10, 10],
                                                     [0, 2, 11, 11, 11]])
  np.testing.assert_array_equal(b["prompt_mask"], [[0, 0, 0, 1, 1],
                                                   [0, 0, 1, 1, 1],
                                                   [0, 1, 1, 1, 1]])
  assert b["prompt_tokens"].dtype == np.int32 and b["prompt_mask"].dtype == np.int32
  assert b["prompts"] == ["1", "22", "333"]
  assert b["examples"] == examples
  assert not b["prompt_truncated"].any()


def test_template_by_name_and_examples_kept():
  it = data.prompt_batches(_examples(4), TOK, "compact", batch_size=2, max_prompt_len=16, seed=0,
                           shuffle=False)
  b = next(it)
  assert b["prompts"] == ["Q: 0+0\nA: <think>", "Q: 1+1\nA: <think>"]
  assert b["examples"][1] == {"task": "add", "question": "1+1", "answer": "2", "id": 1}
  row = b["prompt_tokens"][0][b["prompt_mask"][0] == 1]
  assert TOK.decode(row) == b["prompts"][0] and row[0] == TOK.bos_id and row[-1] == 4


def test_left_truncation_keeps_bos_and_end():
  it = data.prompt_batches([{"question": "12345"}, {"question": "1"}], TOK, IDENTITY,
                           batch_size=2, max_prompt_len=3, seed=0, shuffle=False)
  b = next(it)
  np.testing.assert_array_equal(b["prompt_tokens"], [[2, 12, 13], [0, 2, 9]])  # bos "4" "5"
  np.testing.assert_array_equal(b["prompt_truncated"], [True, False])
  it = data.prompt_batches([{"question": "12345"}], TOK, IDENTITY, batch_size=1, max_prompt_len=3,
                           seed=0, truncation="error")
  with pytest.raises(ValueError, match="max_prompt_len=3"):
    next(it)


def test_deterministic_with_seed():
  make = lambda seed: data.prompt_batches(_examples(20), TOK, "compact", batch_size=4,  # noqa: E731
                                          max_prompt_len=16, seed=seed)
  a, b, c = make(0), make(0), make(1)
  first_a = [_ids(next(a)) for _ in range(10)]
  assert first_a == [_ids(next(b)) for _ in range(10)]
  assert first_a != [_ids(next(c)) for _ in range(10)]
  assert first_a[:5] != [[4 * i + j for j in range(4)] for i in range(5)]  # Actually shuffled.


def test_epochs_are_permutations_and_reshuffled():
  it = data.prompt_batches(_examples(12), TOK, "compact", batch_size=4, max_prompt_len=16,
                           seed=3, num_epochs=2)
  ids = [i for b in it for i in _ids(b)]
  assert len(ids) == 24
  assert sorted(ids[:12]) == sorted(ids[12:]) == list(range(12))
  assert ids[:12] != ids[12:]


def test_drop_remainder():
  kw = dict(batch_size=4, max_prompt_len=16, seed=0, num_epochs=1)
  assert [len(_ids(b)) for b in data.prompt_batches(_examples(10), TOK, "compact", **kw)] == [4, 4]
  assert [len(_ids(b)) for b in data.prompt_batches(_examples(10), TOK, "compact",
                                                    drop_remainder=False, **kw)] == [4, 4, 2]


def test_prompt_iterator_resumes_exactly_across_epoch_boundary():
  make = lambda: data.prompt_batches(_examples(10), TOK, "compact", batch_size=3,  # noqa: E731
                                     max_prompt_len=16, seed=7)
  it = make()
  for _ in range(4):  # 12 examples > 1 epoch of 10: the state sits past the boundary.
    next(it)
  state = it.get_state()
  restored = make()
  restored.set_state(pickle.loads(pickle.dumps(state)))
  for _ in range(5):
    _assert_batches_equal(next(it), next(restored))


@pytest.mark.parametrize("shard_count", [2, 3])
def test_prompt_shards_disjoint_and_covering(shard_count):
  seen = []
  for shard_index in range(shard_count):
    it = data.prompt_batches(_examples(11), TOK, "compact", batch_size=2, max_prompt_len=16,
                             seed=0, num_epochs=1, drop_remainder=False, shard_index=shard_index,
                             shard_count=shard_count)
    seen.append({i for b in it for i in _ids(b)})
  for a in range(shard_count):
    for b in range(a + 1, shard_count):
      assert not seen[a] & seen[b]
  assert set().union(*seen) == set(range(11))
  assert sum(len(s) for s in seen) == 11


def test_prompt_input_errors():
  kw = dict(batch_size=2, max_prompt_len=16, seed=0)
  with pytest.raises(ValueError, match="empty"):
    data.prompt_batches([], TOK, "compact", **kw)
  with pytest.raises(ValueError, match="missing field.*'question'"):
    data.prompt_batches([{"problem": "1+1"}], TOK, "compact", **kw)
  with pytest.raises(ValueError, match="unknown prompt template"):
    data.prompt_batches(_examples(4), TOK, "nope", **kw)
  with pytest.raises(ValueError, match="shard_index"):
    data.prompt_batches(_examples(4), TOK, "compact", shard_index=2, shard_count=2, **kw)
  with pytest.raises(ValueError, match="truncation"):
    data.prompt_batches(_examples(4), TOK, "compact", truncation="right", **kw)
  # A bad record deeper in the data fails when read, naming the field.
  it = data.prompt_batches(_examples(1) + [{"q": 1}], TOK, "compact", batch_size=2,
                           max_prompt_len=16, seed=0, shuffle=False)
  with pytest.raises(ValueError, match="missing field"):
    next(it)


def test_prompts_from_generator_and_jsonl(tmp_path):
  path = tmp_path / "train.jsonl"
  path.write_text("".join(json.dumps(e) + "\n" for e in _examples(6)))
  kw = dict(batch_size=3, max_prompt_len=16, seed=0, shuffle=False, num_epochs=1)
  from_file = list(data.prompt_batches(str(path), TOK, "compact", **kw))
  from_gen = list(data.prompt_batches((e for e in _examples(6)), TOK, "compact", **kw))
  assert len(from_file) == len(from_gen) == 2
  for a, b in zip(from_file, from_gen):
    _assert_batches_equal(a, b)


def test_prompts_with_sentencepiece_tokenizer():
  corpus = [f"Q: {a}+{b}\nA: <think>{a + b}</think> <answer>{a + b}</answer>"
            for a in range(30) for b in range(30)]
  tok = data.SentencePieceTokenizer.train(corpus, vocab_size=300, hard_vocab_limit=False)
  it = data.prompt_batches(_examples(8), tok, "compact", batch_size=4, max_prompt_len=24, seed=0)
  b = next(it)
  for row, mask, prompt in zip(b["prompt_tokens"], b["prompt_mask"], b["prompts"]):
    real = row[mask == 1]
    assert real[0] == tok.bos_id and real[-1] == tok.token_id("<think>")
    assert tok.decode(real) == prompt
    assert np.all(row[mask == 0] == tok.pad_id)


# --- JSONL --------------------------------------------------------------------------------------


def test_jsonl_malformed_line_reports_file_and_line(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"question": "1"}\n\n{"question": 2\n{"question": "3"}\n')
  src = data.JsonlSource(path)
  assert len(src) == 3 and src[0] == {"question": "1"} and src[-1] == {"question": "3"}
  with pytest.raises(data.JsonlError, match=rf"{path}:3: malformed JSON"):
    src[1]
  with pytest.raises(data.JsonlError, match=rf"{path}:3"):
    data.JsonlSource(path, validate=True)
  with pytest.raises(IndexError):
    src[3]


def test_jsonl_required_fields_and_empty(tmp_path):
  path = tmp_path / "x.jsonl"
  path.write_text('{"question": "1", "answer": "1"}\n{"question": "2"}\n[1, 2]\n')
  src = data.JsonlSource(path, required_fields=("question", "answer"))
  assert src[0]["answer"] == "1"
  with pytest.raises(data.JsonlError, match=rf"{path}:2: .*missing required field.*'answer'"):
    src[1]
  with pytest.raises(data.JsonlError, match=rf"{path}:3: expected a JSON object"):
    src[2]
  empty = tmp_path / "empty.jsonl"
  empty.write_text("\n  \n")
  with pytest.raises(ValueError, match=rf"{empty}: JSONL file has no records"):
    data.JsonlSource(empty)


def test_jsonl_multiple_files_and_pickle(tmp_path):
  paths = []
  for k in range(2):
    paths.append(tmp_path / f"{k}.jsonl")
    paths[-1].write_text("".join(json.dumps({"k": k, "i": i}) + "\n" for i in range(3)))
  src = data.JsonlSource(paths)
  src[0]  # Opens a descriptor; pickling must not carry it.
  clone = pickle.loads(pickle.dumps(src))
  assert [clone[i] for i in range(len(clone))] == [{"k": k, "i": i} for k in range(2)
                                                  for i in range(3)]
  assert clone.location(4) == f"{paths[1]}:2"


def test_malformed_jsonl_surfaces_through_pipeline(tmp_path):
  path = tmp_path / "bad.jsonl"
  path.write_text('{"question": "1"}\n{"question": "2"\n')
  it = data.prompt_batches(str(path), TOK, "compact", batch_size=2, max_prompt_len=16, seed=0)
  with pytest.raises(data.JsonlError, match=rf"{path}:2"):
    next(it)


# --- packed LM batches --------------------------------------------------------------------------


def _segments(batch):
  """Yields (tokens, targets, loss_mask, positions) per packed segment."""
  for b in range(batch["tokens"].shape[0]):
    seg = batch["segment_ids"][b]
    for s in np.unique(seg[seg > 0]):
      sel = seg == s
      assert np.all(np.diff(np.flatnonzero(sel)) == 1), "segments are contiguous"
      yield (batch["tokens"][b][sel], batch["targets"][b][sel], batch["loss_mask"][b][sel],
             batch["positions"][b][sel])


TEXTS = ["ab cd", "hello world", "xyz", "a", "the end of text", "12+34=46"]


def test_packing_segments_positions_and_targets():
  it = data.packed_lm_batches(TEXTS, TOK, batch_size=2, seq_len=16, seed=0, num_epochs=1,
                              drop_remainder=False)
  got = []
  for batch in it:
    assert set(batch) == {"tokens", "targets", "loss_mask", "segment_ids", "positions",
                          "num_truncated"}
    for k in ("tokens", "targets", "loss_mask", "segment_ids", "positions"):
      assert batch[k].dtype == np.int32 and batch[k].shape[1:] == (16,)
    seg = batch["segment_ids"]
    # Segment ids count 1, 2, 3, ... from the left of each row; padding (0) only at the end.
    for row in seg:
      nz = row[row > 0]
      assert list(np.unique(nz)) == list(range(1, len(np.unique(nz)) + 1))
      assert np.all(row[len(nz):] == 0) and np.all(np.diff(nz) >= 0)
    pad = seg == 0
    assert np.all(batch["tokens"][pad] == TOK.pad_id) and np.all(batch["loss_mask"][pad] == 0)
    assert np.all(batch["positions"][pad] == 0)
    for tokens, targets, loss_mask, positions in _segments(batch):
      np.testing.assert_array_equal(positions, np.arange(len(tokens)))  # Restart at 0.
      # No target crosses a boundary: the segment is exactly one example, shifted by one.
      full = np.append(tokens, targets[-1])
      np.testing.assert_array_equal(targets, full[1:])
      assert full[0] == TOK.bos_id and full[-1] == TOK.eos_id
      assert np.all(loss_mask == 1)  # Pretraining: every target is trained.
      got.append(TOK.decode(full))
  assert sorted(got) == sorted(TEXTS)


def test_sft_loss_mask_is_completion_only():
  examples = [{"prompt": f"Q: {i}+{i}\nA:", "completion": f" {2 * i}"} for i in range(8)]
  examples += [{"question": "7*6", "completion": "42</think> <answer>42</answer>"}]
  it = data.packed_lm_batches(examples, TOK, batch_size=2, seq_len=40, seed=1, num_epochs=1,
                              drop_remainder=False, template="compact")
  completions = []
  for batch in it:
    for tokens, targets, loss_mask, _ in _segments(batch):
      full = TOK.decode(np.append(tokens, targets[-1]))
      trained = targets[loss_mask == 1]
      assert trained[-1] == TOK.eos_id  # eos is trained: the model must learn to stop.
      # The trained targets are a suffix of the segment: the completion and nothing before it.
      n = len(trained)
      np.testing.assert_array_equal(targets[-n:], trained)
      assert np.all(loss_mask[:-n] == 0)
      completions.append((full, TOK.decode(trained)))
  expected = {(f"Q: {i}+{i}\nA: {2 * i}", f" {2 * i}") for i in range(8)}
  expected.add(("Q: 7*6\nA: <think>42</think> <answer>42</answer>",
                "42</think> <answer>42</answer>"))
  assert set(completions) == expected


def test_long_examples_truncate_or_split():
  long = "abcdefghijklmnopqrstuvwxyz"  # bos + 26 + eos = 28 tokens, 27 predictions.
  it = data.packed_lm_batches([long, "ab"], TOK, batch_size=1, seq_len=10, seed=0, num_epochs=1,
                              shuffle=False, drop_remainder=False)
  batches = list(it)
  assert [int(b["num_truncated"][0]) for b in batches] == [1, 0]
  assert TOK.decode(batches[0]["tokens"][0]) == long[:9]  # bos + 9 letters; the rest is dropped.

  it = data.packed_lm_batches([long], TOK, batch_size=1, seq_len=10, seed=0, num_epochs=1,
                              overflow="split", drop_remainder=False)
  targets = [t for b in it for _, tt, m, _ in _segments(b) for t in tt[m == 1]]
  # Every prediction of the document, exactly once, over three windows (10 + 10 + 7).
  assert targets == TOK.encode(long, add_eos=True)


def test_packed_iterator_resumes_exactly_across_epoch_boundary():
  texts = [f"text number {i} " + "x" * (i % 5) for i in range(9)]
  make = lambda: data.packed_lm_batches(texts, TOK, batch_size=2, seq_len=40,  # noqa: E731
                                        seed=5)
  it = make()
  seen = 0
  while seen <= len(texts):  # Step past the end of the first epoch.
    seen += int((next(it)["segment_ids"].max(axis=1)).sum())
  state = it.get_state()
  restored = make()
  restored.set_state(pickle.loads(pickle.dumps(state)))
  for _ in range(5):
    _assert_batches_equal(next(it), next(restored))


def test_packed_shards_disjoint_and_covering():
  texts = [f"doc {i}" for i in range(10)]
  per_shard = []
  for k in range(3):
    it = data.packed_lm_batches(texts, TOK, batch_size=2, seq_len=24, seed=0, num_epochs=1,
                                drop_remainder=False, shard_index=k, shard_count=3)
    per_shard.append(collections.Counter(
        TOK.decode(np.append(t, tt[-1])) for b in it for t, tt, _, _ in _segments(b)))
  total = sum(per_shard, collections.Counter())
  assert total == collections.Counter(texts)  # Each doc exactly once over all shards.


def test_packed_input_errors():
  kw = dict(batch_size=2, seq_len=16, seed=0)
  with pytest.raises(ValueError, match="empty"):
    data.packed_lm_batches([], TOK, **kw)
  with pytest.raises(ValueError, match="'prompt'.*'completion'"):
    data.packed_lm_batches([{"question": "1"}], TOK, **kw)
  with pytest.raises(ValueError, match="overflow"):
    data.packed_lm_batches(TEXTS, TOK, overflow="drop", **kw)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    texts=st.lists(st.text(alphabet="abc 12", max_size=20), min_size=1, max_size=12),
    seq_len=st.integers(4, 24), batch_size=st.integers(1, 3))
def test_packing_invariants(texts, seq_len, batch_size):
  it = data.packed_lm_batches(texts, TOK, batch_size=batch_size, seq_len=seq_len, seed=0,
                              num_epochs=1, drop_remainder=False)
  truncated = 0
  decoded = []
  for batch in it:
    truncated += int(batch["num_truncated"].sum())
    same = (batch["segment_ids"][:, 1:] == batch["segment_ids"][:, :-1]) & (
        batch["segment_ids"][:, 1:] > 0)
    # Inside a segment the target at t is the input at t+1.
    np.testing.assert_array_equal(batch["targets"][:, :-1][same], batch["tokens"][:, 1:][same])
    for tokens, targets, _, positions in _segments(batch):
      np.testing.assert_array_equal(positions, np.arange(len(tokens)))
      decoded.append(TOK.decode(np.append(tokens, targets[-1])))
  assert truncated == sum(len(t) + 1 > seq_len for t in texts)
  assert len(decoded) == len(texts)
  # Untruncated documents come back whole; truncated ones as prefixes.
  assert sorted(d for d in decoded if len(d) + 1 < seq_len) == sorted(
      t for t in texts if len(t) + 1 < seq_len)
