"""Tokenizers: the small interface the rest of r1jax codes against, and a SentencePiece implementation.

Everything downstream (templates, Grain pipelines, the sampler's stop condition, rewards that decode
completions) only uses the `Tokenizer` protocol below, so the Hugging Face `tokenizers` adapter
(r1jax.data.HFTokenizer) and the character-level `r1jax.testing.fake_tokenizer.FakeTokenizer` slot in unchanged.

Conventions shared by all implementations:

* ids 0-3 are pad / unk / bos / eos for the tokenizers we train (HF adapters report their own ids);
* the R1 tags `<think> </think> <answer> </answer>` are single tokens that are never split, so a
  format reward or a stop condition can look for one id instead of a sub-word pattern;
* `decode` never stops early: pad, bos and eos decode to "" and the caller cuts at `stop_ids`.

Train a tiny model in process (~15 ms for BPE on a few thousand lines):

    tok = SentencePieceTokenizer.train(texts, vocab_size=320)
    tok.save("/tmp/tok.model"); tok = SentencePieceTokenizer.load("/tmp/tok.model")
"""
from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from typing import Protocol, runtime_checkable

import sentencepiece as spm

# The R1 format tags (defined with the format rule they serve), in the order they are given ids (4-7) in
# the tokenizers we train.
from r1jax.rewards.format import ANSWER_CLOSE, ANSWER_OPEN, TAGS, THINK_CLOSE, THINK_OPEN  # noqa: F401

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


@runtime_checkable
class Tokenizer(Protocol):
  """What r1jax needs from a tokenizer. Keep it this small: every backend must implement it.

  Attributes:
    vocab_size: number of ids; every id returned by `encode` is in [0, vocab_size).
    pad_id: id used for padding (prompt left-padding, packed-sequence tails).
    bos_id: beginning-of-sequence id, prepended by `encode(..., add_bos=True)`.
    eos_id: end-of-sequence id, appended by `encode(..., add_eos=True)`.
    stop_ids: ids that end generation (always includes eos_id).
  """

  @property
  def vocab_size(self) -> int: ...

  @property
  def pad_id(self) -> int: ...

  @property
  def bos_id(self) -> int: ...

  @property
  def eos_id(self) -> int: ...

  @property
  def stop_ids(self) -> tuple[int, ...]: ...

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    """Text -> ids. Tags such as `<think>` in `text` become one id each."""
    ...

  def decode(self, ids: Iterable[int]) -> str:
    """Ids -> text. Does not stop at eos; pad/bos/eos decode to "", and so do ids outside [0, vocab_size)
    (a model whose embedding is padded past its tokenizer, as Hugging Face checkpoints often are, can
    sample them)."""
    ...

  def token_id(self, piece: str) -> int:
    """Id of a piece that is a single token (e.g. "<think>"); KeyError if it is not one."""
    ...


