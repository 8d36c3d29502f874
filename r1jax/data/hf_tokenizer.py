"""A `Tokenizer` (r1jax.data.tokenizer) over a Hugging Face `tokenizers` tokenizer.json.

    tok = HFTokenizer.load("path/to/DeepSeek-R1-Distill-Qwen-1.5B")
    ids = tok.encode("<think>", add_bos=True)      # [bos, id of <think>] when <think> is an added token
    tok.decode(ids), tok.eos_id, tok.stop_ids

What is read from the model directory:
  tokenizer.json          the vocabulary, merges, pre-tokenizer and decoder (via the `tokenizers` library;
                          transformers is not needed);
  tokenizer_config.json   bos_token / eos_token / pad_token (a string or an {"content": ...} dict), falling
                          back to special_tokens_map.json;
  generation_config.json  eos_token_id (an int or a list): what `generate` stops on. The first one is
                          `eos_id` and all of them are in `stop_ids` (Qwen2.5-Instruct stops on both
                          <|im_end|> and <|endoftext|>);
  chat template           tokenizer_config.json's chat_template (or chat_template.jinja beside it, as newer
                          transformers save it): `chat_template`, what the "chat" prompt templates render
                          (r1jax.data.templates).

Conventions (as in the Tokenizer protocol): `encode` never adds special tokens by itself (the tokenizer's
post-processor is bypassed; bos/eos come only from add_bos/add_eos), and `decode` renders pad/bos/eos as ""
and keeps every other token, special or not, so tags such as <think> stay visible to the rewards.

Tokenizers without a BOS token (Qwen2.5, Qwen3) report `bos_id = None`, and `encode(add_bos=True)` adds
nothing, which is what transformers does for them. A text that already starts with the BOS token (a chat
template that prints it) gets no second one.
"""
from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Iterable, Sequence
from typing import Any


def _content(token: Any) -> str | None:
  """A special-token entry of tokenizer_config.json: "text", {"content": "text", ...} or null."""
  if isinstance(token, dict):
    return token.get("content")
  return token


def _read_json(path: pathlib.Path) -> dict:
  return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


