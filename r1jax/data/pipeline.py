"""Grain input pipelines: prompt batches for RL and packed token batches for pretraining / SFT.

Both pipelines are `grain.MapDataset` chains that end in a checkpointable `grain.DatasetIterator`:

    source -> shard (per process) -> shuffle(seed) -> repeat(num_epochs) -> tokenize -> batch

* Sharding happens first, on example indices: process `i` of `n` reads examples `i, i+n, i+2n, ...`
  of the source, so shards are disjoint and their union is the whole source. Shard sizes differ by
  at most one; with a finite `num_epochs` processes may thus see different numbers of batches.
* Shuffling is a deterministic function of `seed` and the epoch (grain reseeds each epoch).
* `it.get_state()` is a small nested dict of ints; a freshly built pipeline with the same arguments plus
  `it.set_state(state)` resumes at the exact next batch. Store it with Orbax through
  `grain.checkpoint.CheckpointSave(it)`.
* Everything runs in-process by default: grain's multiprocessing workers need absl flags parsed and
  cost ~3 s of start-up on 2 cores, more than the whole input pipeline of a tiny run.

Inputs are any sequence of example dicts (e.g. from `r1jax.data.tasks`), an iterable (materialized
into a list), or a path to a JSONL file (read lazily through `JsonlSource`).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import grain
import numpy as np

from r1jax.data.jsonl import JsonlSource
from r1jax.data.templates import get_template
from r1jax.data.tokenizer import Tokenizer

Example = Mapping[str, Any]

TRUNCATE_LEFT = "left"
TRUNCATE_ERROR = "error"
OVERFLOW_TRUNCATE = "truncate"
OVERFLOW_SPLIT = "split"


# ------------------------------------------------------------------------------------------------
# Sources.
# ------------------------------------------------------------------------------------------------


def as_source(examples: Any, *, required_fields: Sequence[str] = ()) -> Sequence[Any]:
  """Turns a JSONL path, a sequence or an iterable of examples into a random-access source.

  Args:
    examples: path (str/PathLike) to a JSONL file, a sequence (list, tuple, `JsonlSource`,
      `grain.MapDataset`, anything with `__len__` and `__getitem__`), or any finite iterable.
    required_fields: for JSONL paths, fields checked on every read (errors name file:line).

  Returns:
    A sequence usable by `grain.MapDataset.source`.

  Raises:
    ValueError: the source has no examples.
  """
  if isinstance(examples, (str, os.PathLike)):
    source = JsonlSource(examples, required_fields=required_fields)
  elif isinstance(examples, grain.MapDataset) or (
      hasattr(examples, "__len__") and hasattr(examples, "__getitem__")
      and not isinstance(examples, Mapping)):
    source = examples
  elif isinstance(examples, Iterable) and not isinstance(examples, Mapping):
    source = list(examples)
  else:
    raise TypeError(f"examples must be a JSONL path, a sequence or an iterable, got "
                    f"{type(examples).__name__}")
  if len(source) == 0:
    raise ValueError("the dataset is empty: no examples to build batches from")
  return source


def _check_fields(example: Any, fields: Sequence[str], what: str) -> None:
  if not isinstance(example, Mapping):
    raise ValueError(f"{what}: expected an example dict, got {type(example).__name__}")
  missing = [f for f in fields if f not in example]
  if missing:
    raise ValueError(f"{what}: example is missing field(s) {missing}; it has {sorted(example)}")


def _sharded_epochs(source: Sequence[Any], *, seed: int, shuffle: bool, num_epochs: int | None,
                    shard_index: int, shard_count: int) -> grain.MapDataset:
  """source -> this process's shard -> shuffled -> repeated."""
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"need 0 <= shard_index < shard_count, got {shard_index}, {shard_count}")
  if num_epochs is not None and num_epochs < 1:
    raise ValueError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
  ds = grain.MapDataset.source(source)
  if shard_count > 1:
    ds = ds.slice(slice(shard_index, None, shard_count))
    if len(ds) == 0:
      raise ValueError(f"shard {shard_index} of {shard_count} is empty: only {len(source)} examples")
  if shuffle:
    # Shuffle before repeat: each epoch is a permutation of the shard, reshuffled every epoch.
    ds = ds.shuffle(seed=seed)
  return ds.repeat(num_epochs)


def _to_iter(ds: grain.MapDataset, read_threads: int) -> grain.IterDataset:
  # Threads only help I/O-bound reads: tokenization holds the GIL (no speed-up measured on 2 cores).
  return ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=
                                              max(1, 2 * read_threads)))