class SentencePieceTokenizer:
  """A `Tokenizer` backed by a SentencePiece model proto (BPE or unigram).

  Training settings are chosen so that `decode(encode(text)) == text` for every string:
  identity normalization (no NFKC, no whitespace collapsing), no dummy-prefix space, and byte
  fallback so characters absent from the training corpus (CJK, Cyrillic, emoji) still round-trip.
  """

  def __init__(self, model_proto: bytes, *, extra_stop_pieces: Sequence[str] = ()):
    """Wraps a serialized SentencePiece `ModelProto`.

    Args:
      model_proto: bytes of a `.model` file.
      extra_stop_pieces: pieces besides eos that end generation, e.g. ("</answer>",) to stop a
        tiny model as soon as it closes its answer. Not stored in the model proto.
    """
    self._proto = bytes(model_proto)
    self._sp = spm.SentencePieceProcessor(model_proto=self._proto)
    stops = [self.eos_id] + [self.token_id(p) for p in extra_stop_pieces]
    self._stop_ids = tuple(dict.fromkeys(stops))  # Dedupe, keep order.
    self._extra_stop_pieces = tuple(extra_stop_pieces)

  # --- construction -----------------------------------------------------------------------------

  @classmethod
  def train(
      cls,
      texts: Iterable[str],
      *,
      vocab_size: int,
      model_type: str = "bpe",
      split_digits: bool = True,
      user_defined_symbols: Sequence[str] = (),
      character_coverage: float = 0.9995,
      num_threads: int = 1,
      extra_stop_pieces: Sequence[str] = (),
      **trainer_kwargs,
  ) -> SentencePieceTokenizer:
    """Trains a SentencePiece model in memory (nothing touches the disk).

    Args:
      texts: training sentences/documents (a finite iterable of str).
      vocab_size: total ids, including the 4 specials, the 4 R1 tags and the 256 byte pieces of
        byte fallback, so it must be > 264 + the number of distinct characters kept.
      model_type: "bpe" (fast: ~15 ms on 1k lines) or "unigram" (~1 s on 5k lines).
      split_digits: make every digit its own token. Good for arithmetic tasks: a tiny model sees
        "123" as 1,2,3 rather than an arbitrary merge.
      user_defined_symbols: extra never-split pieces, given ids right after the R1 tags.
      character_coverage: fraction of characters covered by character pieces; the rest are bytes.
      num_threads: trainer threads (1 is fastest for tiny corpora on 2 cores).
      extra_stop_pieces: see `__init__`.
      **trainer_kwargs: passed through to `SentencePieceTrainer.train` (overrides ours).

    Returns:
      The trained tokenizer.
    """
    if model_type not in ("bpe", "unigram"):
      raise ValueError(f"model_type must be 'bpe' or 'unigram', got {model_type!r}")
    buf = io.BytesIO()
    kwargs = dict(
        sentence_iterator=iter(texts),
        model_writer=buf,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        pad_piece="<pad>", unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>",
        user_defined_symbols=list(TAGS) + [s for s in user_defined_symbols if s not in TAGS],
        byte_fallback=True,
        split_digits=split_digits,
        character_coverage=character_coverage,
        # Exact round trips: no NFKC, keep runs of spaces, no implicit leading space.
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        # Documents (e.g. SFT traces) are longer than the 4192-byte default; longer ones are skipped.
        max_sentence_length=1 << 16,
        num_threads=num_threads,
        minloglevel=2,  # The trainer is chatty on stderr.
    )
    kwargs.update(trainer_kwargs)
    try:
      spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as e:
      raise ValueError(f"SentencePiece training failed (vocab_size={vocab_size}, "
                       f"model_type={model_type!r}): {e}") from e
    return cls(buf.getvalue(), extra_stop_pieces=extra_stop_pieces)

  @classmethod
  def load(cls, path: str | os.PathLike, *, extra_stop_pieces: Sequence[str] = ()
           ) -> SentencePieceTokenizer:
    """Loads a `.model` file written by `save` (or by any SentencePiece trainer)."""
    with open(path, "rb") as f:
      return cls(f.read(), extra_stop_pieces=extra_stop_pieces)

  def save(self, path: str | os.PathLike) -> None:
    """Writes the serialized model proto (a standard SentencePiece `.model` file), atomically: a run killed
    mid-write leaves no truncated tokenizer for the rerun to load."""
    path = os.fspath(path)
    with open(path + ".tmp", "wb") as f:
      f.write(self._proto)
    os.replace(path + ".tmp", path)

  @property
  def model_proto(self) -> bytes:
    """The serialized model proto (what `save` writes)."""
    return self._proto

  # --- Tokenizer interface ----------------------------------------------------------------------

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def pad_id(self) -> int:
    return self._sp.pad_id()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def stop_ids(self) -> tuple[int, ...]:
    return self._stop_ids

  def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    return self._sp.encode(text, add_bos=add_bos, add_eos=add_eos)

  def decode(self, ids: Iterable[int]) -> str:
    # SentencePiece already renders control pieces (pad/bos/eos) as "" and keeps going past eos; it raises
    # on ids beyond its vocabulary, which a padded embedding can produce.
    n = self.vocab_size
    return self._sp.decode([int(i) for i in ids if 0 <= int(i) < n])

  def token_id(self, piece: str) -> int:
    i = self._sp.piece_to_id(piece)
    # piece_to_id maps anything unknown to unk_id; only "<unk>" itself may legitimately be unk.
    if i == self._sp.unk_id() and piece != self._sp.id_to_piece(i):
      raise KeyError(f"{piece!r} is not a single token of this SentencePiece model")
    return i

  def id_to_piece(self, i: int) -> str:
    """The vocabulary piece of an id (debugging aid; not part of the `Tokenizer` protocol)."""
    return self._sp.id_to_piece(int(i))

  def __eq__(self, other) -> bool:
    return isinstance(other, SentencePieceTokenizer) and self._proto == other._proto

  def __hash__(self) -> int:
    return hash(self._proto)

  def __reduce__(self):
    # The C++ processor is not picklable; rebuild it from the proto (needed by Grain workers).
    return (_rebuild_sentencepiece, (self._proto, self._extra_stop_pieces))

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer(vocab_size={self.vocab_size})"


def _rebuild_sentencepiece(proto: bytes, extra_stop_pieces: tuple[str, ...]):
  return SentencePieceTokenizer(proto, extra_stop_pieces=extra_stop_pieces)
