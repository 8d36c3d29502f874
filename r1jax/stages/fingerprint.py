"""What a stage's result depends on, written with its checkpoints and exports and checked before reuse.

    fp = fingerprint({"model": model_cfg, "": stage_cfg}, {"data": records_digest(examples),
                                                         "tokenizer": tokenizer_digest(tok), "init": "random"})
    # {"model.num_layers": 2, "optim.learning_rate": 0.0001, "seed": 0, ..., "input.data": "sha256:...", ...}
    check(saved_fp, fp, where="runs/x/pretrain/checkpoints step 200", override=sc.resume_override)

A fingerprint is a flat JSON dict: every field of the configs that shape the result (dotted names; the
stage config's own fields unprefixed, other sections under their name) and one digest per input
(`input.data`, `input.tokenizer`, `input.init`, `input.teacher`, ...). Fields that only say how a run
reports or how often it saves (log_every, checkpoint_every, keep, ...) are left out by the caller.

`check` compares a saved fingerprint with the current one and raises `FingerprintMismatch` naming each key
that differs, old and new value, unless the key is allowed by the override ("all", or comma-separated keys
or key prefixes: "optim" allows every optim.* field). Data and weights are named by content (SHA-256), not
by path, so a moved file is the same input and a rewritten one is not.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from r1jax.sharding import distributed

INPUT = "input."     # prefix of the input digests in a fingerprint


class FingerprintMismatch(ValueError):
  """Saved work (a checkpoint, an export, traces) was made under another config or from other inputs.

  `path` is the file or directory holding that work; `changes` is [(key, saved value, current value)]."""

  def __init__(self, message: str, path: str, changes: Sequence[tuple[str, Any, Any]]):
    super().__init__(message)
    self.path, self.changes = path, list(changes)


def _plain(x: Any) -> Any:
  """x as JSON values (dataclasses and objects with to_dict() as dicts, tuples as lists)."""
  if dataclasses.is_dataclass(x) and not isinstance(x, type):
    x = {f.name: getattr(x, f.name) for f in dataclasses.fields(x)}
  elif hasattr(x, "to_dict") and callable(x.to_dict):
    x = x.to_dict()
  if isinstance(x, Mapping):
    return {str(k): _plain(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_plain(v) for v in x]
  return json.loads(json.dumps(x, default=str))


def _flatten(prefix: str, x: Any, out: dict) -> None:
  if isinstance(x, dict) and x:
    for k, v in x.items():
      _flatten(f"{prefix}.{k}" if prefix else k, v, out)
  else:
    out[prefix] = x


def fingerprint(configs: Mapping[str, Any], inputs: Mapping[str, str | None], *,
                exclude: Iterable[str] = ()) -> dict:
  """A flat fingerprint of `configs` ({section name: dataclass / dict / ConfigDict}; section "" is unprefixed)
  and `inputs` ({name: digest}; None entries are dropped), without the keys in `exclude` (or under them)."""
  out: dict[str, Any] = {}
  for section, value in configs.items():
    _flatten(section, _plain(value), out)
  skip = tuple(exclude)
  out = {k: v for k, v in out.items() if not any(k == e or k.startswith(e + ".") for e in skip)}
  out.update({INPUT + k: v for k, v in inputs.items() if v is not None})
  return out


def digest(fp: Mapping[str, Any]) -> str:
  """One SHA-256 of a fingerprint (order-independent): what a downstream stage records as its input."""
  return "sha256:" + hashlib.sha256(json.dumps(fp, sort_keys=True, default=str).encode()).hexdigest()


def records_digest(records: Iterable[Any]) -> str:
  """SHA-256 of a sequence of JSON-like records (texts or dicts, key order ignored), in order."""
  h = hashlib.sha256()
  n = 0
  for r in records:
    h.update(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str).encode())
    h.update(b"\n")
    n += 1
  return f"sha256:{h.hexdigest()}:{n}"


def tokenizer_digest(tokenizer: Any) -> str:
  """SHA-256 of a tokenizer's full serialized form (SentencePiece proto or tokenizer.json, with its stop
  pieces and special tokens): what the tokenizers pickle to."""
  return "sha256:" + hashlib.sha256(pickle.dumps(tokenizer, protocol=4)).hexdigest()


def _allowed(key: str, override: Sequence[str]) -> bool:
  return "all" in override or any(key == o or key.startswith(o + ".") for o in override)


def parse_override(override: str | Sequence[str]) -> tuple[str, ...]:
  """"a,b.c" -> ("a", "b.c")."""
  items = override.split(",") if isinstance(override, str) else override
  return tuple(s.strip() for s in items if s.strip())


def changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
  """[(key, saved value, current value)] of every key whose value differs (absent: None), sorted."""
  saved, current = _plain(dict(saved)), _plain(dict(current))
  keys = sorted(set(saved) | set(current))
  return [(k, saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)]


def _short(v: Any) -> str:
  s = json.dumps(v, default=str)
  return s if len(s) <= 60 else s[:57] + "..."


def check(saved: Mapping[str, Any] | None, current: Mapping[str, Any], *, where: str, path: str,
          override: str | Sequence[str] = (), ignore: Iterable[str] = (), hint: str = "") -> None:
  """Raises FingerprintMismatch unless `saved` equals `current` up to the keys in `ignore` and the keys the
  override allows. saved=None (work written before fingerprints existed) passes with a warning.

  Args:
    saved, current: fingerprints.
    where: what holds `saved`, for the message ("runs/x/checkpoints step 20").
    path: the file or directory of that work (FingerprintMismatch.path).
    override: keys or key prefixes allowed to differ, or "all" (a stage config's resume_override).
    ignore: keys the caller checks itself (e.g. num_steps against the checkpoint's step).
    hint: what the user can do, appended to the message.
  """
  if saved is None:
    print(f"warning: {where} records no config fingerprint (written by an older r1jax): not checked",
          file=sys.stderr, flush=True)
    return
  skip, allow = set(ignore), parse_override(override)
  diff = [c for c in changes(saved, current) if c[0] not in skip]
  allowed = [c for c in diff if _allowed(c[0], allow)]
  diff = [c for c in diff if not _allowed(c[0], allow)]
  if allowed:
    print(f"warning: {where}: going on although " + "; ".join(f"{k} {_short(a)} -> {_short(b)}"
                                                              for k, a, b in allowed) + " (allowed by the override)",
          file=sys.stderr, flush=True)
  if diff:
    listed = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in diff)
    raise FingerprintMismatch(f"{where} was made under another config or from other inputs: {listed}. "
                              + (hint or "Use the original config and inputs, or a new directory."), path, diff)


RESUME_HINT = ("Resume with the config and inputs it was made with, use a new workdir, or allow the change with "
               "the stage config's resume_override (e.g. --config.<stage>.resume_override=KEY,KEY or =all).")


def check_checkpoint(ckpt, fingerprint: dict, num_steps: int, override: str, step: int | None = None,
                     metadata: dict | None = None) -> int | None:
  """For a stage resuming from the r1jax.checkpoint.CheckpointManager `ckpt` (saved with metadata
  {"fingerprint": ...}): raises FingerprintMismatch when checkpoint `step` (default: the newest, its metadata
  read) was written
  under another fingerprint, or lies past `num_steps`; returns the step checked (None: none was). num_steps
  itself may change: the steps up to a checkpoint do not depend on it."""
  if step is None:
    step = ckpt.latest_step()
    if step is None:
      return None
    try:
      metadata = ckpt.read_metadata(step)
    except Exception:            # a damaged newest step: restore_latest falls back, its step is checked then
      return None
  where = f"checkpoint step {step} in {ckpt.directory}"
  check((metadata or {}).get("fingerprint"), fingerprint, where=where, path=os.path.dirname(ckpt.directory),
        override=override, ignore=("num_steps",), hint=RESUME_HINT)
  if step > num_steps and not _allowed("num_steps", parse_override(override)):
    raise FingerprintMismatch(
        f"{where} lies past num_steps={num_steps}: the run would end there with {step} steps. " + RESUME_HINT,
        os.path.dirname(ckpt.directory), [("num_steps", step, num_steps)])
  return step


def move_aside(path: str, why: str) -> str:
  """Renames `path` to `<path>.stale-<unix time>` (kept, never reused) with a warning; every process of a
  multi-process job calls it and process 0 renames. Returns the new name."""
  dst = f"{path}.stale-{int(time.time())}"
  if distributed.is_writer() and os.path.lexists(path):
    os.replace(path, dst)
    print(f"warning: {path} is stale ({why[:500]}); moved it to {dst} and running it again",
          file=sys.stderr, flush=True)
  distributed.barrier(f"move aside {path}")
  return dst
