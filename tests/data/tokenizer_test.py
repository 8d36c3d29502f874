"""Tests for r1jax.data.tokenizer (SentencePiece) and r1jax.testing.fake_tokenizer."""
import pickle

import hypothesis
import pytest
from hypothesis import strategies as st

from r1jax import data
from r1jax.testing.fake_tokenizer import FakeTokenizer

TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _corpus():
  texts = [f"Q: what is {a} + {b}?\nA: <think> {a} plus {b} is {a + b} </think> <answer>{a + b}"
           f"</answer>" for a in range(40) for b in range(0, 40, 3)]
  texts += ["The quick brown fox jumps over the lazy dog.", "Using the numbers [3, 5, 7], make 8."]
  return texts * 2


@pytest.fixture(scope="module")
def bpe():
  return data.SentencePieceTokenizer.train(_corpus(), vocab_size=320, model_type="bpe")


@pytest.fixture(scope="module")
def unigram():
  return data.SentencePieceTokenizer.train(_corpus(), vocab_size=320, model_type="unigram",
                                           hard_vocab_limit=False)  # Unigram stops early on tiny corpora.


ROUND_TRIP_TEXTS = [
    "The quick brown fox.",
    "12345 + 678 = 13023",
    "  leading spaces, trailing  ",
    "line one\n\nline three\ttab",
    "中文测试：数学题",
    "Привет, мир!",
    "emoji 🙂 and accents éàü",
    "<think>2 + 2 = 4</think> <answer>4</answer>",
    "",
    " ",
]


@pytest.mark.parametrize("text", ROUND_TRIP_TEXTS)
@pytest.mark.parametrize("name", ["bpe", "unigram"])
def test_round_trip_exact(name, text, request):
  tok = request.getfixturevalue(name)
  ids = tok.encode(text)
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  assert tok.decode(tok.encode(text, add_bos=True, add_eos=True)) == text


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.text(max_size=40))
def test_round_trip_any_unicode(bpe, text):
  assert bpe.decode(bpe.encode(text)) == text


def test_special_ids_and_bos_eos(bpe):
  assert (bpe.pad_id, bpe.bos_id, bpe.eos_id) == (0, 2, 3)
  assert bpe.vocab_size == 320
  ids = bpe.encode("7", add_bos=True, add_eos=True)
  assert ids[0] == 2 and ids[-1] == 3 and len(ids) == 3
  assert bpe.stop_ids == (bpe.eos_id,)
  # decode skips pad/bos/eos but does not stop at eos.
  assert bpe.decode([0, 2] + bpe.encode("ab") + [3] + bpe.encode("cd") + [0]) == "abcd"
  # ids past the vocabulary (a model whose embedding is padded past its tokenizer samples them) decode to "".
  assert bpe.decode(bpe.encode("ab") + [320, 10_000, -1] + bpe.encode("cd")) == "abcd"


@pytest.mark.parametrize("name", ["bpe", "unigram"])
def test_tags_are_single_tokens_never_split(name, request):
  tok = request.getfixturevalue(name)
  for i, tag in enumerate(TAGS):
    assert tok.token_id(tag) == 4 + i
    assert tok.encode(tag) == [4 + i]
    # Glued to other text, the tag is still exactly one id.
    ids = tok.encode(f"x{tag}y")
    assert ids.count(4 + i) == 1
    assert tok.decode(ids) == f"x{tag}y"


def test_split_digits_each_digit_one_token(bpe):
  ids = bpe.encode("9876543210")
  assert len(ids) == 10
  assert [bpe.decode([i]) for i in ids] == list("9876543210")


def test_extra_stop_pieces_and_token_id_errors(bpe):
  tok = data.SentencePieceTokenizer(bpe.model_proto, extra_stop_pieces=["</answer>"])
  assert tok.stop_ids == (3, 7)
  with pytest.raises(KeyError, match="not a single token"):
    bpe.token_id("definitely not a piece")


def test_save_load_and_pickle_equal(bpe, tmp_path):
  path = tmp_path / "tok.model"
  bpe.save(path)
  loaded = data.SentencePieceTokenizer.load(path)
  assert loaded == bpe and loaded.model_proto == bpe.model_proto
  unpickled = pickle.loads(pickle.dumps(bpe))
  for text in ROUND_TRIP_TEXTS:
    assert loaded.encode(text) == bpe.encode(text) == unpickled.encode(text)


def test_train_errors_are_clear():
  with pytest.raises(ValueError, match="vocab_size=100"):
    data.SentencePieceTokenizer.train(["abc"] * 10, vocab_size=100)
  with pytest.raises(ValueError, match="model_type"):
    data.SentencePieceTokenizer.train(["abc"] * 10, vocab_size=300, model_type="wordpiece")


def test_implementations_satisfy_protocol(bpe):
  assert isinstance(bpe, data.Tokenizer)
  assert isinstance(FakeTokenizer(), data.Tokenizer)


# --- FakeTokenizer ------------------------------------------------------------------------------


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(st.lists(st.sampled_from(list(FakeTokenizer().alphabet) + list(TAGS)), max_size=30))
def test_fake_round_trip(pieces):
  tok = FakeTokenizer()
  text = "".join(pieces)
  ids = tok.encode(text, add_bos=True, add_eos=True)
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text


def test_fake_hand_checked_ids():
  tok = FakeTokenizer()
  assert tok.encode("1+2", add_bos=True, add_eos=True) == [2, 9, 20, 10, 3]
  assert tok.encode("<think>1</think>") == [4, 9, 5]
  assert [tok.token_id(t) for t in TAGS] == [4, 5, 6, 7]
  assert tok.encode("é") == [1] and tok.decode([1]) == "⁇"


def test_fake_small_vocab_covers_compact_prompts():
  tok = FakeTokenizer(vocab_size=64)
  prompt = data.get_template("compact")("what is 12 * (3 + 4)?")
  ids = tok.encode(prompt, add_bos=True)
  assert max(ids) < 64 and tok.decode(ids) == prompt
  with pytest.raises(ValueError):
    FakeTokenizer(vocab_size=8)
