"""Load a local Hugging Face checkpoint (config.json + safetensors) into r1jax parameters.

    cfg, variables = load("path/to/DeepSeek-R1-Distill-Qwen-1.5B")                # host/default device
    cfg, variables = load(path, dtype="bfloat16", mesh=make_mesh({"expert": 8}))  # into shardings
    logits = r1jax.model.forward(cfg, variables, tokens, attention_mask=mask, positions=pos)

Supported: model_type deepseek_v3, qwen2, qwen3, qwen3_moe (see r1jax.hf.config for the config mapping);
one `model.safetensors` or a sharded `model.safetensors.index.json`; routed experts stored per expert
(`mlp.experts.{e}.gate_proj.weight`, what the Hub holds) or fused as in transformers v5
(`mlp.experts.gate_up_proj` [E, 2I, D] gate first, `mlp.experts.down_proj` [E, D, I]); DeepSeek's FP8
block-scaled weights (`weight_scale_inv`, dequantised on load); the DeepSeek-V3 MTP layer
(`model.layers.{num_hidden_layers}.*`, skipped: r1jax has no MTP head).

Memory: tensors are read one at a time, with plain `pread`s into a preallocated numpy array of the final
layout (experts are stacked into one [E, ...] array, expert by expert), and each finished array is placed
at once (`jax.device_put`, or `jax.make_array_from_callback` into its NamedSharding when a mesh is given).
Host memory therefore peaks at the loaded parameters plus about one tensor, never two copies of the
checkpoint (benchmarks/hf_load_memory.py measures it). We parse safetensors ourselves rather than
using `safe_open(framework="numpy")`: numpy has no bfloat16/float8 dtypes (ml_dtypes does), and a memory
map would count the whole file in the process's resident set while it is mapped.

Everything is checked before any array is placed: every tensor the model needs exists, has the shape the
config implies, and no tensor is left over (an unused tensor, e.g. an o_proj bias, would mean silently
wrong logits). Errors name the tensor, the expected and the found shape.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re
import struct
from typing import Any, Iterable, Mapping

import jax
import ml_dtypes
import numpy as np

from r1jax.hf.config import HFConfigError, from_hf_config
from r1jax.model.config import ModelConfig
from r1jax.model.transformer import init_variables, param_shardings

log = logging.getLogger(__name__)

SAFETENSORS_DTYPES = {
    "F64": np.dtype(np.float64), "F32": np.dtype(np.float32), "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype(np.int64), "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8), "BOOL": np.dtype(np.bool_),
}
_FLOAT_CODES = ("F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2")
_FP8_CODES = ("F8_E4M3", "F8_E5M2")
DEFAULT_FP8_BLOCK = (128, 128)


class CheckpointError(ValueError):
  """A checkpoint directory that does not match its config (missing/unexpected tensor, wrong shape)."""


# ------------------------------------------------------------------------------------ safetensors files
@dataclasses.dataclass(frozen=True)
class TensorInfo:
  """One tensor's header entry: dtype code ("BF16", ...), shape and byte range in its file."""
  file: pathlib.Path
  dtype: str
  shape: tuple[int, ...]
  begin: int  # absolute byte offset of the data in `file`
  nbytes: int


def read_safetensors_header(path: str | os.PathLike) -> dict[str, TensorInfo]:
  """Parses a .safetensors header: {name: TensorInfo} (no tensor data is read)."""
  path = pathlib.Path(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) != 8:
      raise CheckpointError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", raw)
    if n > 100 * 2 ** 20:
      raise CheckpointError(f"{path}: not a safetensors file (header length {n})")
    header = json.loads(f.read(n))
  header.pop("__metadata__", None)
  out = {}
  for name, entry in header.items():
    code, shape = entry["dtype"], tuple(int(s) for s in entry["shape"])
    begin, end = entry["data_offsets"]
    if code not in SAFETENSORS_DTYPES:
      raise CheckpointError(f"{path}: tensor {name!r} has dtype {code}, which r1jax cannot read; "
                            f"readable: {sorted(SAFETENSORS_DTYPES)}")
    if end - begin != math.prod(shape) * SAFETENSORS_DTYPES[code].itemsize:
      raise CheckpointError(f"{path}: tensor {name!r} has {end - begin} bytes for shape {shape} {code}")
    out[name] = TensorInfo(path, code, shape, 8 + n + begin, end - begin)
  return out


