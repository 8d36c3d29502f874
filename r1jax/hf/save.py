"""Save r1jax parameters as a Hugging Face checkpoint directory that transformers loads back.

    save("out/", cfg, variables)                           # config.json + model.safetensors
    save("out/", cfg, variables, dtype="bfloat16")         # cast on the way out
    model = transformers.AutoModelForCausalLM.from_pretrained("out/")

The family is inferred from cfg (MLA -> deepseek_v3, GQA MoE -> qwen3_moe, GQA with q/k norm -> qwen3,
other GQA -> qwen2) or given as model_type. Routed experts are written per expert
(`mlp.experts.{e}.gate_proj.weight`), which is what the Hub holds and what transformers v4 and v5 both read.
Parameters the HF family has but cfg lacks are written as their neutral value, so the function is the same:
zero q/k/v biases for a bias-free GQA model exported as qwen2, a zero e_score_correction_bias for a
deepseek_v3 MoE without routing bias.

The directory appears whole or not at all: everything is written into a hidden sibling that is renamed into
place at the end, and a target that exists and is not an empty directory is refused (an older export left
there would mix its shards and index with the new ones).

The writer streams: it computes the safetensors header from shapes alone, then fetches, converts and
writes one tensor at a time (a stacked expert leaf is fetched once for its E per-expert tensors), so host
memory stays near one leaf. Files larger than `max_shard_bytes` are split with a
model.safetensors.index.json, as save_pretrained does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pathlib
import shutil
from collections.abc import Iterator, Sequence
from typing import Any, Callable, Mapping

import jax
import numpy as np

from r1jax.hf.config import infer_model_type, to_hf_config
from r1jax.hf.load import SAFETENSORS_DTYPES, TensorSpec, iter_leaf_specs
from r1jax.model.config import DTYPES, ModelConfig

_CODE_OF = {v: k for k, v in SAFETENSORS_DTYPES.items()}


@dataclasses.dataclass
class _Out:
  """One tensor of the output: its name, shape and dtype, and how to make it from a fetched leaf."""
  name: str
  shape: tuple[int, ...]
  dtype: np.dtype
  leaf: tuple[str, ...] | None      # path of the r1jax leaf it comes from (None: a constant)
  make: Callable[[np.ndarray | None], np.ndarray]

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * self.dtype.itemsize


def _get(variables, path):
  for k in path:
    variables = variables[k]
  return variables


def _outputs(cfg: ModelConfig, model_type: str, dtype: np.dtype) -> list[_Out]:
  f32 = np.dtype(np.float32)
  outs: list[_Out] = []
  for spec, sds in iter_leaf_specs(cfg):
    shape = tuple(sds.shape)
    # HF keeps the selection bias in fp32 (_keep_in_fp32_modules_strict); keep it exact.
    odt = f32 if spec.path[0] == "router_bias" else dtype
    if isinstance(spec, TensorSpec):
      outs.append(_Out(spec.hf_name, spec.hf_shape(shape), odt, spec.path,
                       lambda x, s=spec, d=odt: np.asarray(s.from_leaf(x), dtype=d)))
      continue
    for k in range(shape[0]):
      outs.append(_Out(spec.expert_name(k), (shape[2], shape[1]), odt, spec.path,
                       lambda x, k=k, d=odt: np.asarray(x[k].T, dtype=d)))

  def zeros(name, shape, dt):
    outs.append(_Out(name, shape, dt, None, lambda _, s=shape, d=dt: np.zeros(s, d)))

  for i in range(cfg.num_hidden_layers):
    pre = f"model.layers.{i}"
    if model_type == "qwen2" and not cfg.attention_bias:
      n, k, h = cfg.num_attention_heads, cfg.num_kv_heads, cfg.gqa_head_dim
      for proj, width in (("q", n * h), ("k", k * h), ("v", k * h)):
        zeros(f"{pre}.self_attn.{proj}_proj.bias", (width,), dtype)
    if model_type == "deepseek_v3" and cfg.is_moe_layer(i) and not cfg.use_routing_bias:
      zeros(f"{pre}.mlp.gate.e_score_correction_bias", (cfg.n_routed_experts,), f32)
  return outs


def _header(outs: list[_Out]) -> bytes:
  header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
  offset = 0
  for o in outs:
    header[o.name] = {"dtype": _CODE_OF[o.dtype], "shape": list(o.shape), "data_offsets": [offset, offset + o.nbytes]}
    offset += o.nbytes
  raw = json.dumps(header, separators=(",", ":")).encode()
  return raw + b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does


def _shards(outs: list[_Out], max_bytes: int) -> list[list[_Out]]:
  shards: list[list[_Out]] = [[]]
  size = 0
  for o in outs:
    if shards[-1] and size + o.nbytes > max_bytes:
      shards.append([])
      size = 0
    shards[-1].append(o)
    size += o.nbytes
  return shards


def write_safetensors(path: str | os.PathLike, outs: list[_Out], variables) -> None:
  """Writes `outs` to one .safetensors file, fetching each source leaf from variables once."""
  header = _header(outs)
  cached_path, cached = None, None
  with open(path, "wb") as f:
    f.write(len(header).to_bytes(8, "little"))
    f.write(header)
    for o in outs:
      x = None
      if o.leaf is not None:
        if o.leaf != cached_path:
          cached_path, cached = o.leaf, None   # drop the previous leaf before fetching the next
          cached = np.asarray(jax.device_get(_get(variables, o.leaf)))
        x = cached
      arr = np.ascontiguousarray(o.make(x))
      assert arr.shape == o.shape and arr.dtype == o.dtype, (o.name, arr.shape, arr.dtype)
      f.write(memoryview(arr.reshape(-1).view(np.uint8)))


@contextlib.contextmanager
def new_directory(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a hidden temporary sibling of `path` that is renamed to `path` when the block succeeds (and
  removed when it fails). `path` must not exist, or be an empty directory."""
  out = pathlib.Path(path).absolute()
  if out.exists() or out.is_symlink():
    if not out.is_dir() or any(out.iterdir()):
      held = sorted(p.name for p in out.iterdir())[:5] if out.is_dir() else "a file"
      raise FileExistsError(f"{out} exists and is not empty (holds {held}); refusing to write a Hugging Face "
                            "checkpoint over it: move it away or choose another directory")
  tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  tmp.mkdir(parents=True)
  try:
    yield tmp
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  if out.is_dir():
    out.rmdir()
  os.replace(tmp, out)