def _maybe_workers(ds: grain.IterDataset, num_workers: int) -> grain.IterDataset:
  if num_workers <= 0:
    return ds
  # Requires absl flags to be parsed (run under absl.app.run), see grain's multiprocessing docs.
  return ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))


# ------------------------------------------------------------------------------------------------
# Prompt batches (RL rollouts, evaluation).
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _EncodePrompt:
  """Example -> {ids, truncated, prompt, example}. A class (not a lambda) so workers can pickle it."""
  tokenizer: Tokenizer
  template: Callable[[str], str]
  max_prompt_len: int
  question_field: str
  add_bos: bool
  truncation: str

  def __call__(self, example: Example) -> dict[str, Any]:
    _check_fields(example, (self.question_field,), "prompt_batches")
    prompt = self.template(example[self.question_field])
    ids = self.tokenizer.encode(prompt, add_bos=self.add_bos)
    truncated = len(ids) > self.max_prompt_len
    if truncated:
      if self.truncation == TRUNCATE_ERROR:
        raise ValueError(f"prompt has {len(ids)} tokens > max_prompt_len={self.max_prompt_len}: "
                         f"{prompt[:200]!r}")
      # Keep the end (the question's end and the cue to answer, as TRL's left truncation does) and
      # keep bos: a model trained with bos at position 0 misbehaves without it.
      bos = self.tokenizer.bos_id
      head = ids[:1] if bos is not None and ids[:1] == [bos] else []   # tokenizers without BOS keep none
      ids = head + ids[len(ids) - (self.max_prompt_len - len(head)):]
    return {"ids": np.asarray(ids, np.int32), "truncated": truncated, "prompt": prompt,
            "example": dict(example)}


@dataclasses.dataclass(frozen=True)
class _LeftPadBatch:
  """List of encoded prompts -> a batch dict with left-padded `prompt_tokens`."""
  max_prompt_len: int
  pad_id: int

  def __call__(self, elements: Sequence[dict[str, Any]]) -> dict[str, Any]:
    b, p = len(elements), self.max_prompt_len
    tokens = np.full((b, p), self.pad_id, np.int32)
    mask = np.zeros((b, p), np.int32)
    for i, e in enumerate(elements):
      n = len(e["ids"])
      if n:  # tokens[i, -0:] would be the whole row.
        tokens[i, p - n:] = e["ids"]
        mask[i, p - n:] = 1
    return {
        "prompt_tokens": tokens,
        "prompt_mask": mask,
        "prompt_truncated": np.array([e["truncated"] for e in elements], bool),
        "prompts": [e["prompt"] for e in elements],
        "examples": [e["example"] for e in elements],
    }


def prompt_dataset(
    examples: Any,
    tokenizer: Tokenizer,
    template: str | Callable[[str], str] = "r1_zero",
    *,
    batch_size: int,
    max_prompt_len: int,
    seed: int,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    drop_remainder: bool = True,
    shuffle: bool = True,
    question_field: str = "question",
    add_bos: bool = True,
    truncation: str = TRUNCATE_LEFT,
    read_threads: int = 0,
    num_workers: int = 0,
) -> grain.IterDataset:
  """The `grain.IterDataset` behind `prompt_batches` (iterate it to get a fresh iterator)."""
  if truncation not in (TRUNCATE_LEFT, TRUNCATE_ERROR):
    raise ValueError(f"truncation must be {TRUNCATE_LEFT!r} or {TRUNCATE_ERROR!r}, got "
                     f"{truncation!r}")
  if batch_size < 1 or max_prompt_len < 1 + int(add_bos):
    raise ValueError(f"need batch_size >= 1 and max_prompt_len >= {1 + int(add_bos)}, got "
                     f"{batch_size}, {max_prompt_len}")
  template_fn = get_template(template, tokenizer)
  source = as_source(examples, required_fields=(question_field,))
  # Fail at construction, not at the first step of a long job, on the commonest mistake.
  _check_fields(source[0], (question_field,), "prompt_batches")
  encode = _EncodePrompt(tokenizer, template_fn, max_prompt_len, question_field, add_bos, truncation)
  ds = _sharded_epochs(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count)
  ds = ds.map(encode).batch(batch_size, drop_remainder=drop_remainder,
                            batch_fn=_LeftPadBatch(max_prompt_len, tokenizer.pad_id))
  return _maybe_workers(_to_iter(ds, read_threads), num_workers)