class HFTokenizer:
  """Implementation of `r1jax.data.Tokenizer` backed by a `tokenizers.Tokenizer`."""

  def __init__(self, tokenizer_json: str, *, bos_token: str | None = None, eos_token: str | None = None,
               pad_token: str | None = None, eos_token_ids: Sequence[int] = (),
               extra_stop_pieces: Sequence[str] = (), chat_template: str | None = None):
    """Wraps a serialized tokenizer.json.

    Args:
      tokenizer_json: the contents of tokenizer.json.
      bos_token: the BOS piece, or None if the tokenizer has none.
      eos_token: the EOS piece (used when eos_token_ids is empty).
      pad_token: the padding piece; None = pad with eos.
      eos_token_ids: generation_config.json's eos_token_id(s); the first is `eos_id`, all stop generation.
      extra_stop_pieces: further pieces that end generation, e.g. ("</answer>",).
      chat_template: the model's Jinja chat template, if it has one.

    Raises:
      ValueError: no EOS is known, or a named special token is not in the vocabulary.
    """
    self._json = tokenizer_json
    import tokenizers   # here, not at import: r1jax.data and the CPU experiments never need it
    self._tok = tokenizers.Tokenizer.from_str(tokenizer_json)
    self._args = dict(bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
                      eos_token_ids=tuple(int(i) for i in eos_token_ids), extra_stop_pieces=tuple(extra_stop_pieces),
                      chat_template=chat_template)
    self.chat_template = chat_template or None
    vocab = self._tok.get_vocab(with_added_tokens=True)
    # Added tokens can sit past the base vocabulary: the id range, not the count, is what callers need.
    self._vocab_size = max(vocab.values()) + 1 if vocab else 0
    self._bos_id = None if bos_token is None else self._special("bos_token", bos_token)
    config_eos = None if eos_token is None else self._special("eos_token", eos_token)
    gen_eos = [int(i) for i in eos_token_ids]
    if not gen_eos and config_eos is None:
      raise ValueError("no EOS token: neither generation_config.json eos_token_id nor an eos_token is given")
    for i in gen_eos:
      if not 0 <= i < self._vocab_size:
        raise ValueError(f"generation_config eos_token_id {i} is outside the vocabulary [0, {self._vocab_size})")
    self._eos_id = gen_eos[0] if gen_eos else config_eos
    self._pad_id = self._eos_id if pad_token is None else self._special("pad_token", pad_token)
    stops = [self._eos_id, *gen_eos] + ([config_eos] if config_eos is not None else [])
    stops += [self.token_id(p) for p in extra_stop_pieces]
    self._stop_ids = tuple(dict.fromkeys(stops))  # dedupe, keep order
    self._hidden = {i for i in (self._pad_id, self._bos_id, self._eos_id) if i is not None}
    # The special tokens as text, for chat templates that print them.
    self.bos_token = bos_token
    self.eos_token = eos_token if eos_token is not None else self._tok.id_to_token(self._eos_id)

  def _special(self, field: str, piece: str) -> int:
    i = self._tok.token_to_id(piece)
    if i is None:
      raise ValueError(f"{field} {piece!r} is not a token of tokenizer.json")
    return i

  @classmethod
  def load(cls, path: str | os.PathLike, *, extra_stop_pieces: Sequence[str] = ()) -> HFTokenizer:
    """Reads tokenizer.json, tokenizer_config.json and generation_config.json from a model directory."""
    d = pathlib.Path(path)
    if not (d / "tokenizer.json").exists():
      raise FileNotFoundError(f"{d}: no tokenizer.json (slow, vocab-file-only tokenizers are not supported)")
    config = {**_read_json(d / "special_tokens_map.json"), **_read_json(d / "tokenizer_config.json")}
    gen = _read_json(d / "generation_config.json")
    chat = config.get("chat_template")
    if isinstance(chat, list):                       # [{"name": ..., "template": ...}]: the default one
      chat = {t.get("name"): t.get("template") for t in chat}.get("default")
    if (d / "chat_template.jinja").exists():
      chat = (d / "chat_template.jinja").read_text(encoding="utf-8")
    eos_ids = gen.get("eos_token_id")
    eos_ids = [] if eos_ids is None else ([eos_ids] if isinstance(eos_ids, int) else list(eos_ids))
    return cls((d / "tokenizer.json").read_text(encoding="utf-8"), bos_token=_content(config.get("bos_token")),
               eos_token=_content(config.get("eos_token")), pad_token=_content(config.get("pad_token")),
               eos_token_ids=eos_ids, extra_stop_pieces=extra_stop_pieces, chat_template=chat)

  # --- Tokenizer interface ----------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  @property
  def pad_id(self) -> int:
    return self._pad_id

  @property
  def bos_id(self) -> int | None:
    return self._bos_id

  @property
  def eos_id(self) -> int:
    return self._eos_id

  @property
  def stop_ids(self) -> tuple[int, ...]:
    return self._stop_ids

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    # add_special_tokens=False: the tokenizer's post-processor (e.g. a TemplateProcessing that prepends
    # BOS) must not add anything behind the caller's back.
    ids = self._tok.encode(text, add_special_tokens=False).ids
    if add_bos and self._bos_id is not None and ids[:1] != [self._bos_id]:
      ids = [self._bos_id] + ids
    if add_eos:
      ids = ids + [self._eos_id]
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    n = self._vocab_size      # ids past the vocabulary (a padded embedding) decode to "", as in the protocol
    keep = [int(i) for i in ids if int(i) not in self._hidden and 0 <= int(i) < n]
    return self._tok.decode(keep, skip_special_tokens=False)

  def token_id(self, piece: str) -> int:
    i = self._tok.token_to_id(piece)
    if i is None:
      raise KeyError(f"{piece!r} is not a single token of this tokenizer")
    return i

  def __reduce__(self):
    # Rebuilt from the JSON text (Grain workers pickle the tokenizer).
    return (_rebuild, (self._json, self._args))

  def __repr__(self) -> str:
    return f"HFTokenizer(vocab_size={self.vocab_size}, eos_id={self.eos_id}, bos_id={self.bos_id})"


def _rebuild(tokenizer_json: str, args: dict) -> HFTokenizer:
  return HFTokenizer(tokenizer_json, **args)
