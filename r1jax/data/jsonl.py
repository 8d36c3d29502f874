"""Random-access JSONL source for Grain, with errors that name the file and line.

`JsonlSource(paths)` scans each file once and keeps only the byte offset and length of every
non-blank line (16 bytes per record), so `source[i]` reads and parses a single line. It is picklable
(no open file objects travel) and thread-safe (`os.pread`, no shared seek position), which is what
`grain.MapDataset.source` needs for in-process threads and multiprocessing workers alike.

    src = JsonlSource("train.jsonl", required_fields=("question", "answer"))
    len(src), src[0]   # {"question": ..., "answer": ..., ...}
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


class JsonlError(ValueError):
  """A JSONL record is malformed or lacks a required field; the message names file:line."""


class JsonlSource:
  """Random-access view of the records of one or more JSONL files (blank lines are skipped).

  Malformed records are reported when read (`source[i]`), or all at once at construction with
  `validate=True`, as `JsonlError("path:LINE: ...")` with 1-based line numbers.
  """

  def __init__(self, paths: str | os.PathLike | Sequence[str | os.PathLike], *,
               required_fields: Sequence[str] = (), validate: bool = False):
    """Indexes the files.

    Args:
      paths: one path or a sequence of paths; records are numbered across files in order.
      required_fields: keys every record must have; records must then be JSON objects.
      validate: parse every record now (one full pass) instead of on first read.

    Raises:
      FileNotFoundError: a path does not exist.
      ValueError: no paths, or a file has no records (only blank lines or empty).
      JsonlError: with `validate=True`, the first malformed record.
    """
    if isinstance(paths, (str, os.PathLike)):
      paths = [paths]
    self._paths = tuple(os.fspath(p) for p in paths)
    if not self._paths:
      raise ValueError("JsonlSource needs at least one path")
    self._required = tuple(required_fields)
    file_idx, offsets, lengths, line_nos = [], [], [], []
    for k, path in enumerate(self._paths):
      n_before = len(offsets)
      with open(path, "rb") as f:
        offset = 0
        for line_no, line in enumerate(f, start=1):
          if line.strip():
            file_idx.append(k)
            offsets.append(offset)
            lengths.append(len(line))
            line_nos.append(line_no)
          offset += len(line)
      if len(offsets) == n_before:
        raise ValueError(f"{path}: JSONL file has no records (empty or only blank lines)")
    self._file_idx = np.asarray(file_idx, np.int32)
    self._offsets = np.asarray(offsets, np.int64)
    self._lengths = np.asarray(lengths, np.int64)
    self._line_nos = np.asarray(line_nos, np.int64)
    self._fds: dict[int, int] | None = None
    if validate:
      for i in range(len(self)):
        self[i]

  @property
  def paths(self) -> tuple[str, ...]:
    return self._paths

  def __len__(self) -> int:
    return len(self._offsets)

  def location(self, index: int) -> str:
    """'path:line' of record `index` (1-based line number), for error messages."""
    return f"{self._paths[self._file_idx[index]]}:{self._line_nos[index]}"

  def __getitem__(self, index: int) -> Any:
    index = int(index)
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"record {index} out of range for {n} records")
    index %= n
    k = int(self._file_idx[index])
    raw = os.pread(self._fd(k), int(self._lengths[index]), int(self._offsets[index]))
    try:
      record = json.loads(raw)
    except json.JSONDecodeError as e:
      # e.lineno would count the record's own trailing newline; the column is what helps.
      raise JsonlError(
          f"{self.location(index)}: malformed JSON ({e.msg} at column {e.pos + 1})") from None
    except UnicodeDecodeError as e:
      raise JsonlError(f"{self.location(index)}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if self._required:
      if not isinstance(record, dict):
        raise JsonlError(
            f"{self.location(index)}: expected a JSON object, got {type(record).__name__}")
      missing = [f for f in self._required if f not in record]
      if missing:
        raise JsonlError(f"{self.location(index)}: record is missing required field(s) {missing}; "
                         f"it has {sorted(record)}")
    return record

  def _fd(self, k: int) -> int:
    # File descriptors are opened lazily per process (after unpickling in a worker, too).
    if self._fds is None:
      self._fds = {}
    fd = self._fds.get(k)
    if fd is None:
      fd = os.open(self._paths[k], os.O_RDONLY)
      kept = self._fds.setdefault(k, fd)  # Atomic under the GIL: racing threads keep one fd.
      if kept != fd:
        os.close(fd)
        fd = kept
    return fd

  def close(self) -> None:
    """Closes cached file descriptors (they reopen on the next read)."""
    for fd in (self._fds or {}).values():
      os.close(fd)
    self._fds = None

  def __del__(self):
    try:
      self.close()
    except Exception:  # Interpreter shutdown: os may already be gone.
      pass

  def __getstate__(self):
    state = self.__dict__.copy()
    state["_fds"] = None  # Descriptors are per process.
    return state

  def __repr__(self) -> str:
    return f"JsonlSource(paths={list(self._paths)}, num_records={len(self)})"


def write_json(path: str | os.PathLike, obj: Any, *, default=None) -> None:
  """Writes `obj` as JSON via a temporary file, fsync and a rename: a kill never leaves half a file."""
  path = os.fspath(path)
  with open(path + ".tmp", "w") as f:
    json.dump(obj, f, indent=1, default=default)
    f.flush()
    os.fsync(f.fileno())
  os.replace(path + ".tmp", path)
