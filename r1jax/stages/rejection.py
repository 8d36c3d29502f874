"""Rejection sampling: K completions per prompt from a checkpoint, kept only where the rule rewards pass.

    stats = rejection_sample(cfg, variables, tok, examples, RejectionConfig(num_samples=16),
                             "runs/r1/traces.jsonl", source="runs/r1/r1_zero/model")
    traces = read_traces("runs/r1/traces.jsonl")   # [{"prompt", "completion", "reward", ...}, ...]

This is the stage between R1-Zero and round-2 SFT in DeepSeek-R1: the RL checkpoint answers every
prompt K times, the same rule rewards that trained it judge the answers, and the correct,
well-formatted, distinct ones become SFT data. Each JSONL record's `prompt`/`completion` pair is what
`r1jax.stages.lm.run_lm_stage` trains on with a completion-only loss: `prompt` is the rendered
template (for "compact" it ends in "<think>", which the completion therefore does not repeat) and
`completion` is the decoded generation. The stop token decodes to "" (eos) and the SFT pipeline
appends eos itself, so bos + prompt + completion + eos is the sequence the model produced, as text (the
ids can differ where the sampler chose a non-canonical split of that text; an SFT step does not care).

With `target_kept` > 0 the examples are a pool: batches go through in order until the kept traces reach
the target (the batch that reaches it is finished, so the count can exceed it by up to a batch's worth),
and the rest are not sampled. A checkpoint whose traces pass rarely then still yields enough SFT data,
and one whose traces pass often costs no more than needed. The stats say whether the target was met.

Keep rule, per prompt:
  1. a sample passes when every reward part named in `min_rewards` reaches its minimum and the
     weighted total reaches `min_total` (an empty completion never passes: it teaches nothing);
  2. passing samples are ordered by `prefer` ("shortest": fewest completion tokens, then sample
     index; "random": a permutation seeded by (seed, prompt index));
  3. duplicates (same text up to whitespace) are dropped, the first in that order survives;
  4. the first `max_per_prompt` are kept.

Resumable: prompts go through in a fixed order, batch i samples with fold_in(key(seed), i), and after
each batch its records are appended and fsynced before a progress sidecar (`out + ".progress.json"`,
written atomically) records the batch count and the JSONL's byte length. A restart truncates the JSONL
to that length (dropping a line half-written by a kill) and continues, so the result is the same file
byte for byte as an uninterrupted run. `out + ".stats.json"` marks the stage finished.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from r1jax.checkpoint.export import weights_digest
from r1jax.data.jsonl import JsonlSource, write_json
from r1jax.data.pipeline import prompt_batches
from r1jax.data.templates import check_template, get_template, response_prefix
from r1jax.model.transformer import place_variables
from r1jax.sharding import distributed
from r1jax.sampling.rollout import RewardScorer, RolloutSettings, check_reward_names, rollout
from r1jax.stages.fingerprint import check, fingerprint, records_digest, tokenizer_digest

PREFER = ("shortest", "random")
# The traces' file name inside a rejection-sampling directory (the pipeline's rs_* stages, the standalone
# job's workdir); TRACES + ".progress.json" and TRACES + ".stats.json" sit beside it.
TRACES = "traces.jsonl"
_COUNTERS = ("prompts", "samples", "passed", "kept", "prompts_with_kept")


@dataclasses.dataclass(frozen=True)
class RejectionConfig:
  num_samples: int = 8                 # K completions per prompt
  batch_size: int = 32                 # prompts per sampler call
  max_prompt_len: int = 32
  max_new_tokens: int = 48
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  template: str = "compact"
  reward_weights: tuple = (("accuracy", 1.0), ("format", 1.0))   # names from r1jax.rewards.REWARDS / LENGTH_REWARDS
  reward_options: tuple = ()           # ((reward name, ((option, value), ...)), ...)
  min_rewards: tuple = (("accuracy", 1.0), ("format", 1.0))      # keep only if each named part >= value
  min_total: float = float("-inf")     # ... and the weighted total >= this
  max_per_prompt: int = 1
  prefer: str = "shortest"             # "shortest" (fewest completion tokens first) | "random"
  seed: int = 0
  target_kept: int = 0                 # > 0: stop after the batch whose traces reach this count (0: every example)

  def __post_init__(self):
    for name in ("num_samples", "batch_size", "max_prompt_len", "max_new_tokens", "max_per_prompt"):
      if getattr(self, name) < 1:
        raise ValueError(f"RejectionConfig.{name}={getattr(self, name)!r}: must be >= 1")
    if self.target_kept < 0:
      raise ValueError(f"RejectionConfig.target_kept={self.target_kept!r}: must be >= 0 (0 = sample every example)")
    if not (math.isfinite(self.temperature) and self.temperature >= 0):
      raise ValueError(f"RejectionConfig.temperature={self.temperature!r}: must be >= 0 (0 = greedy)")
    if self.top_k < 0:
      raise ValueError(f"RejectionConfig.top_k={self.top_k!r}: must be >= 0 (0 = no limit)")
    if not 0 < self.top_p <= 1:
      raise ValueError(f"RejectionConfig.top_p={self.top_p!r}: must be in (0, 1]")
    if self.prefer not in PREFER:
      raise ValueError(f"RejectionConfig.prefer={self.prefer!r}: must be one of {PREFER}")
    if math.isnan(self.min_total):
      raise ValueError("RejectionConfig.min_total=nan: must be a number (-inf keeps any total)")
    check_template(self.template)      # raises naming the known templates
    check_reward_names("RejectionConfig", self.reward_weights, self.reward_options, self.max_new_tokens)
    weights = dict(self.reward_weights)
    for name, _ in self.min_rewards:
      # combine() only computes rewards with a non-zero weight: a minimum on any other is never met.
      if not weights.get(name):
        raise ValueError(f"RejectionConfig.min_rewards: {name!r} needs a non-zero weight in reward_weights "
                         f"(has {sorted(k for k, w in weights.items() if w)})")


# ------------------------------------------------------------------------------------------ the rule
def passes(total: float, parts: Mapping[str, float], text: str, rc: RejectionConfig) -> bool:
  """The reward rule: every part in `min_rewards` reaches its minimum and the total reaches `min_total`."""
  if not text.strip():
    return False
  if not total >= rc.min_total:
    return False
  return all(parts.get(name, float("-inf")) >= minimum for name, minimum in rc.min_rewards)


def _normalise(text: str) -> str:
  return " ".join(text.split())


def select(texts: Sequence[str], num_tokens: Sequence[int], passed: Sequence[bool], *, max_per_prompt: int,
           prefer: str = "shortest", rng: np.random.Generator | None = None) -> list[int]:
  """Indices of the samples of one prompt to keep, in keep order (see the module docstring).

  Args:
    texts: the K completion texts.
    num_tokens: their lengths in tokens.
    passed: whether each passed the reward rule.
    max_per_prompt: at most this many indices are returned.
    prefer: "shortest" or "random".
    rng: the generator of the "random" order.
  """
  if prefer == "shortest":
    order = sorted(range(len(texts)), key=lambda i: (int(num_tokens[i]), i))
  elif prefer == "random":
    if rng is None:
      raise ValueError("select: prefer='random' needs an rng")
    order = [int(i) for i in rng.permutation(len(texts))]
  else:
    raise ValueError(f"select: prefer={prefer!r} must be one of {PREFER}")
  kept, seen = [], set()
  for i in order:
    if not passed[i]:
      continue
    key = _normalise(texts[i])
    if key in seen:
      continue
    seen.add(key)
    kept.append(i)
    if len(kept) == max_per_prompt:
      break
  return kept


# ------------------------------------------------------------------------------------------ files
def _read_json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def read_traces(path: str | os.PathLike) -> list[dict]:
  """All records of a traces JSONL file; a malformed line raises JsonlError naming path:line."""
  if os.path.getsize(path) == 0:
    return []                          # a run that kept nothing (JsonlSource refuses empty files)
  source = JsonlSource(path, required_fields=("prompt", "completion"))
  try:
    return [source[i] for i in range(len(source))]
  finally:
    source.close()


def _new_counters() -> dict:
  return {k: 0 for k in _COUNTERS}


def _rates(c: Mapping[str, int]) -> dict:
  return {**c, "acceptance_rate": c["passed"] / max(c["samples"], 1),
          "prompt_coverage": c["prompts_with_kept"] / max(c["prompts"], 1)}


# ------------------------------------------------------------------------------------------ the stage
def rejection_sample(model_cfg, variables, tokenizer, examples: Sequence[Mapping[str, Any]],
                     rc: RejectionConfig, out_path: str | os.PathLike, *, source: str = "", mesh=None,
                     verbose: bool = True, model_id: str | None = None) -> dict:
  """Samples, filters and writes the traces of every example to `out_path` (JSONL); returns the stats.

  Args:
    model_cfg: the model's ModelConfig.
    variables: its variables (e.g. from r1jax.checkpoint.load_model).
    tokenizer: any r1jax.data.Tokenizer.
    examples: task example dicts ({"task", "question", "answer", ...}), in the order to process them.
    rc: the stage config.
    out_path: the JSONL to write; `out_path + ".progress.json"` / `".stats.json"` sit beside it.
    source: recorded in every record and the stats (e.g. the checkpoint's directory).
    model_id: what names the model's weights (r1jax.stages.models.ModelSource.identity()); default: the
      SHA-256 of `variables`. With the config, the examples and the tokenizer it is the fingerprint that a
      finished or partial output must match to be reused.
    mesh: optional device mesh: the variables are sharded on it and the sampler splits rows over it.
    verbose: print one progress line per batch to stderr.

  Returns:
    {"tasks": {task: counters}, "all": counters, "config", "source", "num_examples", "examples_sha256", "model",
    "tokenizer"}
    (+ "target_reached" when rc.target_kept > 0),
    counters being {"prompts", "samples", "passed" (samples passing the reward rule), "kept",
    "prompts_with_kept", "acceptance_rate" (passed / samples), "prompt_coverage" (prompts_with_kept / prompts)}.

  Raises:
    ValueError: no examples.
    FingerprintMismatch: out_path holds (finished or partial) output of another config, model, tokenizer or
      example list (delete it, or write elsewhere).
  """
  out_path = os.fspath(out_path)
  examples = list(examples)
  if not examples:
    raise ValueError("rejection_sample needs at least one example")
  if model_id is None:
    model_id = weights_digest(variables)
  variables = place_variables(model_cfg, variables, mesh)
  stats_path, progress_path = out_path + ".stats.json", out_path + ".progress.json"
  ident = {"config": json.loads(json.dumps(dataclasses.asdict(rc))), "num_examples": len(examples),
           "examples_sha256": records_digest(examples), "model": model_id, "tokenizer": tokenizer_digest(tokenizer)}

  def check_same(saved: Mapping[str, Any], what: str) -> None:
    fp = lambda d: fingerprint({"": {k: d.get(k) for k in ident}}, {})
    check(fp(saved), fp(ident), where=what, path=os.path.dirname(os.path.abspath(out_path)),
          hint="Delete it or choose another output path.")

  if os.path.exists(stats_path):
    stats = _read_json(stats_path)
    check_same(stats, stats_path)
    if verbose:
      print(f"rejection: {stats_path} exists, the stage is finished", file=sys.stderr, flush=True)
    return stats

  bs = min(rc.batch_size, len(examples))
  num_batches = -(-len(examples) // bs)
  counters: dict[str, dict] = {}
  done, size = 0, 0
  if os.path.exists(progress_path):
    progress = _read_json(progress_path)
    check_same(progress, progress_path)
    done, size, counters = progress["batches_done"], progress["bytes"], progress["tasks"]
    if verbose:
      print(f"rejection: resuming at batch {done}/{num_batches}", file=sys.stderr, flush=True)
  if rc.target_kept and not counters and verbose:
    print(f"rejection: sampling until {rc.target_kept} traces are kept (at most {len(examples)} prompts)",
          file=sys.stderr, flush=True)
  # In a multi-process job every process samples (its devices hold part of each batch) and scores the
  # gathered completions; process 0 alone writes. Every process has read the progress before any write.
  writer = distributed.is_writer()
  distributed.barrier(f"rejection start {out_path}")
  if writer:
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "ab"):
      pass
    if os.path.getsize(out_path) < size:
      raise ValueError(f"{out_path} is shorter than its progress file says ({size} bytes): it was changed "
                       "outside the stage; delete it and its .progress.json to start over")
    os.truncate(out_path, size)          # drops a line half-written when the last run was killed

  template = get_template(rc.template, tokenizer)
  scorer = RewardScorer(weights=dict(rc.reward_weights), options={n: dict(o) for n, o in rc.reward_options},
                        prefix=response_prefix(template), max_new_tokens=rc.max_new_tokens)
  settings = RolloutSettings(num_samples=rc.num_samples, max_new_tokens=rc.max_new_tokens,
                             temperature=rc.temperature, top_k=rc.top_k, top_p=rc.top_p)
  k = rc.num_samples
  base_key = jax.random.key(rc.seed)
  # The batches still to do. Prompts are not shuffled, so batch i always holds examples[i*bs:(i+1)*bs].
  rest = examples[done * bs:]
  batches = prompt_batches(rest, tokenizer, template, batch_size=bs, max_prompt_len=rc.max_prompt_len,
                           seed=rc.seed, num_epochs=1, shuffle=False, drop_remainder=False) if rest else []
  reached = lambda: rc.target_kept > 0 and _sum(counters)["kept"] >= rc.target_kept
  t0 = time.time()
  with open(out_path if writer else os.devnull, "ab") as f:
    for i, batch in enumerate(batches, start=done):
      if reached():                      # every process holds the same counters: all stop at the same batch
        break
      r = rollout(model_cfg, variables, tokenizer, batch, rng=jax.random.fold_in(base_key, i), settings=settings,
                  rows=bs, scorer=scorer, mesh=mesh)
      texts, lengths = r.texts, r.lengths
      lines = []
      for j, (ex, prompt) in enumerate(zip(batch["examples"], batch["prompts"])):
        rows = range(j * k, (j + 1) * k)
        scored = [r.scores[s] for s in rows]
        ok = [passes(total, parts, texts[s], rc) for s, (total, parts) in zip(rows, scored)]
        rng = np.random.default_rng([rc.seed, i * bs + j]) if rc.prefer == "random" else None
        keep = select([texts[s] for s in rows], [lengths[s] for s in rows], ok, max_per_prompt=rc.max_per_prompt,
                      prefer=rc.prefer, rng=rng)
        task = str(ex.get("task", "unknown"))
        c = counters.setdefault(task, _new_counters())
        c["prompts"] += 1
        c["samples"] += k
        c["passed"] += sum(ok)
        c["kept"] += len(keep)
        c["prompts_with_kept"] += int(bool(keep))
        for s in keep:
          total, parts = scored[s]
          rec = {"prompt": prompt, "completion": texts[j * k + s], "reward": total, "rewards": parts,
                 "task": task, "question": ex.get("question"), "answer": ex.get("answer"), "source": source,
                 "num_tokens": int(lengths[j * k + s])}
          if "id" in ex:
            rec["id"] = ex["id"]
          lines.append(json.dumps(rec, ensure_ascii=False) + "\n")
      # Records first (durably), then the progress that points past them: a kill in between only
      # repeats this batch, whose output is the same.
      if writer:
        f.write("".join(lines).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
        write_json(progress_path, {**ident, "source": source, "batches_done": i + 1,
                                   "bytes": os.fstat(f.fileno()).st_size, "tasks": counters})
      if verbose and writer:
        a = _sum(counters)
        rate = (i + 1 - done) / max(time.time() - t0, 1e-9)
        print(f"rejection [{i + 1}/{num_batches}] kept {a['kept']} of {a['samples']} samples, passed "
              f"{a['passed'] / max(a['samples'], 1):.1%}, prompts covered {a['prompts_with_kept']}/{a['prompts']} "
              f"{rate:.2f} batches/s", file=sys.stderr, flush=True)

  stats = {"tasks": {t: _rates(c) for t, c in sorted(counters.items())}, "all": _rates(_sum(counters)), **ident,
           "source": source}
  if rc.target_kept:
    stats["target_reached"] = bool(reached())
  if writer:
    write_json(stats_path, stats)
    if os.path.exists(progress_path):
      os.remove(progress_path)
  distributed.barrier(f"rejection done {out_path}")     # the traces are complete for every reader
  if verbose and writer:
    for t, c in stats["tasks"].items():
      print(f"rejection {t}: acceptance {c['acceptance_rate']:.1%}, kept {c['kept']}, prompts covered "
            f"{c['prompt_coverage']:.1%}", file=sys.stderr, flush=True)
  return stats


def _sum(counters: Mapping[str, Mapping[str, int]]) -> dict:
  total = _new_counters()
  for c in counters.values():
    for key in _COUNTERS:
      total[key] += c[key]
  return total
