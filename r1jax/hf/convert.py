"""Convert checkpoints between Hugging Face directories and Orbax.

    python -m r1jax.hf.convert --from_hf  /ckpt/DeepSeek-R1-Distill-Qwen-1.5B --to_orbax /ckpt/r1d-orbax
    python -m r1jax.hf.convert --from_orbax /ckpt/r1d-orbax --to_hf /ckpt/r1d-hf [--dtype bfloat16]
    python -m r1jax.hf.convert --from_hf /ckpt/DeepSeek-V3 --to_hf /ckpt/DeepSeek-V3-bf16 --dtype bfloat16

HF -> HF re-saves through r1jax: FP8 weights come out dequantised, fused experts per expert, the MTP
layer dropped, and the dtype changed if asked.

An Orbax directory written here holds:
  params/             the variables tree ({"params": ..., ["router_bias": ...]}), orbax StandardCheckpointer;
  model_config.json   ModelConfig.to_dict();
  hf/                 the source's non-weight files (config.json, tokenizer files, generation_config.json),
                      so that --to_hf can write the same token ids and tokenizer back out.
This is a plain parameter snapshot for r1jax.hf and tools; training state (optimizer, step, data
iterator) belongs to r1jax.checkpoint.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import sys
from typing import Any

import jax

from r1jax.hf.config import SUPPORTED_MODEL_TYPES
from r1jax.hf.load import abstract_params, load, read_hf_config
from r1jax.hf.save import save
from r1jax.model.config import ModelConfig
from r1jax.model.transformer import param_shardings

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Token ids kept from the source config.json when re-exporting (ModelConfig has no token ids).
_TOKEN_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def side_files(src: str | os.PathLike) -> list[pathlib.Path]:
  """A Hugging Face directory's non-weight files: config, tokenizer and generation files (not the weights,
  not the weight index)."""
  return sorted(f for f in pathlib.Path(src).iterdir()
                if f.is_file() and not f.name.endswith(_WEIGHT_SUFFIXES) and f.name not in _WEIGHT_INDEXES)


def _copy_side_files(src: pathlib.Path, dst: pathlib.Path, *, include_config: bool) -> None:
  """Copies tokenizer/generation files (not weights, not the weight index)."""
  dst.mkdir(parents=True, exist_ok=True)
  for f in side_files(src):
    if f.name != "config.json" or include_config:
      shutil.copy2(f, dst / f.name)


def export_options(hf_dir: str | os.PathLike) -> dict[str, Any]:
  """save() options that carry the source checkpoint's family and token ids over (from its config.json)."""
  hf_dir = pathlib.Path(hf_dir)
  if not (hf_dir / "config.json").exists():
    return {}
  src = read_hf_config(hf_dir)
  opts: dict[str, Any] = {"extra_config": {k: src[k] for k in _TOKEN_FIELDS if k in src}}
  if src.get("model_type") in SUPPORTED_MODEL_TYPES:
    opts["model_type"] = src["model_type"]
  return opts


def save_orbax(directory: str | os.PathLike, cfg: ModelConfig, variables, *, hf_dir: str | os.PathLike | None = None):
  """Writes variables (orbax), model_config.json and, when given, hf_dir's side files under `directory`."""
  import orbax.checkpoint as ocp
  d = pathlib.Path(directory).absolute()
  d.mkdir(parents=True, exist_ok=True)
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(d / "params", variables, force=True)
  ckptr.wait_until_finished()
  (d / "model_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True) + "\n")
  if hf_dir is not None:
    _copy_side_files(pathlib.Path(hf_dir), d / "hf", include_config=True)
  return d


def load_orbax(directory: str | os.PathLike, *, mesh=None, rules="fsdp_tp") -> tuple[ModelConfig, Any]:
  """Reads what save_orbax wrote: (cfg, variables), placed in their shardings when a mesh is given."""
  import orbax.checkpoint as ocp
  d = pathlib.Path(directory).absolute()
  cfg = ModelConfig.from_dict(json.loads((d / "model_config.json").read_text()))
  abstract = abstract_params(cfg)
  if mesh is None:
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    shardings = jax.tree.map(lambda _: device, abstract)
  else:
    shardings = param_shardings(cfg, mesh, rules)
  target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  return cfg, ocp.StandardCheckpointer().restore(d / "params", target)


def convert(*, from_hf=None, from_orbax=None, to_hf=None, to_orbax=None, dtype: str | None = None) -> pathlib.Path:
  """One conversion; exactly one source and one destination. Returns the destination directory."""
  if (from_hf is None) == (from_orbax is None) or (to_hf is None) == (to_orbax is None):
    raise ValueError("give exactly one of --from_hf/--from_orbax and one of --to_hf/--to_orbax")
  if from_hf is not None:
    src_side = pathlib.Path(from_hf)
    cfg, variables = load(from_hf, dtype=dtype)
  else:
    src_side = pathlib.Path(from_orbax) / "hf"
    cfg, variables = load_orbax(from_orbax)
    if dtype is not None and dtype != cfg.param_dtype:
      cfg = cfg.replace(dtype=dtype, param_dtype=dtype)
      # Only the trainable tree changes dtype; the MoE selection bias stays float32.
      variables = {**variables, "params": jax.tree.map(lambda x: x.astype(cfg.jnp_param_dtype), variables["params"])}
  if to_orbax is not None:
    return save_orbax(to_orbax, cfg, variables, hf_dir=src_side if src_side.exists() else None)
  side = [f for f in side_files(src_side) if f.name != "config.json"] if src_side.exists() else []
  return save(to_hf, cfg, variables, dtype=dtype, files=side, **export_options(src_side))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m r1jax.hf.convert", description=__doc__.split("\n")[0])
  p.add_argument("--from_hf", help="Hugging Face model directory to read")
  p.add_argument("--from_orbax", help="directory written by --to_orbax")
  p.add_argument("--to_hf", help="Hugging Face model directory to write")
  p.add_argument("--to_orbax", help="Orbax directory to write")
  p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                 help="parameter dtype (default: the source's)")
  args = p.parse_args(argv)
  try:
    out = convert(from_hf=args.from_hf, from_orbax=args.from_orbax, to_hf=args.to_hf, to_orbax=args.to_orbax,
                  dtype=args.dtype)
  except ValueError as e:
    p.error(str(e))
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
