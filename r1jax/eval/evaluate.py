"""Task evaluation with the r1jax sampler: greedy pass@1, sampled pass@1 (mean over k), pass@k, maj@k.

    report = evaluate(cfg, params, tokenizer, examples, template="compact", num_samples=4)

"pass@1 greedy" decodes at temperature 0; "pass@1 sampled" is the mean correctness over
`num_samples` completions at `temperature` (1.0 by default), the two readings R1 reports.
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
from r1jax.rewards import accuracy_reward, format_reward
from r1jax.rewards import answer_region
from r1jax.sampling import sample


@dataclasses.dataclass(frozen=True)
class EvalConfig:
  num_examples: int = 200          # held-out problems (the first N of the eval split)
  batch_size: int = 50             # prompts per sampler call
  max_prompt_len: int = 32
  max_new_tokens: int = 48
  num_samples: int = 4             # k samples per problem for sampled pass@1 / pass@k / maj@k
  temperature: float = 1.0
  seed: int = 0

  def __post_init__(self):
    for name in ("num_examples", "batch_size", "max_prompt_len", "max_new_tokens", "num_samples"):
      if getattr(self, name) < 1:
        raise ValueError(f"EvalConfig.{name}={getattr(self, name)!r}: must be >= 1")
    if not self.temperature > 0:
      raise ValueError(f"EvalConfig.temperature={self.temperature!r}: must be > 0")


def decode_completions(tokenizer, tokens, mask) -> list[str]:
  """Texts of the completion tokens where mask == 1."""
  tokens, mask = np.asarray(tokens), np.asarray(mask)
  return [tokenizer.decode([int(t) for t in row[m > 0]]) for row, m in zip(tokens, mask)]


def _generate(cfg, variables, tokenizer, batch, *, rng, num_samples, ec: EvalConfig, greedy: bool, mesh=None):
  out = sample(cfg, variables, batch["prompt_tokens"], batch["prompt_mask"], rng=rng, num_samples=num_samples,
               max_new_tokens=ec.max_new_tokens, temperature=ec.temperature, greedy=greedy,
               eos_id=tokenizer.eos_id, stop_ids=tuple(tokenizer.stop_ids), pad_id=tokenizer.pad_id, mesh=mesh)
  return decode_completions(tokenizer, out.tokens, out.mask), np.asarray(out.lengths), np.asarray(out.truncated)


def evaluate(cfg, variables, tokenizer, examples: Sequence[Mapping[str, Any]], ec: EvalConfig, *,
             template="compact", mesh=None) -> dict:
  """Evaluates `variables` on the first ec.num_examples `examples`.

  Returns:
    {"pass@1_greedy", "pass@1_sampled", "pass@{k}", "maj@{k}", "format_greedy", "format_sampled",
     "length_greedy", "length_sampled", "truncated_sampled", "num_examples", "samples": a few
     (question, greedy completion) pairs}.
  """
  examples = list(examples)[:ec.num_examples]
  if not examples:
    raise ValueError("evaluate needs at least one example")
  tmpl = get_template(template)
  prefix = response_prefix(tmpl)
  bs = min(ec.batch_size, len(examples))
  usable = len(examples) // bs * bs
  it = prompt_batches(examples[:usable], tokenizer, tmpl, batch_size=bs, max_prompt_len=ec.max_prompt_len,
                      seed=ec.seed, num_epochs=1, shuffle=False)
  key = jax.random.key(ec.seed)
  greedy_ok, greedy_fmt, greedy_len, correct, answers, fmt, lens, trunc, shown = [], [], [], [], [], [], [], [], []
  for i, batch in enumerate(it):
    texts, glen, _ = _generate(cfg, variables, tokenizer, batch, rng=key, num_samples=1, ec=ec, greedy=True,
                               mesh=mesh)
    for ex, text in zip(batch["examples"], texts):
      greedy_ok.append(accuracy_reward(text, ex))
      greedy_fmt.append(format_reward(prefix + text))
      if len(shown) < 3:
        shown.append({"question": ex["question"], "answer": ex["answer"], "completion": text})
    greedy_len.extend(glen.tolist())
    stexts, slen, strunc = _generate(cfg, variables, tokenizer, batch, rng=jax.random.fold_in(key, i),
                                     num_samples=ec.num_samples, ec=ec, greedy=False, mesh=mesh)
    k = ec.num_samples
    for j, ex in enumerate(batch["examples"]):
      group = stexts[j * k:(j + 1) * k]
      correct.append([accuracy_reward(t, ex) > 0 for t in group])
      answers.append([answer_region(t).strip() or None for t in group])   # votes: the answer text
      fmt.extend(format_reward(prefix + t) for t in group)
    lens.extend(slen.tolist())
    trunc.extend(strunc.tolist())
  summary = summarize_problems(correct, answers, ks=sorted({1, ec.num_samples}))
  return {
      "num_examples": len(greedy_ok),
      "pass@1_greedy": float(np.mean(greedy_ok)),
      "pass@1_sampled": summary["pass@1_mean"],
      **{k: v for k, v in summary.items() if k.startswith(("pass@", "maj@")) and k != "pass@1_mean"},
      "format_greedy": float(np.mean(greedy_fmt)),
      "format_sampled": float(np.mean(fmt)),
      "length_greedy": float(np.mean(greedy_len)),
      "length_sampled": float(np.mean(lens)),
      "truncated_sampled": float(np.mean(trunc)),
      "samples": shown,
  }