def _pread_into(fd: int, out: np.ndarray, offset: int) -> None:
  """Fills `out` (C-contiguous) from the file at `offset`, looping over short reads."""
  view = memoryview(out.reshape(-1).view(np.uint8))
  done = 0
  while done < len(view):
    n = os.preadv(fd, [view[done:]], offset + done)
    if n <= 0:
      raise CheckpointError(f"unexpected end of file at byte {offset + done}")
    done += n


class Checkpoint:
  """The tensors of an HF model directory (one safetensors file or a sharded index), read on demand."""

  def __init__(self, directory: str | os.PathLike):
    self.dir = pathlib.Path(directory)
    index, single = self.dir / "model.safetensors.index.json", self.dir / "model.safetensors"
    if index.exists():
      weight_map = json.loads(index.read_text())["weight_map"]
      files = sorted(set(weight_map.values()))
    elif single.exists():
      weight_map, files = None, ["model.safetensors"]
    else:
      others = sorted(p.name for p in self.dir.glob("*.safetensors"))
      bins = sorted(p.name for p in self.dir.glob("*.bin"))
      hint = f" (found {others})" if others else (f" (found {bins}: PyTorch .bin checkpoints are not "
                                                  "supported; re-save with safe_serialization)" if bins else "")
      raise CheckpointError(f"{self.dir}: no model.safetensors or model.safetensors.index.json{hint}")
    self.tensors: dict[str, TensorInfo] = {}
    for fname in files:
      fpath = self.dir / fname
      if not fpath.exists():
        raise CheckpointError(f"{index}: lists {fname}, which does not exist")
      for name, info in read_safetensors_header(fpath).items():
        if weight_map is None or weight_map.get(name) == fname:
          self.tensors[name] = info
    if weight_map is not None:
      missing = sorted(set(weight_map) - set(self.tensors))
      if missing:
        raise CheckpointError(f"{index}: tensor {missing[0]!r} is listed in the index but not in "
                              f"{weight_map[missing[0]]}")
    self._fds: dict[pathlib.Path, int] = {}

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def read(self, name: str, index: tuple = ()) -> np.ndarray:
    """Reads `tensor[index]` in its stored dtype, touching only those bytes.

    Args:
      name: the tensor's name.
      index: integers for leading axes, optionally ending with one unit-step slice (a contiguous range).
    """
    info = self.tensors[name]
    dtype = SAFETENSORS_DTYPES[info.dtype]
    shape, offset = list(info.shape), 0
    strides = [math.prod(info.shape[i + 1:]) for i in range(len(info.shape))]
    for axis, ix in enumerate(index):
      if isinstance(ix, slice):
        start, stop, step = ix.indices(shape[0])
        assert step == 1 and axis == len(index) - 1, "only a final unit-step slice is contiguous"
        offset += start * strides[axis]
        shape = [stop - start] + shape[1:]
      else:
        offset += int(ix) * strides[axis]
        shape = shape[1:]
    out = np.empty(shape, dtype)
    if out.size:
      if info.file not in self._fds:
        self._fds[info.file] = os.open(info.file, os.O_RDONLY)
      _pread_into(self._fds[info.file], out, info.begin + offset * dtype.itemsize)
    return out

  def close(self) -> None:
    for fd in self._fds.values():
      os.close(fd)
    self._fds.clear()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ---------------------------------------------------------------------------------------------- FP8
