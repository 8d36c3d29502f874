"""Models by name: what every stage's model field (init, model, models, teacher, student_init) accepts.

    runs/r1/pretrain/model               an r1jax export (r1jax.checkpoint.save_model: model_config.json + variables/)
    hf:/ckpt/Qwen2.5-0.5B-Instruct       a Hugging Face directory (config.json, safetensors, tokenizer files)
    orbax:/ckpt/qwen-orbax               what `python -m r1jax.hf.convert --to_orbax` writes
                                         (model_config.json + params/)

A path without a prefix is recognised by what it holds, in that order. The tokenizer comes with the model:
a Hugging Face directory's tokenizer.json (with its chat template and stop tokens), or what a stage saved in
its export: `tokenizer.model` (SentencePiece) or `hf/`, the Hugging Face side files (tokenizer, generation
config, config.json's token ids) of the model the chain of stages started from. A config's `tokenizer` field,
when set, overrides it (a SentencePiece .model file or a directory with tokenizer.json).

Every export a stage writes carries these files on (`export_files`), so SFT -> rejection sampling -> GRPO
from a Hugging Face model keeps its tokenizer, and `export_hf` writes any export back as a Hugging Face
directory with them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any

import jax

from r1jax.checkpoint import is_model, load_config, load_metadata, load_model
from r1jax.config_utils import ConfigFieldError
from r1jax.data import HFTokenizer, SentencePieceTokenizer
from r1jax.model import ModelConfig
from r1jax.model.transformer import place_variables
from r1jax.sharding import distributed

KINDS = ("export", "hf", "orbax")
SP_TOKENIZER = "tokenizer.model"      # in an export: the SentencePiece model it was trained with
HF_SIDE = "hf"                        # in an export or an Orbax conversion: the Hugging Face side files


def _is_hf(path: str) -> bool:
  p = pathlib.Path(path)
  weights = any(p.glob("*.safetensors")) or (p / "model.safetensors.index.json").is_file()
  return (p / "config.json").is_file() and weights


def _is_orbax(path: str) -> bool:
  p = pathlib.Path(path)
  return (p / "model_config.json").is_file() and (p / "params").is_dir()


_CHECKS = {"export": is_model, "hf": _is_hf, "orbax": _is_orbax}
_HOLDS = {"export": "model_config.json + variables/ (r1jax.checkpoint.save_model, a finished stage's model)",
          "hf": "config.json + *.safetensors (a Hugging Face model directory)",
          "orbax": "model_config.json + params/ (python -m r1jax.hf.convert --to_orbax)"}


# How a model is loaded, whatever it was stored as (a config's `load` section; "" = as stored).
LOAD_SETTINGS = {"dtype": ("float32", "bfloat16", "float16"), "param_dtype": ("float32", "bfloat16", "float16"),
                 "remat": ("none", "full", "dots")}


def load_settings(c: Any, field: str = "load") -> tuple[tuple[str, str], ...]:
  """The non-empty settings of the config section `c.<field>` (compute dtype, parameter dtype, remat), checked."""
  section = c.get(field) if hasattr(c, "get") else None
  if not section:
    return ()
  out = []
  for key, value in dict(section).items():
    if key not in LOAD_SETTINGS:
      raise ConfigFieldError(f"config.{field}: unknown key {key!r}; known: {sorted(LOAD_SETTINGS)}")
    if value in ("", None):
      continue
    if value not in LOAD_SETTINGS[key]:
      raise ConfigFieldError(f"config.{field}.{key}={value!r}: must be one of {LOAD_SETTINGS[key]} (or '' = as stored)")
    out.append((key, value))
  return tuple(out)


@dataclasses.dataclass(frozen=True)
class ModelSource:
  """A model a stage reads: `kind` (export | hf | orbax), its directory `path`, and the settings it is loaded
  with (ModelConfig fields dtype / param_dtype / remat; empty = as stored)."""
  kind: str
  path: str
  settings: tuple[tuple[str, str], ...] = ()

  @property
  def ref(self) -> str:
    """The name that resolves back to this model ("hf:/abs/dir", or the plain path of an export)."""
    return self.path if self.kind == "export" else f"{self.kind}:{self.path}"

  def _hf_settings(self) -> tuple[str | None, dict]:
    """(dtype, other overrides) for r1jax.hf: its `dtype` sets compute and parameter dtype together."""
    settings = dict(self.settings)
    return settings.pop("dtype", None), settings

  def config(self) -> ModelConfig:
    """The architecture (with the load settings), without reading any weight."""
    if self.kind == "hf":
      from r1jax.hf import from_hf_config, read_hf_config
      dtype, rest = self._hf_settings()
      cfg = from_hf_config(read_hf_config(self.path), dtype=dtype)
      return cfg.replace(**rest) if rest else cfg
    if self.kind == "export":
      cfg = load_config(self.path, ModelConfig)
    else:
      cfg = ModelConfig.from_dict(json.loads((pathlib.Path(self.path) / "model_config.json").read_text()))
    return cfg.replace(**dict(self.settings)) if self.settings else cfg

  def load(self, *, mesh=None) -> tuple[ModelConfig, Any, dict]:
    """(config, variables, metadata): the variables placed in their shardings on `mesh` (Hugging Face and
    Orbax weights are read straight into them), in the settings' parameter dtype; metadata is the
    export's, or names the source."""
    if self.kind == "hf":
      from r1jax.hf import load
      dtype, rest = self._hf_settings()
      cfg, variables = load(self.path, dtype=dtype, mesh=mesh, **rest)   # read straight into param_dtype
      metadata = {"source": self.ref}
    elif self.kind == "export":
      cfg, variables, metadata = load_model(self.path, ModelConfig)
      variables = place_variables(cfg, variables, mesh)
    else:
      from r1jax.hf.convert import load_orbax
      cfg, variables = load_orbax(self.path, mesh=mesh)
      metadata = {"source": self.ref}
    want = self.config()
    if want.param_dtype != cfg.param_dtype:       # the trainable tree only: the MoE selection bias stays f32
      variables = {**variables, "params": jax.tree.map(lambda x: x.astype(want.jnp_param_dtype), variables["params"])}
    return want, variables, metadata

  def identity(self) -> str:
    """What names these weights in the fingerprints of the work made from them (checkpoints, exports,
    traces, evaluation caches): an export's `weights_sha256` (the SHA-256 of its arrays, so a copied export is
    the same model and a rewritten one is not); for a Hugging Face or Orbax directory, or an export written
    before exports recorded it, a SHA-256 of its files' names, sizes and modification times (reading
    gigabytes of weights to name them would cost more than the work it guards). Load settings are added."""
    own = load_metadata(self.path).get("weights_sha256") if self.kind == "export" else None
    if own is None:
      h = hashlib.sha256()
      root = pathlib.Path(self.path)
      for f in sorted(p for p in root.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
      own = f"files-sha256:{h.hexdigest()}"
    return own + "".join(f"|{k}={v}" for k, v in self.settings)

  def side_dir(self) -> str | None:
    """The Hugging Face side files (tokenizer, generation config, config.json) this model carries, if any."""
    d = self.path if self.kind == "hf" else os.path.join(self.path, HF_SIDE)
    return d if os.path.isdir(d) else None

  def tokenizer_path(self) -> str | None:
    """The tokenizer that came with the model: a SentencePiece file or a directory with tokenizer.json."""
    if self.kind == "export" and os.path.isfile(os.path.join(self.path, SP_TOKENIZER)):
      return os.path.join(self.path, SP_TOKENIZER)
    side = self.side_dir()
    return side if side and os.path.isfile(os.path.join(side, "tokenizer.json")) else None


def split_ref(ref: str) -> tuple[str | None, str]:
  """(kind or None, absolute path) of a model name: "hf:DIR" -> ("hf", DIR); a plain path -> (None, path)."""
  kind, _, rest = str(ref).strip().partition(":")
  if kind in KINDS and rest:
    return kind, os.path.abspath(os.path.expanduser(rest))
  return None, os.path.abspath(os.path.expanduser(str(ref).strip()))


def parse(ref: str, where: str = "model", settings: tuple[tuple[str, str], ...] = ()) -> ModelSource:
  """The model named `ref` ("hf:DIR", "orbax:DIR", "export:DIR" or a plain DIR recognised by its contents),
  loaded with `settings` (see load_settings); errors say what `where` (e.g. "config.init") holds and what was
  expected."""
  ref = str(ref).strip()
  kind, path = split_ref(ref)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{where}={ref!r} does not exist")
  if kind is not None:
    if not _CHECKS[kind](path):
      raise FileNotFoundError(f"{where}={ref!r} does not hold {_HOLDS[kind]}")
    return ModelSource(kind, path, settings)
  for kind in KINDS:
    if _CHECKS[kind](path):
      return ModelSource(kind, path, settings)
  raise FileNotFoundError(f"{where}={ref!r} is not a model directory: expected " + "; or ".join(
      f"{k}: {_HOLDS[k]}" for k in KINDS) + " (a prefix hf:, orbax: or export: says which)")


def from_config(c: Any, field: str, what: str, *, required: bool = True,
                settings: tuple[tuple[str, str], ...] = ()) -> ModelSource | None:
  """The model named by the config field `c.<field>` (loaded with `settings`), checked before any work; None
  when optional and empty."""
  ref = str(c.get(field, "") or "").strip()
  if not ref:
    if required:
      raise ConfigFieldError(f"config.{field} is required: {what} (set --config.{field}=DIR or hf:DIR)")
    return None
  return parse(ref, f"config.{field}", settings)


def as_source(model: ModelSource | str | os.PathLike) -> ModelSource:
  return model if isinstance(model, ModelSource) else parse(os.fspath(model))


# ------------------------------------------------------------------------------------------ tokenizers
def load_tokenizer(path: str):
  """A SentencePiece .model file, or a directory with a Hugging Face tokenizer.json (its chat template and
  stop tokens included)."""
  if os.path.isdir(path):
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      return HFTokenizer.load(path)
    if os.path.isfile(os.path.join(path, SP_TOKENIZER)):
      return SentencePieceTokenizer.load(os.path.join(path, SP_TOKENIZER))
    raise FileNotFoundError(f"{path}: no tokenizer.json (Hugging Face) or {SP_TOKENIZER} (SentencePiece)")
  return SentencePieceTokenizer.load(path)


def tokenizer_input(c: Any, source: ModelSource | None, what: str) -> str:
  """The tokenizer a job uses: config.tokenizer when set, else the one that came with `source`."""
  path = str(c.get("tokenizer", "") or "").strip()
  if path:
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.tokenizer={path!r} does not exist ({what})")
    return path
  own = source.tokenizer_path() if source is not None else None
  if own is None:
    carried = f"{source.ref} carries no tokenizer" if source is not None else "no model gives one"
    raise ConfigFieldError(f"config.tokenizer is empty and {carried}: {what} (set --config.tokenizer=PATH)")
  return own


def check_vocab(tok, cfg: ModelConfig, model: str, tokenizer: str) -> None:
  if tok.vocab_size > cfg.vocab_size:
    raise ValueError(f"tokenizer {tokenizer!r} has {tok.vocab_size} ids but the model {model!r} only "
                     f"{cfg.vocab_size}: not the tokenizer it was trained with")


# ------------------------------------------------------------------------------------------ what exports carry
def export_files(tokenizer_path: str | None, source: ModelSource | None = None) -> dict[str, str]:
  """{path in the export: file to copy} for an export of a model that started from `source` and uses the
  tokenizer at `tokenizer_path`: the tokenizer and the Hugging Face side files (never the weights) travel on."""
  from r1jax.hf.convert import side_files
  side = source.side_dir() if source is not None else None
  if tokenizer_path and os.path.isdir(tokenizer_path):
    side = tokenizer_path                       # an HF tokenizer given in the config replaces the source's files
  files = {f"{HF_SIDE}/{f.name}": str(f) for f in side_files(side)} if side else {}
  if tokenizer_path and os.path.isfile(tokenizer_path):
    files[SP_TOKENIZER] = tokenizer_path
  return files


def export_hf(model: ModelSource | str, out: str, *, dtype: str | None = None) -> str:
  """Writes the model (usually a stage's export) as a Hugging Face directory `out`, atomically: weights
  (safetensors), config.json (the source's model family and token ids when it came from Hugging Face) and
  the tokenizer files it carries (tokenizer.json & co., or tokenizer.model). A finished `out` is kept.
  Every process of a multi-process job calls it; process 0 writes."""
  from r1jax.hf import save
  from r1jax.hf.convert import export_options, side_files
  out = os.path.abspath(out)
  if os.path.isfile(os.path.join(out, "config.json")):
    return out
  source = as_source(model)
  cfg, variables, _ = source.load()
  host = jax.tree.map(distributed.to_host, variables)
  if distributed.is_writer():
    side = source.side_dir()
    files = [f for f in side_files(side) if f.name != "config.json"] if side else []
    own_sp = os.path.join(source.path, SP_TOKENIZER)
    if source.kind == "export" and os.path.isfile(own_sp):
      files.append(own_sp)
    save(out, cfg, host, dtype=dtype, files=files, **(export_options(side) if side else {}))   # atomic
  distributed.barrier(f"hf export {out}")
  return out
