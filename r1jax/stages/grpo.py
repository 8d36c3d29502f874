"""The RL stage: GRPO with rule rewards (R1-Zero), resumable, with dynamic sampling and evaluation.

    variables = run_rl_stage(model_cfg, stage_cfg, initial_variables=base, tokenizer=tok,
                             train_examples=train, eval_examples=test, workdir="runs/r1_zero/rl")

One step: B prompts from Grain -> sampler (prefill once, G samples each) -> decode -> rewards (Python)
-> [dynamic sampling: drop zero-variance groups, refill, bounded] -> reference log-probs (beta > 0)
-> [grpo.rollout_is on: the trainer's log-probs of the sampling policy, for the IS correction]
-> mu epochs x minibatches of the jitted update, which computes the group advantages from the rewards
on the devices that hold them -> metrics -> eval / checkpoint.
The reference model is the initial policy, optionally reset to the current policy every N steps (R1).
Every random choice derives from (seed, step), so a resumed run repeats the same trajectory.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.checkpoint import CheckpointManager
from r1jax.data.pipeline import ShardedBatches, concat_batches, prompt_batches
from r1jax.data.templates import get_template, response_prefix
from r1jax.eval.evaluate import EvalConfig, evaluate
from r1jax.model.config import ModelConfig
from r1jax.model.runtime import Runtime
from r1jax.model.transformer import abstract_variables, place_variables
from r1jax.rl.advantages import ADVANTAGE_ESTIMATORS
from r1jax.rl.step import GRPOConfig, grpo_update_rollout, make_grpo_update, make_logprob_fn
from r1jax.sampling.rollout import Rollout, check_reward_names, RewardScorer, RolloutSettings, concat, rollout, select_groups
from r1jax.checkpoint.export import weights_digest
from r1jax.stages import fingerprint as fp_lib
from r1jax.stages.state import from_state_dict, state_dict
from r1jax.stages.writers import MetricsWriter, Preemption, finish_saves
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.sharding.distributed import allgather_objects, default_input_shards, input_shards
from r1jax.sharding.mesh import batch_sharding
from r1jax.train.lora import LoraConfig
from r1jax.train.state import abstract_train_state, create_train_state
from r1jax.train.step import check_finite


@dataclasses.dataclass(frozen=True)
class RLStageConfig:
  num_steps: int = 40
  batch_size: int = 8                  # B prompts per step
  group_size: int = 8                  # G completions per prompt
  max_prompt_len: int = 32
  max_new_tokens: int = 48
  top_k: int = 0
  top_p: float = 1.0
  template: str = "compact"
  reward_weights: tuple = (("accuracy", 1.0), ("format", 0.2))
  reward_options: tuple = ()           # ((reward name, ((option, value), ...)), ...)
  advantage_estimator: str = "grpo"    # r1jax.rl.advantages.ADVANTAGE_ESTIMATORS: grpo | batch_std | dr_grpo | rloo
  dynamic_sampling: bool = True        # DAPO: drop zero-variance groups and refill the batch
  max_refills: int = 2                 # extra rollouts per step for dynamic sampling (bounded)
  ref_reset_every: int = 0             # reset the reference to the current policy every N steps (0: never)
  eval_every: int = 0                  # 0: evaluate only at the end
  log_every: int = 1
  checkpoint_every: int = 10
  keep: int = 2
  seed: int = 0
  grpo: GRPOConfig = GRPOConfig()
  optim: OptimConfig = OptimConfig(learning_rate=1e-4, warmup_steps=0, total_steps=40, schedule="constant")
  eval: EvalConfig = EvalConfig()
  runtime: Runtime = Runtime()         # how the model runs in the update and the rollouts: r1jax.model.runtime
  # rank > 0: train low-rank adapters on a frozen base (r1jax.train.lora); the reference is that base
  lora: LoraConfig = LoraConfig()
  # S prompt pipelines, each reading every S-th example and giving batch_size/S prompts of each batch; a process
  # reads only the shards its devices hold. 0: one per batch slice of the mesh (1 without a mesh).
  input_shards: int = 0
  # Resuming checks the checkpoint's fingerprint (this config, the model config, the training prompts,
  # tokenizer and initial weights); a difference is an error naming the keys. "all", or comma-separated keys
  # or prefixes ("grpo.beta,input.data") lets those differ.
  resume_override: str = ""

  def __post_init__(self):
    for name in ("num_steps", "batch_size", "max_prompt_len", "max_new_tokens", "log_every",
                 "checkpoint_every", "keep"):
      if getattr(self, name) < 1:
        raise ValueError(f"RLStageConfig.{name}={getattr(self, name)!r}: must be >= 1")
    if self.group_size < 2:
      raise ValueError(f"RLStageConfig.group_size={self.group_size!r}: GRPO needs G >= 2 samples per prompt")
    if (self.batch_size * self.group_size) % self.grpo.num_minibatches:
      raise ValueError(f"RLStageConfig.batch_size * group_size = {self.batch_size * self.group_size} is not "
                       f"divisible by grpo.num_minibatches={self.grpo.num_minibatches}")
    minibatch = self.batch_size * self.group_size // self.grpo.num_minibatches
    if minibatch % self.grpo.grad_accum_steps:
      raise ValueError(f"RLStageConfig.grpo.grad_accum_steps={self.grpo.grad_accum_steps} does not divide the "
                       f"minibatch of {minibatch} sequences (batch_size * group_size / num_minibatches)")
    if self.max_refills < 0 or self.ref_reset_every < 0 or self.eval_every < 0:
      raise ValueError("RLStageConfig.max_refills, ref_reset_every and eval_every must be >= 0")
    if self.advantage_estimator not in ADVANTAGE_ESTIMATORS:
      raise ValueError(f"RLStageConfig.advantage_estimator={self.advantage_estimator!r}: must be one of "
                       f"{sorted(ADVANTAGE_ESTIMATORS)}")
    if self.input_shards < 0 or (self.input_shards and self.batch_size % self.input_shards):
      raise ValueError(f"RLStageConfig.input_shards={self.input_shards!r}: must be 0 (one per batch slice of "
                       f"the mesh) or a divisor of batch_size={self.batch_size}")
    check_reward_names("RLStageConfig", self.reward_weights, self.reward_options, self.max_new_tokens)
    if self.lora.enabled and self.ref_reset_every:
      raise ValueError("RLStageConfig.ref_reset_every must be 0 with LoRA (lora.rank > 0): the reference is the "
                       "frozen base")


# Fields that change how a run reports, evaluates or saves, never what it trains: not in the fingerprint.
NOT_FINGERPRINTED = ("log_every", "checkpoint_every", "keep", "eval_every", "eval", "resume_override")


def rl_fingerprint(model_cfg: ModelConfig, sc: RLStageConfig, *, train_examples: Any, tokenizer, init: str) -> dict:
  """What the stage's result depends on (r1jax.stages.fingerprint): the model and stage configs, the training
  prompts and tokenizer by content and `init`, the identity of the initial weights."""
  return fp_lib.fingerprint({"model": model_cfg, "": sc}, {
      "data": fp_lib.records_digest(train_examples), "tokenizer": fp_lib.tokenizer_digest(tokenizer),
      "init": init}, exclude=NOT_FINGERPRINTED)


def prompt_input(sc: RLStageConfig, examples: Any, tokenizer, template, mesh=None):
  """The stage's prompts: (iterator, next_batch) where next_batch() is the next batch of B prompts (host
  values, the same on every process). With S > 1 input shards (`RLStageConfig.input_shards`) a process reads
  and tokenizes only the shards its devices hold, and the processes then exchange their prompts (B short
  texts, their tokens and example dicts), since every process decodes and scores the whole rollout."""
  count = sc.input_shards or default_input_shards(mesh)
  if sc.batch_size % count:
    raise ValueError(f"RLStageConfig.batch_size={sc.batch_size} is not a multiple of the {count} input shards "
                     "(one per batch slice of the mesh): set input_shards or the batch size")
  read = lambda s: prompt_batches(examples, tokenizer, template, batch_size=sc.batch_size // count,
                                  max_prompt_len=sc.max_prompt_len, seed=sc.seed, shard_index=s, shard_count=count)
  if count == 1:
    data = read(0)
    return data, lambda: next(data)
  data = ShardedBatches(read, input_shards(mesh, sc.batch_size, count), count)

  def next_batch():
    blocks = {}
    for part in allgather_objects(next(data)):
      blocks.update(part)
    return concat_batches([blocks[s] for s in range(count)])
  return data, next_batch


# ------------------------------------------------------------------------------------------ the update batch
def _zero_variance(rewards: np.ndarray, g: int) -> np.ndarray:
  """bool[n]: groups whose G rewards are all equal (r1jax.rl.advantages.zero_variance_groups, on the host,
  where the rewards are: the refill decision needs no device round trip)."""
  r = rewards.reshape(-1, g)
  return (r.max(axis=-1) - r.min(axis=-1)) <= 0.0


def _train_batch(r: Rollout, active: np.ndarray) -> dict:
  """The update's batch, on device: prompt + completion tokens, masks, sampler log-probs, the rewards
  (the update turns them into group advantages) and which rows are real (filler rows are 0)."""
  return {
      "tokens": jnp.concatenate([r.prompt_tokens, r.tokens], 1),
      "attention_mask": jnp.concatenate([r.prompt_mask, r.mask], 1),
      "completion_mask": (r.mask * active[:, None]).astype(jnp.int32),
      "old_logp": r.logprobs,
      "rewards": np.asarray(r.rewards, np.float32),         # host values, the same on every process
      "active": active,
  }


# ------------------------------------------------------------------------------------------ the stage
def _copy(tree):
  return jax.tree.map(jnp.copy, tree)


def run_rl_stage(model_cfg: ModelConfig, sc: RLStageConfig, *, initial_variables: dict, tokenizer,
                 train_examples: Any, eval_examples: Sequence[Mapping] | None, workdir: str,
                 verbose: bool = True, mesh=None, init_id: str | None = None) -> dict:
  """Runs GRPO from `initial_variables`; returns the final variables. Resumes from workdir/checkpoints.

  With a `mesh`, the variables, optimizer state and reference are sharded by the rules table, rollouts
  and evaluation sample over the mesh, and each update's batch is split along the batch axes. `init_id`
  names the initial weights in the checkpoints' fingerprint (default: the SHA-256 of the arrays); a
  checkpoint made under another fingerprint raises FingerprintMismatch (see RLStageConfig.resume_override)."""
  # --- setup
  template = get_template(sc.template, tokenizer)
  scorer = RewardScorer(weights=dict(sc.reward_weights), options={n: dict(o) for n, o in sc.reward_options},
                        prefix=response_prefix(template), max_new_tokens=sc.max_new_tokens)
  settings = RolloutSettings(num_samples=sc.group_size, max_new_tokens=sc.max_new_tokens,
                             temperature=sc.grpo.temperature, top_k=sc.top_k, top_p=sc.top_p)
  tx = make_optimizer(sc.optim)
  runtime = sc.runtime.validate_for(model_cfg)
  update = make_grpo_update(model_cfg, sc.grpo, tx, runtime=runtime, mesh=mesh, group_size=sc.group_size,
                            advantage_estimator=sc.advantage_estimator)
  ref_logprobs = make_logprob_fn(model_cfg, sc.grpo.temperature, runtime=runtime, mesh=mesh)
  data, next_prompts = prompt_input(sc, train_examples, tokenizer, template, mesh)
  ckpt = CheckpointManager(os.path.join(workdir, "checkpoints"), max_to_keep=sc.keep)
  writer = MetricsWriter(os.path.join(workdir, "metrics.jsonl"), echo_every=sc.log_every if verbose else 0,
                         total_steps=sc.num_steps, name="grpo", tensorboard=True)
  base_key = jax.random.key(sc.seed)
  g = sc.group_size

  fingerprint = rl_fingerprint(model_cfg, sc, train_examples=train_examples, tokenizer=tokenizer,
                               init=init_id if init_id is not None else weights_digest(initial_variables))

  # --- restore: into an abstract target (a fresh state is built only when there is nothing to restore)
  checked = fp_lib.check_checkpoint(ckpt, fingerprint, sc.num_steps, sc.resume_override)   # before any array
  like = abstract_train_state(abstract_variables(model_cfg, initial_variables, mesh), tx, lora_config=sc.lora)
  # The reference: a copy of the initial policy (the update donates the state), or under LoRA the frozen base
  # inside the state (None here: read from the state when used).
  target = {"state": state_dict(like),
            **({} if sc.lora.enabled else {"ref": {"params": like.params, "router_bias": like.router_bias}})}
  found = ckpt.restore_latest(target=target, data_iter_for=lambda s: data if s < sc.num_steps else None)
  start = None
  if found is not None:
    start, restored, metadata = found
    if start != checked:
      fp_lib.check_checkpoint(ckpt, fingerprint, sc.num_steps, sc.resume_override, start, metadata)
    state, ref = from_state_dict(restored["state"], like=like), restored.get("ref")
  else:
    state = create_train_state(place_variables(model_cfg, initial_variables, mesh), tx, lora_config=sc.lora,
                               key=jax.random.key(sc.seed + 1))
    ref = None if sc.lora.enabled else _copy({"params": state.params, "router_bias": state.router_bias})
  writer.truncate_after(start)        # None: a run killed before its first checkpoint logged nothing kept
  step = start if start is not None else 0     # RL steps (one rollout each), not optimizer updates

  # --- loop
  preempt = Preemption()
  with preempt.active(), finish_saves(ckpt):
    while step < sc.num_steps:
      t0 = time.time()
      key = jax.random.fold_in(base_key, step)
      kept, tries, total_groups, zero_groups, first, t_reward, timeouts = None, 0, 0, 0, None, 0.0, 0
      while True:
        batch = next_prompts()
        r = rollout(model_cfg, state.variables(), tokenizer, batch, rng=jax.random.fold_in(key, tries),
                    settings=settings, scorer=scorer, runtime=runtime, mesh=mesh)
        first = r if first is None else first
        t_reward += r.time_reward_s
        timeouts += r.verify_timeouts
        zv = _zero_variance(r.rewards, g)
        total_groups += len(zv)
        zero_groups += int(zv.sum())
        if not sc.dynamic_sampling:
          kept = r
          break
        kept = concat(kept, select_groups(r, np.flatnonzero(~zv)))
        tries += 1
        if kept.num_prompts >= sc.batch_size or tries > sc.max_refills:
          break
      t_rollout = time.time() - t0

      # Fixed shapes for the jitted update: exactly B groups. Under dynamic sampling, missing groups are
      # filled with inactive rows (zero completion mask and advantage) so they contribute nothing.
      n_keep = min(kept.num_prompts, sc.batch_size)
      active = np.ones(sc.batch_size * g, np.float32)
      if n_keep < sc.batch_size:
        filler = select_groups(first, np.arange(sc.batch_size - n_keep))
        kept = concat(select_groups(kept, np.arange(n_keep)) if n_keep else None, filler)
        active[n_keep * g:] = 0.0
      else:
        kept = select_groups(kept, np.arange(sc.batch_size))

      t1 = time.time()
      train_batch = _train_batch(kept, active)
      if mesh is not None:
        train_batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in train_batch.items()}
      if sc.grpo.beta > 0:
        train_batch["ref_logp"] = jax.block_until_ready(ref_logprobs(
            ref if ref is not None else state.base_variables(), train_batch["tokens"], train_batch["attention_mask"],
            sc.max_new_tokens))   # timed honestly
      if sc.grpo.rollout_is != "off":
        # The sampler's log-probs are the behaviour policy's; the trainer's own log-probs of the policy that
        # sampled them become old_logp, and the update weights the policy term by their ratio.
        train_batch["behav_logp"] = train_batch["old_logp"]
        train_batch["old_logp"] = jax.block_until_ready(ref_logprobs(
            state.variables(), train_batch["tokens"], train_batch["attention_mask"], sc.max_new_tokens))
      t_ref = time.time() - t1
      t2 = time.time()
      if n_keep > 0:
        state, history = grpo_update_rollout(update, state, train_batch, sc.grpo,
                                             rng=np.random.default_rng([sc.seed, step]))
        upd = {k: float(np.mean([float(h[k]) for h in history])) for k in history[0]}
        if sc.grpo.rollout_is == "off":
          # The first update of the step runs before any parameter change: its logp - old_logp is the
          # sampler/trainer mismatch on its rows (all rows with one minibatch), measured for free.
          upd.update({f"mismatch_{k}": float(history[0][f"logp_diff_{k}"]) for k in ("abs_mean", "abs_max", "kl")})
      else:
        upd = {}
      t_update = time.time() - t2
      step += 1
      if upd:
        check_finite(upd, step)
      if sc.ref_reset_every and step % sc.ref_reset_every == 0:
        ref = _copy({"params": state.params, "router_bias": state.router_bias})

      # --- metrics (over the first rollout of the step: the policy as sampled, before filtering)
      m = {
          "reward": float(first.rewards.mean()),
          **{f"reward_{k}": float(v.mean()) for k, v in first.parts.items()},
          "accuracy": float(first.parts.get("accuracy", np.zeros(1)).mean()),
          "format": float(first.parts.get("format", np.zeros(1)).mean()),
          "length": float(first.lengths.mean()), "length_max": float(first.lengths.max()),
          "truncated": float(first.truncated.mean()),
          "zero_variance_groups": zero_groups / max(total_groups, 1),
          "groups_trained": float(n_keep), "rollouts": float(max(tries, 1)),
          "verify_timeouts": timeouts,     # math-verify checks cut off at their deadline (scored as wrong)
          "time_rollout_s": t_rollout - t_reward, "time_reward_s": t_reward, "time_ref_s": t_ref, "time_update_s": t_update,
          "time_step_s": time.time() - t0,
          **{k: v for k, v in upd.items() if k in ("loss", "pg_loss", "kl", "clip_frac_low", "clip_frac_high",
                                                   "entropy_proxy", "ratio_mean", "grad_norm",
                                                   "expert_maxvio_mean", "expert_maxvio_max", "mismatch_abs_mean",
                                                   "mismatch_abs_max", "mismatch_kl", "is_weight_mean",
                                                   "is_clipped_frac")},
      }
      if step % sc.log_every == 0 or step == sc.num_steps:
        writer.write(step, m)
      # --- eval / checkpoint
      if eval_examples is not None and sc.eval_every and step % sc.eval_every == 0 and step < sc.num_steps:
        rep = evaluate(model_cfg, state.variables(), tokenizer, eval_examples, sc.eval, template=sc.template,
                       mesh=mesh)
        writer.write(step, {k: v for k, v in rep.items() if k != "samples"}, kind="eval")
      if step % sc.checkpoint_every == 0 or step == sc.num_steps or preempt.requested:
        tree = {"state": state_dict(state), **({"ref": ref} if ref is not None else {})}
        ckpt.save(step, tree, data_iter=data, metadata={"stage": "rl", "fingerprint": fingerprint}, force=True)
      if preempt.requested:
        break
  preempt.exit_if_requested("rl", step)
  return state.variables()