def dequantize_fp8(w: np.ndarray, scale_inv: np.ndarray, block_size: tuple[int, int] = DEFAULT_FP8_BLOCK,
                   dtype=np.float32) -> np.ndarray:
  """DeepSeek FP8 block dequantisation: W[i, j] = float(W_fp8[i, j]) * scale_inv[i // bo, j // bi].

  Args:
    w: float8 [O, I] weight.
    scale_inv: f32[ceil(O / bo), ceil(I / bi)] per-block scales (the last block row/column may be partial:
      the padding is trimmed).
    block_size: (bo, bi), 128 x 128 in the DeepSeek-V3/R1 release.
    dtype: output dtype (computed in fp32, then cast, as DeepSeek's fp8_cast_bf16.py does).
  """
  bo, bi = block_size
  o, i = w.shape
  want = (-(-o // bo), -(-i // bi))
  if tuple(scale_inv.shape) != want:
    raise CheckpointError(f"FP8 scale_inv shape {tuple(scale_inv.shape)} does not match weight {w.shape} in "
                          f"{bo}x{bi} blocks (expected {want})")
  out = w.astype(np.float32)
  scale = scale_inv.astype(np.float32)
  for r in range(want[0]):  # one block row at a time: no full-size scale array
    out[r * bo:(r + 1) * bo] *= np.repeat(scale[r], bi)[:i]
  return out if np.dtype(dtype) == np.float32 else out.astype(dtype)


# ------------------------------------------------------------------------------------ name mapping
@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """r1jax leaf <- one HF tensor.

  layout: "same" (identical shape), "flat" (HF stores the leaf flattened, e.g. q_proj.bias [N*H] for
  q_bias [N, H]) or "linear" (an nn.Linear weight [out, in]: the leaf is W.T reshaped to in_dims + out_dims,
  with the first n_in leaf axes being the input).
  """
  path: tuple[str, ...]
  hf_name: str
  layout: str
  n_in: int = 1

  def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
    if self.layout == "same":
      return tuple(shape)
    if self.layout == "flat":
      return (math.prod(shape),)
    return (math.prod(shape[self.n_in:]), math.prod(shape[:self.n_in]))

  def to_leaf(self, w: np.ndarray, shape, dtype) -> np.ndarray:
    if self.layout == "linear":
      return np.ascontiguousarray(w.T, dtype=dtype).reshape(shape)
    return np.asarray(w, dtype=dtype).reshape(shape)

  def from_leaf(self, leaf: np.ndarray) -> np.ndarray:
    if self.layout == "linear":
      in_size = math.prod(leaf.shape[:self.n_in])
      return leaf.reshape(in_size, -1).T
    return leaf.reshape(self.hf_shape(leaf.shape))


@dataclasses.dataclass(frozen=True)
class ExpertSpec:
  """r1jax stacked expert leaf [E, in, out] <- per-expert nn.Linear weights or a v5 fused tensor."""
  path: tuple[str, ...]
  prefix: str   # "model.layers.{i}.mlp.experts"
  proj: str     # "gate_proj" | "up_proj" | "down_proj"

  def expert_name(self, e: int) -> str:
    return f"{self.prefix}.{e}.{self.proj}.weight"

  @property
  def fused_name(self) -> str:
    return f"{self.prefix}.{'down_proj' if self.proj == 'down_proj' else 'gate_up_proj'}"

  def fused_shape(self, shape) -> tuple[int, ...]:
    e, d_in, d_out = shape
    return (e, 2 * d_out, d_in) if self.proj != "down_proj" else (e, d_out, d_in)


def _layer(key: str) -> int:
  m = re.fullmatch(r"layers_(\d+)", key)
  if not m:
    raise AssertionError(f"unexpected module {key!r} in the r1jax parameter tree")
  return int(m.group(1))


def spec_for(path: tuple[str, ...], ndim: int) -> TensorSpec | ExpertSpec:
  """The HF source of one r1jax leaf (`path` as in init_variables' tree, e.g. ("params", "layers_0", ...))."""
  col, rest = path[0], path[1:]
  if col == "router_bias":
    return TensorSpec(path, f"model.layers.{_layer(rest[0])}.mlp.gate.e_score_correction_bias", "same")
  if rest == ("embed_tokens",):
    return TensorSpec(path, "model.embed_tokens.weight", "same")
  if rest == ("lm_head",):
    return TensorSpec(path, "lm_head.weight", "linear")
  if rest == ("norm", "weight"):
    return TensorSpec(path, "model.norm.weight", "same")
  pre, sub = f"model.layers.{_layer(rest[0])}", rest[1:]
  if sub[0] in ("input_layernorm", "post_attention_layernorm"):
    return TensorSpec(path, f"{pre}.{sub[0]}.weight", "same")
  if sub[0] == "self_attn":
    name = sub[1]
    if name in ("q_bias", "k_bias", "v_bias"):
      return TensorSpec(path, f"{pre}.self_attn.{name[0]}_proj.bias", "flat")
    if name in ("q_norm", "k_norm", "q_a_layernorm", "kv_a_layernorm"):
      return TensorSpec(path, f"{pre}.self_attn.{name}.weight", "same")
    return TensorSpec(path, f"{pre}.self_attn.{name}.weight", "linear", n_in=2 if name == "o_proj" else 1)
  if sub[0] == "mlp":
    if sub[1] == "shared_experts":
      return TensorSpec(path, f"{pre}.mlp.shared_experts.{sub[2]}.weight", "linear")
    if sub[1] == "gate":
      return TensorSpec(path, f"{pre}.mlp.gate.weight", "linear")
    if ndim == 3:
      return ExpertSpec(path, f"{pre}.mlp.experts", sub[1])
    return TensorSpec(path, f"{pre}.mlp.{sub[1]}.weight", "linear")
  raise AssertionError(f"no Hugging Face name for r1jax parameter {'/'.join(path)}")


def _path_names(path) -> tuple[str, ...]:
  return tuple(str(getattr(k, "key", k)) for k in path)


def abstract_params(cfg: ModelConfig):
  """ShapeDtypeStructs of init_variables(cfg, ...) (nothing is computed)."""
  return jax.eval_shape(lambda k: init_variables(cfg, k), jax.random.key(0))


def leaf_specs(cfg: ModelConfig):
  """[(spec, ShapeDtypeStruct)] for every leaf of the parameter tree, in tree order, and the treedef."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_params(cfg))
  return [(spec_for(_path_names(p), len(x.shape)), x) for p, x in leaves], treedef


# ------------------------------------------------------------------------------------ validation
def _ignorable(name: str, cfg: ModelConfig, model_type: str) -> bool:
  """Tensors we may skip: the MTP layer(s), a redundant lm_head of a tied model, rotary caches."""
  m = re.match(r"model\.layers\.(\d+)\.", name)
  if m and model_type == "deepseek_v3" and int(m.group(1)) >= cfg.num_hidden_layers:
    return True
  if name == "lm_head.weight" and cfg.tie_word_embeddings:
    return True
  return name.endswith("rotary_emb.inv_freq")


class _Plan:
  """Checks a checkpoint against the config and records where each leaf comes from."""

  def __init__(self, ckpt: Checkpoint, cfg: ModelConfig, model_type: str, fp8_block: tuple[int, int]):
    self.ckpt, self.cfg, self.fp8_block = ckpt, cfg, fp8_block
    self.specs, self.treedef = leaf_specs(cfg)
    self.fused: dict[str, bool] = {}
    used: set[str] = set()
    for spec, sds in self.specs:
      if isinstance(spec, ExpertSpec):
        used |= self._check_experts(spec, tuple(sds.shape))
      else:
        self._check(spec.hf_name, spec.hf_shape(tuple(sds.shape)), f"r1jax {'/'.join(spec.path)}")
        used |= self._with_scale(spec.hf_name)
    extra = sorted(n for n in ckpt.tensors if n not in used and not _ignorable(n, cfg, model_type))
    if extra:
      more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
      raise CheckpointError(f"{ckpt.dir}: unexpected tensor {extra[0]!r}{more}: the {model_type} config does "
                            "not use it, so loading without it would change the model")
    self.skipped = sorted(n for n in ckpt.tensors if n not in used)

  def _with_scale(self, name: str) -> set[str]:
    scale = name + "_scale_inv"
    return {name, scale} if scale in self.ckpt else {name}

  def _check(self, name: str, shape: tuple[int, ...], what: str) -> None:
    info = self.ckpt.tensors.get(name)
    if info is None:
      raise CheckpointError(f"{self.ckpt.dir}: missing tensor {name!r} (needed for {what}, shape {shape})")
    if info.shape != shape:
      raise CheckpointError(f"{self.ckpt.dir}: tensor {name!r} has shape {info.shape}, expected {shape} "
                            "from config.json")
    if info.dtype not in _FLOAT_CODES:
      raise CheckpointError(f"{self.ckpt.dir}: tensor {name!r} has dtype {info.dtype}, expected a float type")
    if info.dtype in _FP8_CODES:
      scale = name + "_scale_inv"
      if len(shape) != 2:
        raise CheckpointError(f"{self.ckpt.dir}: tensor {name!r} is {info.dtype} with shape {shape}: FP8 is "
                              "supported for 2-D block-scaled weights only")
      if scale not in self.ckpt:
        raise CheckpointError(f"{self.ckpt.dir}: tensor {name!r} is {info.dtype} but {scale!r} is missing")
      bo, bi = self.fp8_block
      want = (-(-shape[0] // bo), -(-shape[1] // bi))
      if self.ckpt.tensors[scale].shape != want:
        raise CheckpointError(f"{self.ckpt.dir}: tensor {scale!r} has shape {self.ckpt.tensors[scale].shape}, "
                              f"expected {want} ({bo}x{bi} blocks of {shape})")

  def _check_experts(self, spec: ExpertSpec, shape: tuple[int, ...]) -> set[str]:
    e, d_in, d_out = shape
    what = f"r1jax {'/'.join(spec.path)}"
    if spec.fused_name in self.ckpt and spec.expert_name(0) not in self.ckpt:
      self.fused[spec.prefix] = True
      self._check(spec.fused_name, spec.fused_shape(shape), what)
      return {spec.fused_name}
    self.fused[spec.prefix] = False
    used = set()
    for k in range(e):
      self._check(spec.expert_name(k), (d_out, d_in), what)
      used |= self._with_scale(spec.expert_name(k))
    return used

  # ---- reading
  def read_2d(self, name: str) -> np.ndarray:
    """A tensor in a float dtype numpy can convert from (FP8 is dequantised to fp32)."""
    w = self.ckpt.read(name)
    if self.ckpt.tensors[name].dtype in _FP8_CODES:
      w = dequantize_fp8(w, self.ckpt.read(name + "_scale_inv"), self.fp8_block)
    return w

  def materialize(self, spec, sds) -> np.ndarray:
    shape, dtype = tuple(sds.shape), np.dtype(sds.dtype)
    if isinstance(spec, TensorSpec):
      return spec.to_leaf(self.read_2d(spec.hf_name), shape, dtype)
    out = np.empty(shape, dtype)  # filled expert by expert: one [in, out] temporary at a time
    d_out = shape[2]
    for k in range(shape[0]):
      if not self.fused[spec.prefix]:
        w = self.read_2d(spec.expert_name(k))
      elif spec.proj == "gate_proj":
        w = self.ckpt.read(spec.fused_name, (k, slice(0, d_out)))         # gate is the first half
      elif spec.proj == "up_proj":
        w = self.ckpt.read(spec.fused_name, (k, slice(d_out, 2 * d_out)))
      else:
        w = self.ckpt.read(spec.fused_name, (k,))
      out[k] = w.T
    return out


def _place(x: np.ndarray, sharding) -> jax.Array:
  if sharding is None:
    return jax.device_put(x)
  # Each device (each process, on a pod) copies only its own shard out of the host array.
  return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def read_hf_config(path: str | os.PathLike) -> dict:
  """The parsed config.json of an HF model directory."""
  f = pathlib.Path(path) / "config.json"
  if not f.exists():
    raise CheckpointError(f"{path}: no config.json (expected a Hugging Face model directory)")
  return json.loads(f.read_text())


def fp8_block_size(hf: Mapping[str, Any]) -> tuple[int, int]:
  """FP8 weight block size from config.json's quantization_config (128 x 128 by default)."""
  q = hf.get("quantization_config")
  if not q:
    return DEFAULT_FP8_BLOCK
  method = q.get("quant_method", "fp8")
  if method != "fp8":
    raise HFConfigError(f"config.json: quantization_config.quant_method={method!r} is not supported; "
                        "only DeepSeek's block-scaled 'fp8' is dequantised on load")
  fmt = q.get("fmt", "e4m3")
  if fmt not in ("e4m3", "e5m2"):
    raise HFConfigError(f"config.json: quantization_config.fmt={fmt!r} is not supported (e4m3, e5m2)")
  block = tuple(q.get("weight_block_size") or DEFAULT_FP8_BLOCK)
  if len(block) != 2:
    raise HFConfigError(f"config.json: quantization_config.weight_block_size={block!r}: expected 2 sizes")
  return int(block[0]), int(block[1])


def load(path: str | os.PathLike, *, dtype: str | None = None, mesh=None, rules="fsdp_tp",
         **config_overrides) -> tuple[ModelConfig, Any]:
  """Loads an HF checkpoint directory as (ModelConfig, variables).

  Args:
    path: directory with config.json and model.safetensors (or model.safetensors.index.json + shards).
    dtype: parameter and compute dtype; None = the checkpoint's (config.json torch_dtype; FP8 checkpoints
      say bfloat16). The MoE selection bias is always float32.
    mesh: optional device mesh; every array is created directly in its NamedSharding under `rules`.
    rules: logical-axis rules table name (r1jax.sharding.RULES) or table.
    **config_overrides: extra ModelConfig fields (e.g. remat="full", param_dtype="float32").

  Returns:
    (cfg, variables) with variables = {"params": ..., ["router_bias": ...]}, the tree of init_variables(cfg, ...).

  Raises:
    HFConfigError: unknown model_type or an unsupported config value (names the field).
    CheckpointError: missing, unexpected or mis-shaped tensor (names it and both shapes).
  """
  hf = read_hf_config(path)
  cfg = from_hf_config(hf, dtype=dtype, **config_overrides)
  block = fp8_block_size(hf)
  with Checkpoint(path) as ckpt:
    plan = _Plan(ckpt, cfg, hf["model_type"], block)   # all checks happen here, before any read
    if plan.skipped:
      log.info("r1jax.hf.load: skipped %d tensors not used by r1jax (e.g. %s)", len(plan.skipped),
               plan.skipped[0])
    shardings = [None] * len(plan.specs)
    if mesh is not None:
      shardings = jax.tree_util.tree_leaves(param_shardings(cfg, mesh, rules))
    leaves = []
    for (spec, sds), sharding in zip(plan.specs, shardings):
      leaves.append(_place(plan.materialize(spec, sds), sharding))
  return cfg, jax.tree_util.tree_unflatten(plan.treedef, leaves)


def iter_leaf_specs(cfg: ModelConfig) -> Iterable[tuple[TensorSpec | ExpertSpec, Any]]:
  """Public view of the leaf -> HF-name mapping (used by r1jax.hf.save)."""
  return leaf_specs(cfg)[0]

