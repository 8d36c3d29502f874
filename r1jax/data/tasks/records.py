"""Loading the JSONL files of the dataset tasks, with errors that name file and line."""
from __future__ import annotations

import functools
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from r1jax.data.jsonl import JsonlError, JsonlSource

# The data ships inside the package (setup.py package_data), licences in each SOURCE.md.
DATA_DIR = pathlib.Path(__file__).resolve().parent / "datasets"


def load_records(path: str | os.PathLike, required_fields: Sequence[str]
                 ) -> list[tuple[str, dict[str, Any]]]:
  """All records of a JSONL file as (location "path:line", record), parsed once per file version.

  Raises:
    FileNotFoundError: no such file.
    JsonlError: (a ValueError) a malformed line or a missing field, naming "path:line".
  """
  path = os.fspath(path)
  stat = os.stat(path)
  return _load(path, tuple(required_fields), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _load(path: str, required_fields: tuple[str, ...], mtime_ns: int, size: int
          ) -> list[tuple[str, dict[str, Any]]]:
  del mtime_ns, size  # Cache keys only: an edited file is read again.
  source = JsonlSource(path, required_fields=required_fields)
  try:
    return [(source.location(i), source[i]) for i in range(len(source))]
  finally:
    source.close()


def field_error(location: str, message: str) -> JsonlError:
  """An error about one record's content, in the same "path:line: ..." form as JsonlSource's."""
  return JsonlError(f"{location}: {message}")
