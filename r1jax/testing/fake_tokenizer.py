"""A tiny deterministic character-level tokenizer for tests and colabs (no training, no files).

Ids: 0 pad, 1 unk, 2 bos, 3 eos, 4-7 the R1 tags (`<think> </think> <answer> </answer>`), then one id
per character of a fixed alphabet. With the default `vocab_size=128` the alphabet is all printable
ASCII plus "\\n" and "\\t" (ids past the alphabet are unused and decode to ""). A smaller vocab keeps
a prefix of `_ALPHABET`, ordered so that arithmetic / countdown prompts and the compact template
("Q: ...\\nA: <think>") still encode exactly at `vocab_size=64`:

    tok = FakeTokenizer()
    tok.encode("1+2", add_bos=True) == [2, 9, 20, 10]   # "1" -> 8 + 1, "+" -> 8 + 12
    tok.decode(tok.encode(text)) == text   for any text over the alphabet

Characters outside the alphabet encode to unk and decode to "⁇" (as SentencePiece renders unk).
"""
from __future__ import annotations

import string
from collections.abc import Iterable, Sequence

from r1jax.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, TAGS, UNK_ID

_NUM_RESERVED = 4 + len(TAGS)  # pad, unk, bos, eos + the four tags.
# Priority order: what tiny math tasks need first, so a prefix of it is a usable small alphabet.
_ALPHABET = "".join(dict.fromkeys(
    string.digits + " \n" + "+-*/=()[],.:?" + "QA" + string.ascii_lowercase + string.ascii_uppercase
    + string.punctuation + "\t"))
_UNK_TEXT = "⁇"


class FakeTokenizer:
  """Character-level implementation of `r1jax.data.Tokenizer` with a tiny fixed vocabulary."""

  def __init__(self, vocab_size: int = 128, *, extra_stop_pieces: Sequence[str] = ()):
    """Builds the vocabulary.

    Args:
      vocab_size: number of ids, > 8. 64 keeps digits, space, newline, arithmetic signs, "Q", "A",
        the lowercase letters and "BCD"; 105 and above cover all printable ASCII.
      extra_stop_pieces: pieces besides eos that end generation, e.g. ("</answer>",).
    """
    if vocab_size <= _NUM_RESERVED:
      raise ValueError(f"vocab_size must exceed {_NUM_RESERVED} (specials + tags), got {vocab_size}")
    self._vocab_size = vocab_size
    alphabet = _ALPHABET[: vocab_size - _NUM_RESERVED]
    self._char_to_id = {c: _NUM_RESERVED + i for i, c in enumerate(alphabet)}
    self._id_to_text = {PAD_ID: "", UNK_ID: _UNK_TEXT, BOS_ID: "", EOS_ID: ""}
    self._id_to_text.update({4 + i: tag for i, tag in enumerate(TAGS)})
    self._id_to_text.update({i: c for c, i in self._char_to_id.items()})
    self._tag_to_id = {tag: 4 + i for i, tag in enumerate(TAGS)}
    self._stop_ids = tuple(dict.fromkeys([EOS_ID] + [self.token_id(p) for p in extra_stop_pieces]))

  @property
  def alphabet(self) -> str:
    """The characters that have their own id, in id order."""
    return "".join(self._char_to_id)

  @property
  def vocab_size(self) -> int:
    return self._vocab_size

  @property
  def pad_id(self) -> int:
    return PAD_ID

  @property
  def bos_id(self) -> int:
    return BOS_ID

  @property
  def eos_id(self) -> int:
    return EOS_ID

  @property
  def stop_ids(self) -> tuple[int, ...]:
    return self._stop_ids

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = [BOS_ID] if add_bos else []
    i = 0
    while i < len(text):
      if text[i] == "<":  # Tags first, so "<think>" is one id and never 7 characters.
        tag = next((t for t in TAGS if text.startswith(t, i)), None)
        if tag is not None:
          ids.append(self._tag_to_id[tag])
          i += len(tag)
          continue
      ids.append(self._char_to_id.get(text[i], UNK_ID))
      i += 1
    if add_eos:
      ids.append(EOS_ID)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    return "".join(self._id_to_text.get(int(i), "") for i in ids)

  def token_id(self, piece: str) -> int:
    if piece in self._tag_to_id:
      return self._tag_to_id[piece]
    if piece in self._char_to_id:
      return self._char_to_id[piece]
    special = {"<pad>": PAD_ID, "<unk>": UNK_ID, "<s>": BOS_ID, "</s>": EOS_ID}
    if piece in special:
      return special[piece]
    raise KeyError(f"{piece!r} is not a single token of FakeTokenizer(vocab_size={self._vocab_size})")

  def __repr__(self) -> str:
    return f"FakeTokenizer(vocab_size={self._vocab_size})"
