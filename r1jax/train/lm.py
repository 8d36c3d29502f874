"""Next-token LM / SFT objective and step: packed sequences, completion-only masks, MoE balance terms.

A packed batch (from r1jax.data.packed_lm_batches) is a dict of int32[B, T] arrays:
  tokens, targets (already shifted; no target crosses a segment boundary), loss_mask (aligned with
  targets: 0 on padding, and on prompts for SFT), segment_ids (0 = padding), positions (restart per segment).
Attention never crosses segments: the model masks keys of other segment ids.
"""
from __future__ import annotations

import dataclasses

import optax

from r1jax.model.config import ModelConfig
from r1jax.model.runtime import Runtime
from r1jax.model.transformer import apply_model
from r1jax.train.losses import add_balance_loss, lm_loss
from r1jax.train.step import make_update


@dataclasses.dataclass(frozen=True)
class LMConfig:
  router_bias_rate: float = 1e-3       # aux-loss-free balancing speed gamma (DeepSeek-V3 pretraining: 1e-3)
  balance_loss_coef: float = 1e-4      # sequence-wise balance loss alpha (DeepSeek-V3: 1e-4)
  grad_accum_steps: int = 1            # microbatches per optimizer step (the batch's token mean, exactly)

  def __post_init__(self):
    for name in ("router_bias_rate", "balance_loss_coef"):
      if getattr(self, name) < 0:
        raise ValueError(f"LMConfig.{name}={getattr(self, name)!r}: must be >= 0")
    if self.grad_accum_steps < 1:
      raise ValueError(f"LMConfig.grad_accum_steps={self.grad_accum_steps!r}: must be >= 1")


def packed_forward(cfg: ModelConfig, variables, batch, runtime: Runtime | None = None):
  """The model on a packed batch: attention stays within segments, positions restart per segment."""
  segment_ids = batch.get("segment_ids")
  mask = (segment_ids > 0) if segment_ids is not None else None
  return apply_model(cfg, variables, batch["tokens"], attention_mask=mask, positions=batch.get("positions"),
                     segment_ids=segment_ids, runtime=runtime)


def lm_objective(cfg: ModelConfig, lm: LMConfig, runtime: Runtime | None = None):
  """loss_fn(variables, batch) -> (loss, (metrics, aux)) for make_update."""

  def loss_fn(variables, batch):
    out = packed_forward(cfg, variables, batch, runtime)
    loss, metrics = lm_loss(out.logits, batch["targets"], batch["loss_mask"])
    loss, metrics = add_balance_loss(loss, metrics, out.aux, lm.balance_loss_coef)
    return loss, (metrics, {**out.aux, "loss_weight": metrics["num_tokens"]})   # a token mean

  return loss_fn


def make_lm_update(cfg: ModelConfig, lm: LMConfig, tx: optax.GradientTransformation, *, mesh=None,
                   rules="fsdp_tp", donate: bool = True, runtime: Runtime | None = None):
  """The jitted LM/SFT update `update(state, batch) -> (state, metrics)`; runtime: r1jax.model.Runtime."""
  return make_update(cfg, tx, lm_objective(cfg, lm, runtime), router_bias_rate=lm.router_bias_rate, mesh=mesh,
                     rules=rules, donate=donate, accum_steps=lm.grad_accum_steps)
