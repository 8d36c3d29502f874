"""Optimizers: AdamW with global-norm clipping and a warmup + cosine schedule."""
from __future__ import annotations

import dataclasses

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimConfig:
  learning_rate: float = 1e-4
  warmup_steps: int = 0
  total_steps: int = 1000          # cosine decays to end_lr_ratio * learning_rate at this step
  end_lr_ratio: float = 0.1
  schedule: str = "cosine"         # "cosine" | "constant"
  weight_decay: float = 0.0
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0           # 0 = no clipping

  def __post_init__(self):
    checks = [("learning_rate", self.learning_rate >= 0), ("warmup_steps", self.warmup_steps >= 0),
              ("total_steps", self.total_steps >= 1), ("end_lr_ratio", 0 <= self.end_lr_ratio <= 1),
              ("schedule", self.schedule in ("cosine", "constant")), ("weight_decay", self.weight_decay >= 0),
              ("b1", 0 <= self.b1 < 1), ("b2", 0 <= self.b2 < 1), ("eps", self.eps > 0),
              ("clip_norm", self.clip_norm >= 0)]
    for name, ok in checks:
      if not ok:
        raise ValueError(f"OptimConfig.{name}={getattr(self, name)!r} is invalid")


def learning_rate_schedule(cfg: OptimConfig) -> optax.Schedule:
  if cfg.schedule == "constant":
    return optax.join_schedules([optax.linear_schedule(0.0, cfg.learning_rate, max(cfg.warmup_steps, 1)),
                                 optax.constant_schedule(cfg.learning_rate)], [cfg.warmup_steps]) \
        if cfg.warmup_steps else optax.constant_schedule(cfg.learning_rate)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if cfg.warmup_steps else cfg.learning_rate, peak_value=cfg.learning_rate,
      warmup_steps=cfg.warmup_steps, decay_steps=max(cfg.total_steps, cfg.warmup_steps + 1),
      end_value=cfg.learning_rate * cfg.end_lr_ratio)


def make_optimizer(cfg: OptimConfig) -> optax.GradientTransformation:
  """clip_by_global_norm -> AdamW(schedule). Weight decay skips 1-D parameters (norm scales)."""
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  parts = [optax.clip_by_global_norm(cfg.clip_norm)] if cfg.clip_norm else []
  parts.append(optax.adamw(learning_rate_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                           weight_decay=cfg.weight_decay, mask=decay_mask))
  return optax.chain(*parts)
