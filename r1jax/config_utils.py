"""Config sections -> frozen dataclasses, with errors that name the config path.

Experiments keep every knob in an ml-collections ConfigDict; library code takes dataclasses. `build`
converts one section at the boundary and validates it completely before anything is compiled:
unknown keys, wrong types and bad values fail with the dotted path of the field (config.rl.grpo.beta).
The experiments' inputs (data, tokenizer, models) are config fields too: `input_path` and `input_paths`
read them, failing on an empty required field or a path that does not exist.
"""
from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Mapping


class ConfigFieldError(ValueError):
  """A config field is unknown or has a bad value."""


def _as_dict(section: Any) -> dict:
  if hasattr(section, "to_dict"):
    return section.to_dict()
  if isinstance(section, Mapping):
    return dict(section)
  raise ConfigFieldError(f"expected a config section (dict), got {type(section).__name__}")


def build(cls, section: Any, path: str):
  """Builds dataclass `cls` from `section` (a dict / ConfigDict); nested dataclass fields recurse."""
  values = _as_dict(section)
  fields = {f.name: f for f in dataclasses.fields(cls)}
  unknown = sorted(set(values) - set(fields))
  if unknown:
    raise ConfigFieldError(f"{path}: unknown key(s) {unknown}; known: {sorted(fields)}")
  hints = typing.get_type_hints(cls)
  kwargs = {}
  for name, value in values.items():
    hint = hints.get(name)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
      kwargs[name] = build(hint, value, f"{path}.{name}")
    elif isinstance(value, list):
      kwargs[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
    else:
      kwargs[name] = value
  try:
    return cls(**kwargs)
  except (ValueError, TypeError) as e:
    raise ConfigFieldError(f"{path}: {e}") from e


def config_argument(arg: str | None, allowed: tuple[str, ...], config_file: str) -> str | None:
  """Checks the argument after the colon in `--config=FILE:ARG` (None when there is no colon).

  Every config's `get_config(arg)` calls this first, so a typo such as `:runlocl` is an error that names
  the valid arguments instead of silently selecting the default (full-length) run.
  """
  if arg is None or arg in allowed:
    return arg
  valid = ", ".join(repr(a) for a in allowed)
  raise ConfigFieldError(
      f"{config_file}: unknown config argument {arg!r}; valid: {valid} (or none, for the default run)")


def _path_field(c: Any, field: str) -> str:
  value = c[field]
  if not isinstance(value, str):
    raise ConfigFieldError(f"config.{field}={value!r}: must be a path (a string)")
  return value


def input_path(c: Any, field: str, what: str, *, required: bool = True) -> str:
  """The path in the string field `c.<field>`, checked before any work: "" when optional and empty.

  `what` describes the input for the error messages. An empty required field raises ConfigFieldError
  ("config.<field> is required: <what>"); a path that does not exist raises FileNotFoundError naming the
  field and the path.
  """
  path = _path_field(c, field)
  if not path:
    if required:
      raise ConfigFieldError(f"config.{field} is required: {what} (set --config.{field}=PATH)")
    return ""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.{field}={path!r} does not exist ({what})")
  return path


def input_paths(c: Any, field: str, what: str) -> list[str]:
  """The comma-separated paths in `c.<field>` (at least one), each checked as `input_path` does."""
  paths = [p.strip() for p in _path_field(c, field).split(",") if p.strip()]
  if not paths:
    raise ConfigFieldError(f"config.{field} is required: {what} (set --config.{field}=PATH[,PATH...])")
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.{field}: {path!r} does not exist ({what})")
  return paths
