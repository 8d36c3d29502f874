"""LoRA: low-rank adapters on the attention and MLP projections, trained while the base stays frozen.

    lc = LoraConfig(rank=16, alpha=32.0)                  # targets: attention and mlp projections
    adapters = init_adapters(params, lc, key)            # {"layers_0": {"self_attn": {"q_proj": {"a", "b"}}}, ...}
    merged = merge(params, adapters, lc.scale)           # W + (alpha / rank) * A @ B, for every targeted kernel

A kernel W maps its input dims to its output dims (r1jax keeps heads as their own axes: q_proj is
[D, H, hd], o_proj [H, hd, D], routed experts [E, D, F] with one adapter per expert). Its adapter is
A: in-dims x [r] and B: [r] x out-dims (after the expert axis when there is one), so A @ B has W's shape.
B starts at zero: the adapted model is exactly the base model until the first update.

The adapters are the trainable parameters of a TrainState whose `frozen` field holds the base
(r1jax.train.state.create_train_state(..., lora=lc)): the optimizer state covers only the adapters, the
gradient is taken only with respect to them, the GRPO reference policy is the frozen base itself (no second
copy of the weights), and the exported model is the merged one.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj", "q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "kv_b_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGETS = {"attention": ATTENTION, "mlp": MLP}
_IN_DIMS = {"o_proj": 2}              # [H, hd, D]: two input dims; every other kernel has one


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  rank: int = 0                        # 0: no adapters (every parameter trains)
  alpha: float = 16.0                  # the update is scaled by alpha / rank
  targets: tuple = ("attention", "mlp")  # which projections get adapters: "attention", "mlp"

  def __post_init__(self):
    if self.rank < 0:
      raise ValueError(f"LoraConfig.rank={self.rank!r}: must be >= 0 (0 = no adapters)")
    if not self.alpha > 0:
      raise ValueError(f"LoraConfig.alpha={self.alpha!r}: must be > 0")
    targets = (self.targets,) if isinstance(self.targets, str) else tuple(self.targets)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
      raise ValueError(f"LoraConfig.targets={self.targets!r}: choose from {sorted(TARGETS)}")
    object.__setattr__(self, "targets", targets)

  @property
  def enabled(self) -> bool:
    return self.rank > 0

  @property
  def scale(self) -> float:
    return self.alpha / self.rank if self.rank else 0.0


def _layout(path: tuple[str, ...], ndim: int) -> tuple[int, int] | None:
  """(batch dims, input dims) of the kernel at `path` when it is a projection, else None. Routed experts
  ([E, in, out] under mlp/) have one batch dim."""
  name = path[-1]
  if name in MLP:
    return (1, 1) if ndim == 3 else (0, 1)
  if name in ATTENTION:
    return 0, _IN_DIMS.get(name, 1)
  return None


def targeted(params, lc: LoraConfig) -> dict[tuple[str, ...], tuple[int, int]]:
  """{path: (batch dims, input dims)} of the kernels of `params` that get adapters under `lc`."""
  names = {n for t in lc.targets for n in TARGETS[t]}
  out = {}
  for path, x in traverse_util.flatten_dict(params).items():
    path = tuple(str(p) for p in path)
    layout = _layout(path, x.ndim)
    if layout is not None and path[-1] in names:
      out[path] = layout
  return out


def init_adapters(params, lc: LoraConfig, key: jax.Array) -> dict:
  """Adapters {path...: {"a", "b"}} for every targeted kernel of `params`: A ~ N(0, 1/fan_in), B = 0 (float32)."""
  if not lc.enabled:
    raise ValueError("init_adapters: LoraConfig.rank is 0")
  flat = traverse_util.flatten_dict(params)
  spots = targeted(params, lc)
  if not spots:
    raise ValueError(f"LoRA targets {lc.targets} match no kernel of the model")
  out = {}
  for i, (path, (nb, ni)) in enumerate(sorted(spots.items())):
    shape = flat[path].shape
    batch, ins, outs = shape[:nb], shape[nb:nb + ni], shape[nb + ni:]
    fan_in = math.prod(ins)
    a = jax.random.normal(jax.random.fold_in(key, i), (*batch, *ins, lc.rank), jnp.float32) / math.sqrt(fan_in)
    out[path + ("a",)] = a
    out[path + ("b",)] = jnp.zeros((*batch, lc.rank, *outs), jnp.float32)
  return traverse_util.unflatten_dict(out)


def delta(a: jax.Array, b: jax.Array, batch_dims: int) -> jax.Array:
  """A @ B over the rank axis, keeping the leading batch (expert) dims: the shape of the adapted kernel."""
  batch = a.shape[:batch_dims]
  ins, outs = a.shape[batch_dims:-1], b.shape[batch_dims + 1:]
  a2 = a.reshape(math.prod(batch) if batch else 1, math.prod(ins), a.shape[-1])
  b2 = b.reshape(a2.shape[0], b.shape[batch_dims], math.prod(outs))
  return jnp.einsum("nir,nro->nio", a2, b2).reshape(*batch, *ins, *outs)


def merge(params, adapters, scale: float) -> Any:
  """params with every adapted kernel W replaced by W + scale * A @ B (in W's dtype)."""
  flat = dict(traverse_util.flatten_dict(params))
  for path, ab in traverse_util.flatten_dict(adapters, is_leaf=lambda _, x: isinstance(x, dict) and "a" in x).items():
    w = flat[path]
    flat[path] = (w.astype(jnp.float32) + scale * delta(ab["a"], ab["b"], _batch_of(ab, w))).astype(w.dtype)
  return traverse_util.unflatten_dict(flat)


def _batch_of(ab: dict, w: jax.Array) -> int:
  """Batch (expert) dims of an adapter pair: a is batch + in + [r], b is batch + [r] + out, and
  batch + in + out is w's shape, so batch = ndim(a) + ndim(b) - 2 - ndim(w)."""
  return ab["a"].ndim + ab["b"].ndim - 2 - w.ndim
