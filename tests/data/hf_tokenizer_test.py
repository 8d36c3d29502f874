"""r1jax.data.hf_tokenizer.HFTokenizer on tiny byte-level BPE tokenizers written with `tokenizers`.

One tokenizer looks like DeepSeek-R1-Distill's (BOS, EOS, <think> tags as added tokens), one like
Qwen2.5-Instruct's (no BOS, two EOS ids in generation_config.json). transformers' own loader is the
reference for encode/decode where it is installed.
"""
import json
import pickle

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from r1jax.data.hf_tokenizer import HFTokenizer
from r1jax.data.tokenizer import Tokenizer as TokenizerProtocol

BOS, EOS, PAD = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜pad｜>"
TAGS = ("<think>", "</think>", "<answer>", "</answer>")
TEXTS = ["The quick brown fox.", "12345 + 678 = 13023", "  leading spaces, trailing  ",
         "line one\n\nline\ttab", "中文测试：数学题", "emoji 🙂 and accents éàü",
         "<think>2 + 2 = 4</think> <answer>4</answer>", "", " "]


def _tokenizer_json(specials):
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(specials),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  corpus = [f"Q: what is {a} + {b}? A: {a + b}. The quick brown fox jumps." for a in range(30) for b in range(9)]
  tok.train_from_iterator(corpus, trainer)
  tok.add_tokens(list(TAGS))     # R1-distill's tags are added, non-special tokens
  return tok.to_str()


def _write_dir(path, tokenizer_json, tokenizer_config, generation_config):
  path.mkdir()
  (path / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
  (path / "tokenizer_config.json").write_text(json.dumps(tokenizer_config), encoding="utf-8")
  if generation_config is not None:
    (path / "generation_config.json").write_text(json.dumps(generation_config))
  return path


@pytest.fixture(scope="module")
def r1_dir(tmp_path_factory):
  tj = _tokenizer_json([BOS, EOS, PAD])
  eos_id = Tokenizer.from_str(tj).token_to_id(EOS)
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": True, "add_eos_token": False,
            "bos_token": {"__type": "AddedToken", "content": BOS, "special": True}, "eos_token": EOS,
            "pad_token": PAD}
  return _write_dir(tmp_path_factory.mktemp("tok") / "r1", tj, config, {"bos_token_id": 0, "eos_token_id": eos_id})


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
  tj = _tokenizer_json(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  t = Tokenizer.from_str(tj)
  config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>"}
  gen = {"eos_token_id": [t.token_to_id("<|im_end|>"), t.token_to_id("<|endoftext|>")]}
  return _write_dir(tmp_path_factory.mktemp("tok") / "qwen", tj, config, gen)


def test_special_ids_from_config_files(r1_dir):
  tok = HFTokenizer.load(r1_dir)
  assert isinstance(tok, TokenizerProtocol)
  raw = Tokenizer.from_file(str(r1_dir / "tokenizer.json"))
  assert (tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2) == tuple(raw.token_to_id(t) for t in (BOS, EOS, PAD))
  assert tok.stop_ids == (tok.eos_id,)
  assert tok.vocab_size == raw.get_vocab_size(with_added_tokens=True) == max(raw.get_vocab().values()) + 1


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_and_bos_eos(r1_dir, text):
  tok = HFTokenizer.load(r1_dir)
  ids = tok.encode(text)
  assert all(0 <= i < tok.vocab_size for i in ids)
  assert tok.decode(ids) == text
  full = tok.encode(text, add_bos=True, add_eos=True)
  assert full == [tok.bos_id] + ids + [tok.eos_id]
  assert tok.decode(full + [tok.pad_id]) == text     # pad/bos/eos decode to ""
  assert tok.decode(ids + [tok.vocab_size, tok.vocab_size + 100]) == text   # ids of a padded embedding: ""


def test_tags_are_single_tokens_and_decode_visibly(r1_dir):
  tok = HFTokenizer.load(r1_dir)
  for tag in TAGS:
    assert tok.encode(tag) == [tok.token_id(tag)]
    assert tok.encode(f"x{tag}y").count(tok.token_id(tag)) == 1
  ids = tok.encode("<think>a</think>") + [tok.eos_id] + tok.encode("b")   # decode does not stop at eos
  assert tok.decode(ids) == "<think>a</think>b"
  with pytest.raises(KeyError, match="not a single token"):
    tok.token_id("<not-a-token>")


def test_no_bos_and_several_eos_like_qwen(qwen_dir):
  tok = HFTokenizer.load(qwen_dir, extra_stop_pieces=("</answer>",))
  im_end, eot = tok.token_id("<|im_end|>"), tok.token_id("<|endoftext|>")
  assert tok.bos_id is None
  assert tok.encode("hi", add_bos=True) == tok.encode("hi")
  assert (tok.eos_id, tok.pad_id) == (im_end, eot)
  assert tok.stop_ids == (im_end, eot, tok.token_id("</answer>"))


def test_matches_transformers(r1_dir, qwen_dir):
  transformers = pytest.importorskip("transformers")
  for d in (r1_dir, qwen_dir):
    ours, ref = HFTokenizer.load(d), transformers.AutoTokenizer.from_pretrained(d)
    assert ours.eos_id == ref.eos_token_id or ours.eos_id in ours.stop_ids
    for text in TEXTS:
      ids = ours.encode(text)
      assert ids == ref.encode(text, add_special_tokens=False)
      assert ours.decode(ids) == ref.decode(ids)


def test_pickles(r1_dir):
  tok = HFTokenizer.load(r1_dir, extra_stop_pieces=("</answer>",))
  back = pickle.loads(pickle.dumps(tok))
  assert back.encode(TEXTS[6]) == tok.encode(TEXTS[6]) and back.stop_ids == tok.stop_ids


def test_errors(tmp_path, r1_dir):
  tj = (r1_dir / "tokenizer.json").read_text(encoding="utf-8")
  with pytest.raises(ValueError, match=r"bos_token '<s>' is not a token"):
    HFTokenizer(tj, bos_token="<s>", eos_token=EOS)
  with pytest.raises(ValueError, match="no EOS token"):
    HFTokenizer(tj)
  with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
    HFTokenizer.load(tmp_path)