def prompt_batches(examples: Any, tokenizer: Tokenizer,
                   template: str | Callable[[str], str] = "r1_zero", *, batch_size: int,
                   max_prompt_len: int, seed: int, **kwargs) -> grain.DatasetIterator:
  """Batches of templated, tokenized, left-padded prompts plus their example dicts (for rewards).

  Args:
    examples: example dicts with a `question_field` (e.g. {"task", "question", "answer", ...}), as
      a sequence, iterable or JSONL path (see `as_source`).
    tokenizer: any `r1jax.data.Tokenizer`.
    template: registry name (`r1jax.data.templates.TEMPLATES`) or a callable question -> prompt.
    batch_size: B, prompts per batch (per process).
    max_prompt_len: P, the fixed padded length (a fixed shape, so the sampler compiles once).
    seed: shuffle seed.
    **kwargs: see `prompt_dataset`:
      num_epochs: None repeats forever (batches then straddle epoch boundaries); else that many.
      shard_index, shard_count: this process's shard of the examples (e.g. jax.process_index()).
      drop_remainder: drop the last partial batch of a finite run.
      shuffle: shuffle the examples (True).
      question_field: example key passed to the template ("question").
      add_bos: prepend bos to every prompt (True).
      truncation: prompts longer than P: "left" keeps bos + the last P-1 tokens (default, the
        truncation is flagged in `prompt_truncated`); "error" raises.
      read_threads / num_workers: grain read threads / multiprocessing workers (0 = in-process).

  Returns:
    A checkpointable `grain.DatasetIterator` over dicts:
      prompt_tokens: int32[B, P], LEFT-padded with `tokenizer.pad_id` (the last column is every
        prompt's last token, so generation starts at the same position for the whole batch).
      prompt_mask: int32[B, P], 1 on real tokens.
      prompt_truncated: bool[B], True where the prompt was cut to P tokens (log its mean).
      prompts: list[str] of the B rendered prompt texts.
      examples: list[dict] of the B example dicts (copies) for the reward functions.
  """
  return iter(prompt_dataset(examples, tokenizer, template, batch_size=batch_size,
                             max_prompt_len=max_prompt_len, seed=seed, **kwargs))


# ------------------------------------------------------------------------------------------------
# Packed LM batches (pretraining, SFT, distillation).
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _EncodeLM(grain.experimental.FlatMapTransform):
  """Example -> pieces of at most seq_len predictions: {tokens, targets, loss_mask, truncated}.

  A text gives bos + text + eos with every target trained. An SFT example gives
  bos + prompt + completion + eos with only the completion and eos trained; prompt and completion
  are encoded separately, exactly as the sampler sees them (prompt ids, then generated ids).
  """
  tokenizer: Tokenizer
  seq_len: int
  template: Callable[[str], str] | None
  add_bos: bool
  add_eos: bool
  overflow: str
  # FlatMapTransform contract; the iterator version of flat-map does not enforce it.
  max_fan_out: int = 1 << 20

  def _tokens_and_mask(self, x: Any) -> tuple[list[int], list[int]]:
    tok = self.tokenizer
    bos = [tok.bos_id] if self.add_bos and tok.bos_id is not None else []   # Qwen has no BOS
    eos = [tok.eos_id] if self.add_eos else []
    if isinstance(x, str) or (isinstance(x, Mapping) and "text" in x):
      # encode adds the BOS (none when the text starts with it, e.g. rendered by a chat template)
      ids = tok.encode(x if isinstance(x, str) else x["text"], add_bos=bool(bos)) + eos
      return ids, [1] * len(ids)
    if isinstance(x, Mapping) and "completion" in x and ("prompt" in x or (
        self.template is not None and "question" in x)):
      prompt = x["prompt"] if "prompt" in x else self.template(x["question"])
      p = tok.encode(prompt, add_bos=bool(bos))
      c = tok.encode(x["completion"]) + eos
      return p + c, [0] * len(p) + [1] * len(c)
    keys = sorted(x) if isinstance(x, Mapping) else type(x).__name__
    raise ValueError(
        "packed_lm_batches: each example must be a str, a dict with 'text', or a dict with "
        "'prompt' (or 'question' plus a template) and 'completion'; got " + str(keys))

  def flat_map(self, x: Any) -> list[dict[str, Any]]:
    ids, mask = self._tokens_and_mask(x)
    # Predictions: input ids[t] -> target ids[t+1], trained where the target is trained.
    n = len(ids) - 1
    if n < 1:
      return []  # Nothing to predict (e.g. an empty text without bos/eos).
    ids = np.asarray(ids, np.int32)
    mask = np.asarray(mask, np.int32)
    if self.overflow == OVERFLOW_SPLIT:
      # Windows of seq_len predictions; consecutive windows share one token so that every
      # target is predicted exactly once. Later windows lose left context (documented).
      starts = range(0, n, self.seq_len)
    else:
      starts = range(1)
    pieces = []
    for s in starts:
      e = min(s + self.seq_len, n)
      pieces.append({"tokens": ids[s:e], "targets": ids[s + 1:e + 1],
                     "loss_mask": mask[s + 1:e + 1],
                     "truncated": int(self.overflow == OVERFLOW_TRUNCATE and n > self.seq_len)})
    return pieces


