"""Task evaluation with the r1jax sampler: greedy pass@1, sampled pass@1 (mean over k), pass@k, maj@k.

    report = evaluate(cfg, variables, tokenizer, examples, template="compact", num_samples=4)

"pass@1 greedy" decodes at temperature 0; "pass@1 sampled" is the mean correctness over
`num_samples` completions at `temperature` (1.0 by default), the two readings R1 reports.

Generation and scoring are separate: `evaluate` only samples and decodes, and `score_completions`, a
pure function of texts, turns completions into numbers. That keeps the metrics testable on hand-made
text and lets the per-task breakdown reuse the same code on a subset of the problems.

The report is a function of (variables, examples, ec) alone: the sampling keys derive from ec.seed
(batch i samples with fold_in(key(seed), i)), so re-evaluating a checkpoint reproduces it exactly.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np

from r1jax.data.pipeline import prompt_batches
from r1jax.data.templates import get_template, response_prefix
from r1jax.eval.metrics import summarize_problems
from r1jax.model.transformer import place_variables
from r1jax.rewards import accuracy_reward, format_reward, language_consistency_reward
from r1jax.rewards import answer_region
from r1jax.rewards.language import target_scripts
from r1jax.sampling.rollout import RolloutSettings, rollout


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_examples: int = 200          # held-out problems (the first N of the eval split)
  batch_size: int = 50             # prompts per sampler call
  max_prompt_len: int = 32
  max_new_tokens: int = 48
  num_samples: int = 4             # k samples per problem for sampled pass@1 / pass@k / maj@k
  temperature: float = 1.0
  seed: int = 0
  # Script / language the chain of thought should be written in ("latin", "english", "chinese", ...;
  # see r1jax.rewards.language); "" skips the language-consistency metrics.
  language_target: str = ""

  def __post_init__(self):
    for name in ("num_examples", "batch_size", "max_prompt_len", "max_new_tokens", "num_samples"):
      if getattr(self, name) < 1:
        raise ValueError(f"EvalConfig.{name}={getattr(self, name)!r}: must be >= 1")
    if not self.temperature > 0:
      raise ValueError(f"EvalConfig.temperature={self.temperature!r}: must be > 0")
    if self.language_target:
      try:                                   # an unknown target is a config bug: fail before sampling
        target_scripts(self.language_target)
      except ValueError as e:
        raise ValueError(f"EvalConfig.language_target={self.language_target!r}: {e}") from None


# A completion counts as language-consistent when (up to float rounding) every word of its chain of
# thought is in the target script; the mean score alone hides whether mixing is rare or everywhere.
LANGUAGE_CONSISTENT_THRESHOLD = 0.999


def score_completions(examples: Sequence[Mapping[str, Any]], greedy_texts: Sequence[str],
                      sampled_texts: Sequence[Sequence[str]], *, prefix: str = "",
                      greedy_lengths: Sequence[float] | None = None,
                      sampled_lengths: Sequence[Sequence[float]] | None = None,
                      sampled_truncated: Sequence[Sequence[bool]] | None = None,
                      language_target: str = "") -> dict:
  """The scalar metrics of `evaluate` from decoded completions (pure; no model).

  Args:
    examples: P task examples (graded with `accuracy_reward`).
    greedy_texts: P greedy completions, without the prompt.
    sampled_texts: P groups of k sampled completions each (k equal for all problems).
    prefix: the part of the response the prompt already holds (e.g. "<think>"); format and language
      are scored on prefix + completion, as the model's full response.
    greedy_lengths / sampled_lengths / sampled_truncated: token counts and "hit max_new_tokens" flags,
      in the layout of the texts; the length keys are left out when not given.
    language_target: adds "language_{greedy,sampled}" (mean share of chain-of-thought words in the
      target script) and "language_consistent_{greedy,sampled}" (share of completions with every word
      in it; an empty chain of thought has no words and counts as not consistent).

  Returns:
    {"num_examples", "pass@1_greedy", "pass@1_sampled", "pass@1", "pass@{k}", "maj@1", "maj@{k}",
     "format_greedy", "format_sampled"} plus the length and language keys described above.
  """
  if not (len(examples) == len(greedy_texts) == len(sampled_texts)) or not examples:
    raise ValueError(f"need the same number (>= 1) of examples ({len(examples)}), greedy completions "
                     f"({len(greedy_texts)}) and sampled groups ({len(sampled_texts)})")
  k = len(sampled_texts[0])
  if k < 1 or any(len(g) != k for g in sampled_texts):
    raise ValueError(f"every problem needs the same number (>= 1) of samples, got "
                     f"{sorted({len(g) for g in sampled_texts})}")
  flat = [t for group in sampled_texts for t in group]
  correct = [[accuracy_reward(t, ex) > 0 for t in group] for ex, group in zip(examples, sampled_texts)]
  answers = [[answer_region(t).strip() or None for t in group] for group in sampled_texts]  # votes
  summary = summarize_problems(correct, answers, ks=sorted({1, k}))
  out = {
      "num_examples": len(examples),
      "pass@1_greedy": float(np.mean([accuracy_reward(t, ex) for ex, t in zip(examples, greedy_texts)])),
      "pass@1_sampled": summary["pass@1_mean"],
      **{name: v for name, v in summary.items() if name.startswith(("pass@", "maj@")) and name != "pass@1_mean"},
      "format_greedy": float(np.mean([format_reward(prefix + t) for t in greedy_texts])),
      "format_sampled": float(np.mean([format_reward(prefix + t) for t in flat])),
  }
  if greedy_lengths is not None:
    out["length_greedy"] = float(np.mean(greedy_lengths))
  if sampled_lengths is not None:
    out["length_sampled"] = float(np.mean([x for group in sampled_lengths for x in group]))
  if sampled_truncated is not None:
    out["truncated_sampled"] = float(np.mean([x for group in sampled_truncated for x in group]))
  if language_target:
    for name, texts in (("greedy", greedy_texts), ("sampled", flat)):
      scores = np.array([language_consistency_reward(prefix + t, target=language_target) for t in texts])
      out[f"language_{name}"] = float(scores.mean())
      out[f"language_consistent_{name}"] = float(np.mean(scores >= LANGUAGE_CONSISTENT_THRESHOLD))
  return out


def _settings(ec: EvalConfig, num_samples: int, greedy: bool) -> RolloutSettings:
  return RolloutSettings(num_samples=num_samples, max_new_tokens=ec.max_new_tokens, temperature=ec.temperature,
                         greedy=greedy)


def evaluate(cfg, variables, tokenizer, examples: Sequence[Mapping[str, Any]], ec: EvalConfig, *,
             template="compact", mesh=None) -> dict:
  """Evaluates `variables` on the first ec.num_examples `examples`.

  Every problem is evaluated; a short last batch is padded to batch_size (r1jax.sampling.rollout), so
  every sampler call has the same shape and compiles once.

  Returns:
    {"pass@1_greedy", "pass@1_sampled", "pass@{k}", "maj@{k}", "format_greedy", "format_sampled",
     "length_greedy", "length_sampled", "truncated_sampled", "num_examples"} (see `score_completions`),
    "language_*" when ec.language_target is set, "per_task": {task: the same scalar keys} when the
    examples' "task" field takes more than one value, and "samples": a few (question, greedy completion)
    pairs.
  """
  examples = list(examples)[:ec.num_examples]
  if not examples:
    raise ValueError("evaluate needs at least one example")
  variables = place_variables(cfg, variables, mesh)              # e.g. a loaded checkpoint, onto the mesh
  tmpl = get_template(template, tokenizer)
  prefix = response_prefix(tmpl)
  bs = min(ec.batch_size, len(examples))
  it = prompt_batches(examples, tokenizer, tmpl, batch_size=bs, max_prompt_len=ec.max_prompt_len,
                      seed=ec.seed, num_epochs=1, shuffle=False, drop_remainder=False)
  key = jax.random.key(ec.seed)
  k = ec.num_samples
  done, greedy, greedy_len, sampled, sampled_len, sampled_trunc = [], [], [], [], [], []
  for i, batch in enumerate(it):
    gr = rollout(cfg, variables, tokenizer, batch, rng=key, settings=_settings(ec, 1, True), rows=bs, mesh=mesh)
    sr = rollout(cfg, variables, tokenizer, batch, rng=jax.random.fold_in(key, i), settings=_settings(ec, k, False),
                 rows=bs, mesh=mesh)
    done.extend(batch["examples"])
    greedy.extend(gr.texts)
    greedy_len.extend(gr.lengths.tolist())
    for j in range(len(batch["examples"])):     # row j*k + g is sample g of prompt j
      sampled.append(sr.group(j, sr.texts))
      sampled_len.append(sr.group(j, sr.lengths.tolist()))
      sampled_trunc.append(sr.group(j, sr.truncated.tolist()))

  def score(idx):
    return score_completions([done[i] for i in idx], [greedy[i] for i in idx], [sampled[i] for i in idx],
                             prefix=prefix, greedy_lengths=[greedy_len[i] for i in idx],
                             sampled_lengths=[sampled_len[i] for i in idx],
                             sampled_truncated=[sampled_trunc[i] for i in idx], language_target=ec.language_target)

  report = score(range(len(done)))
  by_task: dict[str, list[int]] = {}
  for i, ex in enumerate(done):
    by_task.setdefault(str(ex.get("task", "")), []).append(i)
  if len(by_task) > 1:           # a mixed eval set: the overall mean hides which task moved
    report["per_task"] = {name: score(idx) for name, idx in sorted(by_task.items())}
  report["samples"] = [{"question": ex["question"], "answer": ex["answer"], "completion": text}
                       for ex, text in zip(done[:3], greedy[:3])]
  return report
