"""A finished model as one directory: its config (JSON) and its variables (Orbax), written atomically.

    save_model("runs/r1/r1_zero/model", cfg, variables, metadata={"stage": "r1_zero"})
    cfg, variables, metadata = load_model("runs/r1/r1_zero/model", ModelConfig)

The config is any object with `to_dict()` whose type has `from_dict(dict)` (r1jax.model.ModelConfig):
this package stores models without knowing any model class.

Stages of the R1 pipeline hand models to each other (rejection sampling, SFT, distillation, evaluation)
through these directories. The directory is written under a temporary name and renamed when complete,
so a reader never sees half a model: `is_model(path)` is True only for a finished export.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from r1jax.checkpoint.manager import check_finite


class _Config(Protocol):
  def to_dict(self) -> dict: ...


C = TypeVar("C")
_CONFIG = "model_config.json"
_META = "metadata.json"
_VARS = "variables"


def is_model(path: str | os.PathLike) -> bool:
  """True if `path` holds a complete exported model."""
  path = os.fspath(path)
  return os.path.isfile(os.path.join(path, _CONFIG)) and os.path.isdir(os.path.join(path, _VARS))


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def _to_host(x) -> np.ndarray:
  """x as numpy, gathered from every process's devices when it spans them (every process calls this)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def weights_digest(tree: Any) -> str:
  """SHA-256 of every array of `tree` (key path, dtype, shape and bytes, in key-path order): the identity of
  a model's weights, whatever directory or mesh they sit in. In a multi-process job every process calls it
  (arrays spanning processes are gathered)."""
  h = hashlib.sha256()
  for path, x in sorted(jax.tree_util.tree_leaves_with_path(tree), key=lambda p: jax.tree_util.keystr(p[0])):
    a = np.ascontiguousarray(_to_host(x))
    h.update(f"{jax.tree_util.keystr(path)}|{a.dtype.str}|{a.shape}\n".encode())
    h.update(a.tobytes())
  return "sha256:" + h.hexdigest()


def save_model(path: str | os.PathLike, cfg: _Config, variables: Any,
               metadata: Mapping[str, Any] | None = None, files: Mapping[str, str] | None = None) -> str:
  """Writes cfg + variables (+ JSON metadata) to `path`, replacing nothing: the path must not exist yet.

  files: {relative path: file or directory} copied into the export before it is complete (e.g. the
  tokenizer the model uses, "hf/tokenizer.json"); paths that leave the export or start with one of its own
  entries are refused.

  In a multi-process job every process calls it: the variables are gathered to host arrays (a model
  directory holds no device layout, so any mesh can load it), Orbax writes them once, process 0 writes
  the JSON files and renames the directory, and every process returns once the model is complete.
  metadata.json also records `weights_sha256` (see weights_digest), which names the weights by content."""
  path = os.path.abspath(os.fspath(path))
  if is_model(path):
    raise FileExistsError(f"{path} already holds an exported model")
  if os.path.lexists(path) and not (os.path.isdir(path) and not os.listdir(path)):
    # os.replace below makes a model appear whole, so anything else standing here is not ours to delete.
    what = sorted(os.listdir(path))[:5] if os.path.isdir(path) else "a file"
    raise FileExistsError(f"{path} exists and is not an exported model (holds {what}); refusing to replace "
                          "it: move it away or export elsewhere")
  files = dict(files or {})
  parts = lambda n: os.path.normpath(n).split(os.sep)
  bad = sorted(n for n in files if os.path.isabs(n) or ".." in parts(n)
               or parts(n)[0] in ("", ".", _CONFIG, _META, _VARS))
  if bad:
    raise ValueError(f"save_model files: bad name(s) {bad}: relative paths inside the export, not under "
                     f"{_CONFIG}, {_META} or {_VARS}")
  check_finite(variables, f"export {path}")
  primary = jax.process_index() == 0
  tmp = path + ".tmp"
  if primary:
    shutil.rmtree(tmp, ignore_errors=True)           # a save killed earlier
    os.makedirs(tmp)
  _sync(f"save_model start {path}")
  host = jax.tree.map(_to_host, variables)
  metadata = {**dict(metadata or {}), "weights_sha256": weights_digest(host)}
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(tmp, _VARS), host)
    ckptr.wait_until_finished()
  if primary:
    with open(os.path.join(tmp, _CONFIG), "w") as f:
      json.dump(cfg.to_dict(), f, indent=1)
    with open(os.path.join(tmp, _META), "w") as f:
      json.dump(dict(metadata or {}), f, indent=1, default=str)
    for name, src in files.items():
      dst = os.path.join(tmp, os.path.normpath(name))
      os.makedirs(os.path.dirname(dst), exist_ok=True)
      (shutil.copytree if os.path.isdir(src) else shutil.copy2)(src, dst)
    if os.path.isdir(path):
      os.rmdir(path)                                 # empty (checked above)
    os.replace(tmp, path)
  _sync(f"save_model done {path}")
  return path


def load_config(path: str | os.PathLike, config_type: type[C]) -> C:
  """config_type.from_dict(the saved config) of the model at `path`, without reading its variables."""
  path = os.fspath(path)
  if not is_model(path):
    raise FileNotFoundError(f"{path} is not an exported r1jax model (no {_CONFIG} + {_VARS}/): "
                            "was its stage finished?")
  with open(os.path.join(path, _CONFIG)) as f:
    d = json.load(f)
  return config_type.from_dict({k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


def load_metadata(path: str | os.PathLike) -> dict:
  """The JSON metadata of the exported model at `path` ({} when it has none), without reading its weights."""
  meta_path = os.path.join(os.fspath(path), _META)
  if not os.path.exists(meta_path):
    return {}
  with open(meta_path) as f:
    return json.load(f)


def load_model(path: str | os.PathLike, config_type: type[C]) -> tuple[C, dict, dict]:
  """(config as config_type, variables as jax arrays on the default device, metadata dict)."""
  path = os.path.abspath(os.fspath(path))
  cfg = load_config(path, config_type)
  with ocp.StandardCheckpointer() as ckptr:
    variables = ckptr.restore(os.path.join(path, _VARS))
  variables = jax.tree.map(jax.numpy.asarray, variables)
  return cfg, variables, load_metadata(path)