def _finish_packed_row(row: dict[str, Any]) -> dict[str, Any]:
  # Grain emits per-feature segment ids/positions; all three features share them by construction.
  return {
      "tokens": row["tokens"],
      "targets": row["targets"],
      "loss_mask": row["loss_mask"],
      "segment_ids": row["tokens_segment_ids"],
      "positions": row["tokens_positions"],
      "num_truncated": np.int32(sum(row["truncated"])),
  }


def packed_lm_dataset(
    examples: Any,
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    seed: int,
    template: str | Callable[[str], str] | None = None,
    num_epochs: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
    drop_remainder: bool = True,
    shuffle: bool = True,
    add_bos: bool = True,
    add_eos: bool = True,
    overflow: str = OVERFLOW_TRUNCATE,
    read_threads: int = 0,
    num_workers: int = 0,
) -> grain.IterDataset:
  """The `grain.IterDataset` behind `packed_lm_batches` (iterate it to get a fresh iterator)."""
  if overflow not in (OVERFLOW_TRUNCATE, OVERFLOW_SPLIT):
    raise ValueError(f"overflow must be {OVERFLOW_TRUNCATE!r} or {OVERFLOW_SPLIT!r}, got "
                     f"{overflow!r}")
  if batch_size < 1 or seq_len < 1:
    raise ValueError(f"need batch_size >= 1 and seq_len >= 1, got {batch_size}, {seq_len}")
  template_fn = None if template is None else get_template(template, tokenizer)
  source = as_source(examples)
  encode = _EncodeLM(tokenizer, seq_len, template_fn, add_bos, add_eos, overflow)
  encode._tokens_and_mask(source[0])  # Fail now on a wrong example format, not mid-run.
  ds = _sharded_epochs(source, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                       shard_index=shard_index, shard_count=shard_count)
  ds = grain.experimental.FlatMapIterDataset(_to_iter(ds, read_threads), encode)
  # First-fit packing over `batch_size` rows: examples are added, in order, to the first row with
  # room; when one fits nowhere all rows are emitted. Rows are not reshuffled (examples already are).
  ds = grain.experimental.FirstFitPackIterDataset(
      ds,
      length_struct={"tokens": seq_len, "targets": seq_len, "loss_mask": seq_len},
      num_packing_bins=batch_size,
      shuffle_bins=False,
      meta_features=("truncated",),
      padding_struct={"tokens": tokenizer.pad_id, "targets": tokenizer.pad_id, "loss_mask": 0},
  )
  ds = ds.map(_finish_packed_row).batch(batch_size, drop_remainder=drop_remainder)
  return _maybe_workers(ds, num_workers)


def packed_lm_batches(examples: Any, tokenizer: Tokenizer, *, batch_size: int, seq_len: int,
                      seed: int, **kwargs) -> grain.DatasetIterator:
  """Batches of packed sequences for next-token training (pretraining and SFT).

  Each example becomes one segment; segments are packed first-fit into B rows of T positions.
  Targets are already shifted: `targets[b, t]` is the token after `tokens[b, t]` in the same
  example, so no target ever crosses a segment boundary (an example of n tokens gives n-1
  predictions; the last token of one segment is never asked to predict the next segment's first).

  Args:
    examples: str texts, {"text": ...} dicts (pretraining: every target trained), or SFT dicts
      {"prompt", "completion"} / {"question", "completion"} with `template` (only completion and
      eos targets trained). Sequence, iterable or JSONL path (see `as_source`).
    tokenizer: any `r1jax.data.Tokenizer`.
    batch_size: B rows per batch (per process).
    seq_len: T positions per row.
    seed: shuffle seed.
    **kwargs: see `packed_lm_dataset`:
      template: renders "question" for SFT dicts without "prompt" (the completion must then not
        repeat the template's `response_prefix`).
      num_epochs, shard_index, shard_count, drop_remainder, shuffle: as in `prompt_batches`.
      add_bos / add_eos: wrap every example in bos ... eos (True / True).
      overflow: examples with more than T predictions: "truncate" (default) keeps the first T
        (for SFT the prompt survives, the completion's end and eos are cut; counted in
        `num_truncated`); "split" cuts them into consecutive windows of T predictions, each its own
        segment (pretraining on long documents; later windows lose their left context).
      read_threads / num_workers: grain read threads / multiprocessing workers (0 = in-process).

  Returns:
    A checkpointable `grain.DatasetIterator` over dicts:
      tokens: int32[B, T] model inputs, `tokenizer.pad_id` in padding.
      targets: int32[B, T] next tokens, `tokenizer.pad_id` in padding.
      loss_mask: int32[B, T] 1 where `targets` is trained (aligned with targets; 0 in padding).
      segment_ids: int32[B, T] 1, 2, 3, ... per packed example in a row, 0 in padding.
      positions: int32[B, T] position within the segment, restarting at 0 (0 in padding).
      num_truncated: int32[B] examples truncated in each row.
  """
  return iter(packed_lm_dataset(examples, tokenizer, batch_size=batch_size, seq_len=seq_len,
                                seed=seed, **kwargs))


