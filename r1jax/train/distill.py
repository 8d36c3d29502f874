"""Distillation of a student from a teacher: sequence-level (SFT on the teacher's traces, as in
DeepSeek-R1's distilled models) plus optional token-level KL against the teacher's top-k log-probs.

    dc = DistillConfig(top_k=8, kd_weight=0.5)
    teacher_topk = make_teacher_topk(teacher_cfg, dc)            # jitted: (teacher_vars, batch) -> batch'
    update = make_distill_update(student_cfg, lm, dc, tx)        # like make_lm_update
    state, metrics = update(state, teacher_topk(teacher_vars, batch))

The teacher runs on the same packed batch as the student (same tokens, positions and segments), so its
top-k log-probs line up with the student's targets; only the ids and log-probs (K numbers a position)
reach the student's step. Teacher and student must share the tokenizer (the vocabulary is checked).
The loss is (1 - kd_weight) * CE(student, trace tokens) + kd_weight * KL(teacher_topk || student).
"""
from __future__ import annotations

import dataclasses

import jax
import optax

from r1jax.model.config import ModelConfig
from r1jax.model.runtime import Runtime
from r1jax.sharding.mesh import mesh_rules
from r1jax.train.lm import LMConfig, lm_objective, packed_forward
from r1jax.train.losses import add_balance_loss, distill_loss, lm_loss
from r1jax.train.step import make_update


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  top_k: int = 0                 # teacher log-probs kept per position; 0 = sequence-level only (pure SFT)
  kd_weight: float = 0.5         # weight of the token-level KL (the trace CE gets 1 - kd_weight)
  temperature: float = 1.0       # applied to teacher and student in the KL

  def __post_init__(self):
    if self.top_k < 0:
      raise ValueError(f"DistillConfig.top_k={self.top_k!r}: must be >= 0 (0 disables token-level KD)")
    if not 0.0 <= self.kd_weight <= 1.0:
      raise ValueError(f"DistillConfig.kd_weight={self.kd_weight!r}: must be in [0, 1]")
    if self.temperature <= 0:
      raise ValueError(f"DistillConfig.temperature={self.temperature!r}: must be > 0")

  @property
  def token_level(self) -> bool:
    return self.top_k > 0 and self.kd_weight > 0


def check_compatible(student: ModelConfig, teacher: ModelConfig) -> None:
  if student.vocab_size != teacher.vocab_size:
    raise ValueError(f"teacher vocab_size={teacher.vocab_size} != student vocab_size={student.vocab_size}: "
                     "token-level distillation needs a shared tokenizer")


def make_teacher_topk(teacher_cfg: ModelConfig, dc: DistillConfig, runtime: Runtime | None = None, *, mesh=None,
                      rules="fsdp_tp"):
  """Jitted (teacher_variables, packed batch) -> the batch plus teacher_logp / teacher_ids f32/i32[B, T, K].

  With a mesh, traced under its logical rules (the teacher's variables sharded on it, the batch on the batch
  axes)."""

  @jax.jit
  def fn(variables, batch):
    out = packed_forward(teacher_cfg, variables, batch, runtime)
    logp = jax.nn.log_softmax(out.logits.astype(jax.numpy.float32), axis=-1)
    top_logp, top_ids = jax.lax.top_k(logp, dc.top_k)
    return {**batch, "teacher_logp": top_logp, "teacher_ids": top_ids.astype(jax.numpy.int32)}

  def teacher_topk(variables, batch):
    with mesh_rules(mesh, rules):
      return fn(variables, batch)

  return teacher_topk


def distill_objective(cfg: ModelConfig, lm: LMConfig, dc: DistillConfig, runtime: Runtime | None = None):
  """loss_fn(variables, batch) -> (loss, (metrics, aux)): trace CE, plus the top-k KL when enabled."""
  ce_fn = lm_objective(cfg, lm, runtime)
  if not dc.token_level:
    return ce_fn

  def loss_fn(variables, batch):
    out = packed_forward(cfg, variables, batch, runtime)
    ce, ce_metrics = lm_loss(out.logits, batch["targets"], batch["loss_mask"])
    kl, kl_metrics = distill_loss(out.logits, batch["teacher_logp"], batch["teacher_ids"],
                                  batch["loss_mask"] > 0, temperature=dc.temperature)
    loss = (1.0 - dc.kd_weight) * ce + dc.kd_weight * kl
    metrics = {**ce_metrics, "ce": ce, "kd_kl": kl, "top1_agreement": kl_metrics["top1_agreement"],
               "teacher_topk_mass": kl_metrics["teacher_topk_mass"]}
    loss, metrics = add_balance_loss(loss, metrics, out.aux, lm.balance_loss_coef)
    return loss, (metrics, {**out.aux, "loss_weight": metrics["num_tokens"]})   # both terms are token means

  return loss_fn


def make_distill_update(cfg: ModelConfig, lm: LMConfig, dc: DistillConfig, tx: optax.GradientTransformation, *,
                        mesh=None, rules="fsdp_tp", donate: bool = True, runtime: Runtime | None = None):
  """The jitted student update `update(state, batch) -> (state, metrics)`; batch from make_teacher_topk."""
  return make_update(cfg, tx, distill_objective(cfg, lm, dc, runtime), router_bias_rate=lm.router_bias_rate, mesh=mesh,
                     rules=rules, donate=donate, accum_steps=lm.grad_accum_steps)
