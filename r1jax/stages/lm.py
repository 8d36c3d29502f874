"""The LM stage: pretraining or SFT on packed sequences, resumable, with progress and checkpoints.

    variables = run_lm_stage(model_cfg, stage_cfg, examples=..., tokenizer=tok, workdir="runs/x/pretrain")

Sections (as in big_vision's train.py): setup, restore, loop, checkpoint. Rerunning the same call after a
kill resumes from the last checkpoint at the exact next batch; a finished stage just loads its result.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.checkpoint import CheckpointManager
from r1jax.data.pipeline import ShardedBatches, packed_lm_batches
from r1jax.model.config import ModelConfig
from r1jax.model.runtime import Runtime
from r1jax.model.transformer import abstract_variables, init_variables, place_variables
from r1jax.sharding.distributed import default_input_shards, global_batch, input_shards
from r1jax.sharding.mesh import batch_sharding
from r1jax.checkpoint.export import weights_digest
from r1jax.stages import fingerprint as fp_lib
from r1jax.stages.state import from_state_dict, state_dict
from r1jax.stages.writers import MetricsWriter, Preemption, finish_saves
from r1jax.train.distill import DistillConfig, check_compatible, make_distill_update, make_teacher_topk
from r1jax.train.lm import LMConfig
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.lora import LoraConfig
from r1jax.train.state import abstract_train_state, create_train_state
from r1jax.train.step import check_finite


@dataclasses.dataclass(frozen=True)
class LMStageConfig:
  num_steps: int = 200
  batch_size: int = 16               # packed rows per step
  seq_len: int = 256                 # positions per packed row
  template: str = "compact"          # renders {"question"} SFT records without "prompt"
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 100
  keep: int = 2
  lm: LMConfig = LMConfig()
  optim: OptimConfig = OptimConfig()
  distill: DistillConfig = DistillConfig()   # token-level KD (needs a teacher); top_k=0: plain LM / SFT
  runtime: Runtime = Runtime()       # how the model runs (MoE dispatch, capacity factor): r1jax.model.runtime
  lora: LoraConfig = LoraConfig()    # rank > 0: train low-rank adapters on a frozen base (r1jax.train.lora)
  # S pipelines, each reading every S-th example and packing batch_size/S rows of each batch; a process reads
  # only the shards its devices hold. 0: one per batch slice of the mesh (1 without a mesh).
  input_shards: int = 0
  # Resuming checks the checkpoint's fingerprint (this config, the model config, the data, tokenizer and
  # initial weights); a difference is an error naming the keys. "all", or comma-separated keys or prefixes
  # ("optim.learning_rate,input.data") lets those differ.
  resume_override: str = ""

  def __post_init__(self):
    for name in ("num_steps", "batch_size", "seq_len", "log_every", "checkpoint_every", "keep"):
      if getattr(self, name) < 1:
        raise ValueError(f"LMStageConfig.{name}={getattr(self, name)!r}: must be >= 1")
    if self.input_shards < 0 or (self.input_shards and self.batch_size % self.input_shards):
      raise ValueError(f"LMStageConfig.input_shards={self.input_shards!r}: must be 0 (one per batch slice of "
                       f"the mesh) or a divisor of batch_size={self.batch_size}")
    if self.batch_size % self.lm.grad_accum_steps:
      raise ValueError(f"LMStageConfig.lm.grad_accum_steps={self.lm.grad_accum_steps} does not divide "
                       f"batch_size={self.batch_size}")


# Fields that change how a run reports or saves, never what it computes: not in the fingerprint.
NOT_FINGERPRINTED = ("log_every", "checkpoint_every", "keep", "resume_override")


def lm_fingerprint(model_cfg: ModelConfig, sc: LMStageConfig, *, examples: Any, tokenizer, init: str,
                   teacher: str | None = None) -> dict:
  """What the stage's result depends on (r1jax.stages.fingerprint): the model and stage configs, the data and
  tokenizer by content, and `init` / `teacher`, the identities of the starting and teacher weights
  ("random": a random init from sc.seed; the teacher counts only for token-level distillation)."""
  return fp_lib.fingerprint({"model": model_cfg, "": sc}, {
      "data": fp_lib.records_digest(examples), "tokenizer": fp_lib.tokenizer_digest(tokenizer), "init": init,
      "teacher": teacher if sc.distill.token_level else None}, exclude=NOT_FINGERPRINTED)


def input_batches(sc: LMStageConfig, examples: Any, tokenizer, mesh=None):
  """The stage's batches: (iterator, next_batch) where next_batch() is the next global batch as device
  arrays. With S > 1 input shards (`LMStageConfig.input_shards`) this process reads only the shards its
  devices hold (r1jax.data.pipeline.ShardedBatches)."""
  count = sc.input_shards or default_input_shards(mesh)
  if sc.batch_size % count:
    raise ValueError(f"LMStageConfig.batch_size={sc.batch_size} is not a multiple of the {count} input shards "
                     "(one per batch slice of the mesh): set input_shards or the batch size")
  read = lambda s: packed_lm_batches(examples, tokenizer, batch_size=sc.batch_size // count, seq_len=sc.seq_len,
                                     seed=sc.seed, template=sc.template, shard_index=s, shard_count=count)
  if count == 1:
    data = read(0)
    return data, lambda: device_batch(next(data), mesh)
  data = ShardedBatches(read, input_shards(mesh, sc.batch_size, count), count)
  return data, lambda: global_batch(next(data), count, mesh)


def device_batch(batch: dict, mesh=None) -> dict:
  """Numeric numpy arrays of a host batch -> jax arrays (sharded on the batch axis under a mesh)."""
  out = {}
  for k, v in batch.items():
    if isinstance(v, np.ndarray) and v.dtype != object:
      out[k] = jax.device_put(v, batch_sharding(mesh, v.ndim)) if mesh is not None else jnp.asarray(v)
  return out


def run_lm_stage(model_cfg: ModelConfig, sc: LMStageConfig, *, examples: Any, tokenizer, workdir: str,
                 initial_variables: dict | None = None, teacher: tuple[ModelConfig, dict] | None = None, mesh=None,
                 verbose: bool = True, init_id: str | None = None, teacher_id: str | None = None) -> dict:
  """Trains next-token prediction on `examples` and returns the final model variables.

  Args:
    model_cfg: the architecture.
    sc: stage config.
    examples: texts / {"text"} (every target trained) or {"prompt","completion"} (completion-only loss).
    tokenizer: any r1jax.data.Tokenizer.
    workdir: checkpoints go to workdir/checkpoints, metrics to workdir/metrics.jsonl.
    initial_variables: starting variables (default: random init from sc.seed).
    teacher: (teacher config, teacher variables) for token-level distillation (sc.distill.top_k > 0).
    mesh: optional device mesh: variables (initial, teacher) and optimizer state sharded by the rules table,
      each batch split along the batch axes.
    init_id, teacher_id: what names the initial and teacher weights in the fingerprint (e.g. the export's
      r1jax.stages.models.ModelSource.identity()); default: the SHA-256 of the arrays.

  Raises:
    FingerprintMismatch: the workdir's checkpoint was made under another config, data, tokenizer or initial
      weights (see LMStageConfig.resume_override).
  """
  # --- setup
  if sc.distill.token_level:
    if teacher is None:
      raise ValueError(f"LMStageConfig.distill.top_k={sc.distill.top_k}: token-level distillation needs a teacher")
    check_compatible(model_cfg, teacher[0])
  tx = make_optimizer(sc.optim)
  runtime = sc.runtime.validate_for(model_cfg)
  update = make_distill_update(model_cfg, sc.lm, sc.distill, tx, mesh=mesh, runtime=runtime)
  teacher_topk = make_teacher_topk(teacher[0], sc.distill, sc.runtime, mesh=mesh) if sc.distill.token_level else None
  if teacher_topk is not None:
    teacher = (teacher[0], place_variables(teacher[0], teacher[1], mesh))
  data, next_batch = input_batches(sc, examples, tokenizer, mesh)
  ckpt = CheckpointManager(os.path.join(workdir, "checkpoints"), max_to_keep=sc.keep)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), echo_every=sc.log_every if verbose else 0,
                         total_steps=sc.num_steps, name="lm", tensorboard=True)

  if init_id is None:
    init_id = weights_digest(initial_variables) if initial_variables is not None else "random"
  if teacher_id is None and teacher_topk is not None:
    teacher_id = weights_digest(teacher[1])
  fingerprint = lm_fingerprint(model_cfg, sc, examples=examples, tokenizer=tokenizer, init=init_id,
                               teacher=teacher_id)

  def init_state():
    variables = place_variables(model_cfg, initial_variables, mesh) if initial_variables is not None else \
        init_variables(model_cfg, jax.random.key(sc.seed), mesh=mesh)
    return create_train_state(variables, tx, lora_config=sc.lora, key=jax.random.key(sc.seed + 1))

  # --- restore: into an abstract target (a fresh state is built only when there is nothing to restore)
  checked = fp_lib.check_checkpoint(ckpt, fingerprint, sc.num_steps, sc.resume_override)   # before any array
  like = abstract_train_state(abstract_variables(model_cfg, initial_variables, mesh), tx, lora_config=sc.lora)
  found = ckpt.restore_latest(target=state_dict(like), data_iter_for=lambda s: data if s < sc.num_steps else None)
  start = None
  if found is not None:
    start, restored, metadata = found
    if start != checked:
      fp_lib.check_checkpoint(ckpt, fingerprint, sc.num_steps, sc.resume_override, start, metadata)
    state = from_state_dict(restored, like=like)
  else:
    state = init_state()
  writer.truncate_after(start)        # None: a run killed before its first checkpoint logged nothing kept
  step = int(state.step)

  # --- loop
  preempt = Preemption()
  with preempt.active(), finish_saves(ckpt):
    t_last = time.time()
    while step < sc.num_steps:
      batch = next_batch()
      if teacher_topk is not None:
        batch = teacher_topk(teacher[1], batch)
      state, metrics = update(state, batch)
      step += 1
      check_finite(metrics, step)      # before any save: a NaN step never reaches a checkpoint
      if step % sc.log_every == 0 or step == sc.num_steps:
        now = time.time()
        metrics = {**jax.device_get(metrics), "step_time_s": (now - t_last) / sc.log_every}
        t_last = now
        writer.write(step, metrics)
      # --- checkpoint
      if step % sc.checkpoint_every == 0 or step == sc.num_steps or preempt.requested:
        ckpt.save(step, state_dict(state), data_iter=data, metadata={"stage": "lm", "fingerprint": fingerprint},
                  force=True)
      if preempt.requested:
        break
  preempt.exit_if_requested("lm", step)
  return state.variables()