# ------------------------------------------------------------------------------------------------
# Input shards: the global batch of a multi-process job, read a slice per process.
# ------------------------------------------------------------------------------------------------


class ShardedBatches:
  """The global batches of S input shards, of which this process reads only `shards`.

  Input shard s of S is its own pipeline (built by `make(s)`, e.g. `packed_lm_batches(...,
  shard_index=s, shard_count=S, batch_size=B // S)`): it reads examples s, s+S, s+2S, ... of the source
  and makes rows [s*B/S, (s+1)*B/S) of every global batch of B rows. A process builds only the shards
  whose rows its devices hold, so it reads and tokenizes only its slice of the data, and the global
  batch is a function of S alone: the same whether one process reads every shard or each of S
  processes reads one.

  `next()` gives {shard index: that shard's batch} for this process's shards. The position is
  checkpointable like a Grain iterator (`get_state()` -> bytes, `set_state(bytes)`, what
  `grain.checkpoint.CheckpointSave` stores per process); restoring into a different layout fails
  naming both.
  """

  def __init__(self, make: Callable[[int], Any], shards: Sequence[int], shard_count: int):
    shards = sorted(set(int(s) for s in shards))
    if shard_count < 1 or not shards or not all(0 <= s < shard_count for s in shards):
      raise ValueError(f"ShardedBatches: shards {shards} must be a non-empty subset of range({shard_count})")
    self.shard_count = shard_count
    self.shards = tuple(shards)
    self._its = {s: make(s) for s in self.shards}

  def __iter__(self):
    return self

  def __next__(self) -> dict[int, Any]:
    return {s: next(it) for s, it in self._its.items()}

  def get_state(self) -> bytes:
    return json.dumps({"shard_count": self.shard_count,
                       "shards": {str(s): it.get_state() for s, it in self._its.items()}}).encode()

  def set_state(self, state: bytes) -> None:
    saved = json.loads(state.decode() if isinstance(state, bytes) else state)
    if not isinstance(saved, dict) or "shards" not in saved:
      raise ValueError("the checkpoint's input position was saved by a single pipeline, not by "
                       f"{self.shard_count} input shards: resume with the input_shards it was written with")
    layout = (saved.get("shard_count"), sorted(int(s) for s in saved["shards"]))
    if layout != (self.shard_count, list(self.shards)):
      raise ValueError(f"the checkpoint's input position is for shards {layout[1]} of {layout[0]}; this "
                       f"process reads shards {list(self.shards)} of {self.shard_count}: resume with the "
                       "same input_shards and mesh")
    for s, it in self._its.items():
      it.set_state(saved["shards"][str(s)])

  def start_prefetch(self) -> None:
    for it in self._its.values():
      if hasattr(it, "start_prefetch"):
        it.start_prefetch()


def concat_batches(batches: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
  """One batch from consecutive row blocks (e.g. the input shards of `ShardedBatches`, in shard order):
  arrays concatenated along rows, lists joined."""
  out = {}
  for k, v in batches[0].items():
    if isinstance(v, np.ndarray):
      out[k] = np.concatenate([b[k] for b in batches])
    elif isinstance(v, list):
      out[k] = [x for b in batches for x in b[k]]
    else:
      raise TypeError(f"concat_batches: field {k!r} is a {type(v).__name__}, not an array or a list")
  return out