def save(path: str | os.PathLike, cfg: ModelConfig, variables, *, dtype: str | None = None,
         model_type: str | None = None, max_shard_bytes: int = 5 * 2 ** 30,
         extra_config: Mapping[str, Any] | None = None,
         files: Sequence[str | os.PathLike] = ()) -> pathlib.Path:
  """Writes config.json and model.safetensors (or shards + index) for transformers, atomically.

  Args:
    path: output directory: must not exist or be empty (FileExistsError otherwise).
    cfg: the architecture.
    variables: variables as returned by init_variables / r1jax.hf.load (host or sharded arrays).
    dtype: tensor dtype on disk ("float32", "bfloat16", "float16"); None = cfg.param_dtype. The MoE
      selection bias is always written in float32.
    model_type: HF family; None = inferred (see r1jax.hf.config.infer_model_type).
    max_shard_bytes: split into several files above this size (5 GiB, save_pretrained's default).
    extra_config: merged into config.json (e.g. {"bos_token_id": 0, "eos_token_id": 1}).
    files: more files copied in before the directory appears (tokenizer files, generation_config.json).

  Returns:
    The output directory.

  Raises:
    HFConfigError: cfg cannot be expressed as model_type.
  """
  mt = model_type or infer_model_type(cfg)
  dt = dtype or cfg.param_dtype
  if dt not in DTYPES:
    raise ValueError(f"dtype={dt!r}: must be one of {tuple(DTYPES)}")
  hf = to_hf_config(cfg, mt, dtype=dt)
  hf.update(extra_config or {})
  outs = _outputs(cfg, mt, np.dtype(DTYPES[dt]))
  shards = _shards(outs, max_shard_bytes)
  with new_directory(path) as tmp:
    (tmp / "config.json").write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    if len(shards) == 1:
      write_safetensors(tmp / "model.safetensors", shards[0], variables)
    else:
      weight_map = {}
      for j, shard in enumerate(shards):
        fname = f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(tmp / fname, shard, variables)
        weight_map.update({o.name: fname for o in shard})
      index = {"metadata": {"total_size": sum(o.nbytes for o in outs)}, "weight_map": weight_map}
      (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    for f in files:
      shutil.copy2(f, tmp / pathlib.Path(f).name)
  return pathlib.Path(path).absolute()
