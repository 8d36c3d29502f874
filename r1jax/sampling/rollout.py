"""Rollouts: a batch of prompts -> sample -> decode -> score, the one path GRPO, rejection sampling and
evaluation share.

    r = rollout(cfg, variables, tokenizer, batch, rng=key, settings=RolloutSettings(num_samples=8,
                max_new_tokens=48), rows=8, scorer=RewardScorer(prefix="<think>", weights={"accuracy": 1.0}))
    r.texts[j * G + g], r.rewards[j * G + g]      # sample g of prompt j

`batch` is one item of `r1jax.data.pipeline.prompt_batches`. A short batch (the last of a finite run) is
padded to `rows` prompts with copies of its first prompt, so every sampler call has one shape and
compiles once; the copies' samples are dropped before decoding, so they are never scored or returned.
That is the only short-batch rule: evaluation and rejection sampling see every problem they were given.

What stays where: the sampled tokens, masks and log-probs, and the prompts repeated G times, stay device
arrays (an RL step feeds them to its update without a host round trip); only what the rewards need
comes to the host: the completion tokens to decode, their lengths and truncation flags. The rewards are
Python (they parse text), so they are host arrays.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from r1jax.rewards import (LENGTH_REWARDS, REWARDS, combine, math_verify_timeouts, math_verify_workers,
                           overlong_options)
from r1jax.sampling.sampler import sample
from r1jax.sharding.distributed import to_host
from r1jax.sharding.mesh import batch_sharding


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
  """How completions are sampled (see r1jax.sampling.sample for each knob)."""
  num_samples: int = 1                 # G completions per prompt
  max_new_tokens: int = 48
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  greedy: bool = False


@dataclasses.dataclass(frozen=True)
class Rollout:
  """The completions of n prompts, G each; row j*G + g is sample g of prompt j.

  Device arrays: prompt_tokens / prompt_mask int32[n*G, P] (each prompt repeated G times), tokens /
  mask int32[n*G, N], logprobs f32[n*G, N]. Host: lengths int32[n*G], truncated bool[n*G], texts (n*G
  decoded completions, without the prompt), examples / prompts (n each), and when scored, scores (n*G
  exact (total, parts) pairs from r1jax.rewards.combine), rewards f32[n*G] (the totals) and parts
  {reward name: f32[n*G]} (0 where a reward was not computed).
  """
  examples: list
  prompts: list
  prompt_tokens: jax.Array
  prompt_mask: jax.Array
  tokens: jax.Array
  mask: jax.Array
  logprobs: jax.Array
  lengths: np.ndarray
  truncated: np.ndarray
  texts: list
  rewards: np.ndarray | None = None
  parts: Mapping[str, np.ndarray] | None = None
  scores: list | None = None
  num_samples: int = 1
  time_reward_s: float = 0.0           # host time spent decoding and scoring
  verify_timeouts: int = 0             # math-verify checks cut off at their deadline while scoring

  @property
  def num_prompts(self) -> int:
    return len(self.examples)

  def group(self, j: int, values: Sequence) -> list:
    """The G entries of prompt j in a per-row sequence (e.g. `group(j, r.texts)`)."""
    g = self.num_samples
    return list(values[j * g:(j + 1) * g])


@dataclasses.dataclass(frozen=True)
class RewardScorer:
  """Scores completions with r1jax.rewards.combine: prefix + text against the prompt's example.

  Rewards of the token count (r1jax.rewards.LENGTH_REWARDS, e.g. DAPO's "overlong") are computed from
  the completion lengths and join the sum as extra parts; their max_len defaults to max_new_tokens.
  """
  weights: Mapping[str, float]
  options: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  prefix: str = ""                     # the part of the response the prompt already holds ("<think>")
  max_new_tokens: int = 0              # the token budget (default max_len of "overlong")

  def __call__(self, texts: Sequence[str], examples: Sequence[Mapping],
               lengths: Sequence[int] | None = None) -> list[tuple[float, dict]]:
    """(total, {reward name: value}) per text, exactly as `combine` returns them, in order.

    The texts are scored concurrently on a shared thread pool: a reward that waits on a math-verify
    worker (r1jax.rewards' process pool, with its own deadline) then waits alongside the others, so a
    rollout's worst case is about its slowest checks, not the sum of all of them."""
    by_length = [name for name in LENGTH_REWARDS if name in self.weights or name in self.options]
    if by_length and lengths is None:
      raise ValueError(f"rewards {by_length} need the completions' token counts (lengths)")
    kw = {name: overlong_options(self.options.get(name, {}), self.max_new_tokens) for name in by_length}

    def score(i):
      extra = {name: LENGTH_REWARDS[name](int(lengths[i]), **kw[name]) for name in by_length}
      return combine(self.prefix + texts[i], examples[i], self.weights, options=self.options, extra=extra)

    n = min(len(texts), len(examples))
    if n < 2:
      return [score(i) for i in range(n)]
    return list(_scoring_threads().map(score, range(n)))


_THREADS: concurrent.futures.ThreadPoolExecutor | None = None
_THREADS_LOCK = threading.Lock()


def _scoring_threads() -> concurrent.futures.ThreadPoolExecutor:
  """One process-wide pool (its threads live as long as the process: math-verify workers started from
  them are bound to their lifetime), as wide as the math-verify pool can serve."""
  global _THREADS
  with _THREADS_LOCK:
    if _THREADS is None:
      width = max(2, math_verify_workers())
      _THREADS = concurrent.futures.ThreadPoolExecutor(max_workers=width, thread_name_prefix="r1jax-reward")
    return _THREADS


def check_reward_names(owner: str, weights: Sequence, options: Sequence, max_new_tokens: int) -> None:
  """Config-time check of ((name, weight), ...) and ((name, ((option, value), ...)), ...): every name a
  text reward (r1jax.rewards.REWARDS) or a length reward (LENGTH_REWARDS), and valid "overlong" options.

  Raises:
    ValueError naming `owner`'s field and the unknown name or bad option.
  """
  known = sorted(set(REWARDS) | set(LENGTH_REWARDS))
  for field, entries in (("reward_weights", weights), ("reward_options", options)):
    for name, _ in entries:
      if name not in known:
        raise ValueError(f"{owner}.{field}: unknown reward {name!r}; known: {known}")
  for name, opts in options:
    if name in LENGTH_REWARDS:
      try:
        overlong_options(dict(opts), max_new_tokens)
      except ValueError as e:
        raise ValueError(f"{owner}.{e}") from None


def _on_device(x: np.ndarray, mesh) -> jax.Array:
  """A host array (the same on every process) on device: split along the batch axes under a mesh when its
  rows divide over them, as the sampler's outputs are."""
  if mesh is not None:
    sharding = batch_sharding(mesh, x.ndim)
    axes = sharding.spec[0] or ()
    axes = (axes,) if isinstance(axes, str) else axes
    if x.shape[0] % math.prod(mesh.shape[a] for a in axes) == 0:
      return jax.device_put(x, sharding)
  return jnp.asarray(x)


def decode_completions(tokenizer, tokens, mask) -> list[str]:
  """Texts of the completion tokens where mask == 1."""
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  return [tokenizer.decode([int(t) for t in row[m > 0]]) for row, m in zip(tokens, mask)]


def pad_prompts(batch: Mapping, rows: int) -> tuple[np.ndarray, np.ndarray]:
  """The batch's prompts padded to `rows` by repeating its first prompt (one shape, one compilation)."""
  tokens, mask = np.asarray(batch["prompt_tokens"]), np.asarray(batch["prompt_mask"])
  if len(tokens) > rows:
    raise ValueError(f"a batch of {len(tokens)} prompts does not fit in rows={rows}")
  if len(tokens) < rows:
    extra = rows - len(tokens)
    tokens = np.concatenate([tokens, np.repeat(tokens[:1], extra, 0)])
    mask = np.concatenate([mask, np.repeat(mask[:1], extra, 0)])
  return tokens, mask


def rollout(cfg, variables, tokenizer, batch: Mapping, *, rng, settings: RolloutSettings,
            rows: int | None = None, scorer: RewardScorer | None = None,
            mesh=None, runtime=None) -> Rollout:
  """Samples `settings.num_samples` completions for each prompt of `batch`, decodes and (optionally) scores them.

  Args:
    cfg: the model's ModelConfig.
    variables: its variables.
    tokenizer: any r1jax.data.Tokenizer (eos, stop and pad ids come from it).
    batch: {"prompt_tokens", "prompt_mask", "examples", "prompts"} (r1jax.data.pipeline.prompt_batches).
    rng: the sampling key.
    settings: the sampling knobs.
    rows: the prompts per sampler call; a shorter batch is padded to it (None: the batch's own size).
    scorer: the rewards; None leaves the rollout unscored.
    mesh: optional device mesh for the sampler.
    runtime: the caller's r1jax.model.Runtime for the sampler (None: the default).
  """
  n = len(batch["examples"])
  g = settings.num_samples
  tokens_bp, mask_bp = pad_prompts(batch, n if rows is None else rows)
  out = sample(cfg, variables, tokens_bp, mask_bp, rng=rng, num_samples=g, max_new_tokens=settings.max_new_tokens,
               temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p, greedy=settings.greedy,
               eos_id=tokenizer.eos_id, stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id, mesh=mesh,
               runtime=runtime)
  jax.block_until_ready(out.tokens)
  on_device = lambda x: _on_device(x, mesh)
  t0 = time.time()
  keep = n * g
  trim = (lambda x: x) if len(tokens_bp) == n else (lambda x: x[:keep])
  tokens, mask = trim(out.tokens), trim(out.mask)
  # The completions come to this host (from every process's devices in a multi-process job).
  texts = decode_completions(tokenizer, to_host(tokens), to_host(mask))
  lengths = to_host(trim(out.lengths))
  examples = list(batch["examples"])
  rewards = parts = scores = None
  timeouts_before = math_verify_timeouts()
  if scorer is not None:
    scores = scorer(texts, [ex for ex in examples for _ in range(g)], lengths)
    rewards = np.asarray([total for total, _ in scores], np.float32)
    parts = {name: np.asarray([p.get(name, 0.0) for _, p in scores], np.float32) for name in scorer.weights}
  return Rollout(
      examples=examples, prompts=list(batch.get("prompts", [])),
      prompt_tokens=on_device(np.repeat(tokens_bp[:n], g, axis=0)),
      prompt_mask=on_device(np.repeat(mask_bp[:n], g, axis=0)),
      tokens=tokens, mask=mask, logprobs=trim(out.logprobs),
      lengths=lengths, truncated=to_host(trim(out.truncated)), texts=texts,
      rewards=rewards, parts=parts, scores=scores, num_samples=g, time_reward_s=time.time() - t0,
      verify_timeouts=math_verify_timeouts() - timeouts_before)


# ------------------------------------------------------------------------------------------ groups
def _take(value, rows: np.ndarray):
  if isinstance(value, jax.Array):
    return jnp.take(value, jnp.asarray(rows), axis=0)
  if isinstance(value, np.ndarray):
    return value[rows]
  return [value[i] for i in rows]


def _cat(a, b):
  if isinstance(a, jax.Array):
    return jnp.concatenate([a, b])
  if isinstance(a, np.ndarray):
    return np.concatenate([a, b])
  return list(a) + list(b)


_PER_ROW = ("prompt_tokens", "prompt_mask", "tokens", "mask", "logprobs", "lengths", "truncated", "texts",
            "rewards", "scores")


def select_groups(r: Rollout, groups: Sequence[int]) -> Rollout:
  """The rollout of the prompts `groups` (indices into r.examples), in that order."""
  groups = np.asarray(groups, np.int64)
  g = r.num_samples
  rows = (groups[:, None] * g + np.arange(g)[None]).reshape(-1)
  changes = {name: _take(getattr(r, name), rows) for name in _PER_ROW if getattr(r, name) is not None}
  if r.parts is not None:
    changes["parts"] = {k: v[rows] for k, v in r.parts.items()}
  changes["examples"] = [r.examples[i] for i in groups]
  changes["prompts"] = [r.prompts[i] for i in groups] if r.prompts else []
  return dataclasses.replace(r, **changes)


def concat(a: Rollout | None, b: Rollout) -> Rollout:
  """The prompts of `a` followed by those of `b` (same G and shapes); `a` None gives `b`."""
  if a is None:
    return b
  if a.num_samples != b.num_samples:
    raise ValueError(f"cannot concatenate rollouts of {a.num_samples} and {b.num_samples} samples per prompt")
  changes = {name: _cat(getattr(a, name), getattr(b, name)) for name in _PER_ROW if getattr(b, name) is not None}
  if b.parts is not None:
    changes["parts"] = {k: np.concatenate([a.parts[k], b.parts[k]]) for k in b.parts}
  changes["examples"] = a.examples + b.examples
  changes["prompts"] = a.prompts + b.prompts
  changes["time_reward_s"] = a.time_reward_s + b.time_reward_s
  changes["verify_timeouts"] = a.verify_timeouts + b.verify_timeouts
  return dataclasses.replace(b, **changes)
