"""Runtime: how the model is computed, apart from what it is (ModelConfig).

Every choice here changes speed or memory, never the function (up to float rounding), except a capacity
factor > 0, which may drop tokens. The caller that knows the hardware and the shapes picks it: a stage
or a benchmark passes one to `apply_model` / `init_variables`, and the sampler picks its own for the prefill
and the decode steps (r1jax.sampling.sampler).

    rt = Runtime(moe_impl="dense")                     # the all-experts oracle
    logits = forward(cfg, variables, tokens, runtime=rt)

MoE dispatch (`moe_impl`):
  "sorted"  tokens sorted by expert; dropless (capacity_factor == 0, blocks of `moe_block_size` rows,
            0 = chosen from the shapes) or capacity-limited (capacity_factor > 0). The default. Dropless
            under a mesh whose `expert` axis is larger than 1, tokens are sorted across devices: an
            all-to-all sends each to the device holding its expert and back (r1jax.model.moe
            .expert_parallel_mlp), with send buffers of `exchange_capacity_factor` x the balanced load.
  "dense"   every expert on every token, weighted by the routing: the test oracle.
  "ragged"  jax.lax.ragged_dot grouped matmuls.
  "kernel"  `kernels.routed_experts`: a custom call that computes only the chosen experts (forward only).
`attention_impl` / `mlp_impl`: "xla", or "kernel" for `kernels.mla_decode_attention` (MLA's absorbed
one-token decode step) and dense SwiGLU MLPs run as one expert of `kernels.routed_experts`.

The model package does not import any kernels: `kernels` is an object (a module such as
r1jax.kernels.cpu) that provides `routed_experts(x_td, idx_tk, w_tk, wg_edf, wu_edf, wd_efd)` and
`mla_decode_attention(q_lat_bnr, q_pe_bnp, c_bsr, kpe_bsp, mask_bs, scale)` (and, for the sampler's weight
layout, `panels` / `unpanels`); a "kernel" choice needs one.
"""
from __future__ import annotations

import dataclasses
from typing import Any

MOE_IMPLS = ("sorted", "dense", "ragged", "kernel")
KERNEL_IMPLS = ("xla", "kernel")   # attention_impl, mlp_impl


def _fail(field: str, value: Any, why: str):
  raise ValueError(f"Runtime.{field}={value!r}: {why}")


@dataclasses.dataclass(frozen=True)
class Runtime:
  """Execution choices for the model (hashable: a static argument of jitted functions)."""
  moe_impl: str = "sorted"
  capacity_factor: float = 0.0      # sorted only: 0 = dropless; > 0 = per-expert capacity, may drop tokens
  moe_block_size: int = 0           # sorted dropless: rows per expert block; 0 = chosen from the shapes
  attention_impl: str = "xla"
  mlp_impl: str = "xla"
  kernels: Any = None               # provides the "kernel" choices (e.g. r1jax.kernels.cpu)
  exchange_capacity_factor: float = 2.0   # expert-parallel all-to-all: send-buffer rows per (device, expert
                                          # shard) = this x the balanced load; more is dropped and counted

  def __post_init__(self):
    if self.moe_impl not in MOE_IMPLS:
      _fail("moe_impl", self.moe_impl, f"must be one of {MOE_IMPLS}")
    for field in ("attention_impl", "mlp_impl"):
      if getattr(self, field) not in KERNEL_IMPLS:
        _fail(field, getattr(self, field), f"must be one of {KERNEL_IMPLS}")
    if not isinstance(self.capacity_factor, (int, float)) or not self.capacity_factor >= 0:
      _fail("capacity_factor", self.capacity_factor, "must be >= 0 (0 = dropless)")
    if self.capacity_factor > 0 and self.moe_impl != "sorted":
      _fail("capacity_factor", self.capacity_factor, f"only moe_impl='sorted' has a capacity mode, "
            f"moe_impl={self.moe_impl!r} is always dropless")
    if not isinstance(self.exchange_capacity_factor, (int, float)) or not self.exchange_capacity_factor > 0:
      _fail("exchange_capacity_factor", self.exchange_capacity_factor, "must be > 0")
    if not isinstance(self.moe_block_size, int) or self.moe_block_size < 0:
      _fail("moe_block_size", self.moe_block_size, "must be >= 0 (0 = automatic)")
    if self.uses_kernels and self.kernels is None:
      _fail(self._kernel_field, "kernel", "needs `kernels`, an object with routed_experts and mla_decode_attention "
            "(e.g. r1jax.kernels.cpu)")

  @property
  def uses_kernels(self) -> bool:
    return self._kernel_field is not None

  @property
  def _kernel_field(self) -> str | None:
    """The first field set to "kernel", or None."""
    return next((f for f in ("moe_impl", "attention_impl", "mlp_impl") if getattr(self, f) == "kernel"), None)

  def validate_for(self, cfg) -> "Runtime":
    """Fails (naming the field) when this runtime cannot run `cfg`; returns self."""
    if self.uses_kernels and (cfg.dtype, cfg.param_dtype) != ("float32", "float32"):
      _fail(self._kernel_field, "kernel", f"the kernels compute in float32 only (ModelConfig.dtype={cfg.dtype!r}, "
            f"param_dtype={cfg.param_dtype!r})")
    return self

  def replace(self, **changes) -> "Runtime":
    return dataclasses.replace(self, **changes)


DEFAULT = Runtime()


def runtime_fields() -> dict:
  """The Runtime fields a training config sets (a fresh dict, as the experiment configs' `runtime`
  sections): the MoE dispatch of training and of the rollouts' prefill. The sampler picks its decode-step
  dispatch and kernels itself; exchange_capacity_factor acts under a mesh with an expert axis."""
  return {"moe_impl": DEFAULT.moe_impl, "capacity_factor": DEFAULT.capacity_factor,
          "moe_block_size": DEFAULT.moe_block_size, "exchange_capacity_factor": DEFAULT.exchange_capacity_factor}
