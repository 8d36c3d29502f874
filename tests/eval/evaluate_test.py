"""Tests for r1jax.eval.evaluate (language metrics, per-task breakdown, reproducibility) and the
report helpers (eval table, bar chart)."""
import importlib

import jax
import numpy as np
import pytest

from r1jax.config_utils import ConfigFieldError, build
from r1jax.data import tasks
from r1jax.eval import EvalConfig, evaluate
from r1jax.eval.evaluate import score_completions
from r1jax.eval.report import eval_columns, eval_table, plot_bars
from r1jax.model import ModelConfig, init_variables
from r1jax.sampling.rollout import Rollout
from r1jax.testing import FakeTokenizer

# The module, not the function the package re-exports under the same name.
evaluate_module = importlib.import_module("r1jax.eval.evaluate")


def _ex(task, answer, question="1+1"):
  return {"task": task, "verifier": "number", "question": question, "answer": answer}


# --- score_completions: pure scoring of texts ------------------------------------------------------

def test_language_metrics_on_hand_made_completions():
  examples = [_ex("a", "5"), _ex("a", "3")]
  greedy = ["Let us add the numbers</think><answer>5</answer>",      # all Latin: 1.0
            "先 add 数字</think><answer>4</answer>"]                     # 1 Latin word of 4: 0.25
  sampled = [["add two</think><answer>5</answer>", "adding 数</think><answer>6</answer>"],  # 1.0, 0.5
             ["2+1=3</think><answer>3</answer>", "then three</think><answer>3</answer>"]]  # no words: 0, 1.0
  rep = score_completions(examples, greedy, sampled, prefix="<think>", language_target="latin")
  np.testing.assert_allclose(rep["language_greedy"], (1.0 + 0.25) / 2)
  assert rep["language_consistent_greedy"] == 0.5
  np.testing.assert_allclose(rep["language_sampled"], (1.0 + 0.5 + 0.0 + 1.0) / 4)
  # A chain of thought without words scores 0 and is not counted as consistent.
  assert rep["language_consistent_sampled"] == 0.5
  # The same texts judged against Chinese: only the Han share counts.
  zh = score_completions(examples, greedy, sampled, prefix="<think>", language_target="chinese")
  np.testing.assert_allclose(zh["language_greedy"], (0.0 + 0.75) / 2)
  assert zh["language_consistent_greedy"] == 0.0
  # Accuracy and format are unaffected by the language target; without one, no language keys.
  plain = score_completions(examples, greedy, sampled, prefix="<think>")
  assert not any(key.startswith("language") for key in plain)
  assert {key: v for key, v in rep.items() if not key.startswith("language")} == plain
  assert plain["pass@1_greedy"] == 0.5 and plain["pass@1_sampled"] == (0.5 + 1.0) / 2
  assert plain["pass@2"] == 1.0 and plain["format_greedy"] == 1.0
  # maj@2: problem 0 ties "5"/"6" -> the first ("5", correct); problem 1 votes "3" (correct).
  assert plain["maj@2"] == 1.0 and plain["num_examples"] == 2


def test_score_completions_rejects_ragged_input():
  with pytest.raises(ValueError, match="same number"):
    score_completions([_ex("a", "1")], ["x"], [["a"], ["b"]])
  with pytest.raises(ValueError, match="same number"):
    score_completions([_ex("a", "1"), _ex("a", "1")], ["x", "y"], [["a", "b"], ["c"]])


def test_unknown_language_target_fails_in_the_config():
  with pytest.raises(ConfigFieldError, match="language_target='klingon'"):
    build(EvalConfig, {"language_target": "klingon"}, "config.eval")
  assert build(EvalConfig, {"language_target": "english"}, "config.eval").language_target == "english"


# --- evaluate with a fake generator: per-task breakdown ---------------------------------------------

def _fake_rollout(cfg, variables, tokenizer, batch, *, rng, settings, rows=None, scorer=None, mesh=None):
  """Task "a" is always right, task "b" right in the first of its samples only; CoT mixes in "b"."""
  del cfg, variables, tokenizer, rng, mesh, scorer
  assert rows is not None and len(batch["examples"]) <= rows
  texts = []
  for ex in batch["examples"]:
    for g in range(settings.num_samples):
      ok = ex["task"] == "a" or g == 0
      cot = "we add them" if ex["task"] == "a" else "we 加 them"
      texts.append(f"{cot}</think><answer>{ex['answer'] if ok else 'x'}</answer>")
  n = len(texts)
  none = np.zeros((n, 1), np.int32)
  return Rollout(examples=list(batch["examples"]), prompts=[], prompt_tokens=none, prompt_mask=none, tokens=none,
                 mask=none, logprobs=none, lengths=np.full(n, 7 if settings.greedy else 9), truncated=np.zeros(n, bool),
                 texts=texts, num_samples=settings.num_samples)


def test_per_task_breakdown(monkeypatch):
  monkeypatch.setattr(evaluate_module, "rollout", _fake_rollout)
  examples = [_ex("a", "2"), _ex("b", "3"), _ex("a", "4"), _ex("b", "5")]
  ec = EvalConfig(num_examples=4, batch_size=2, num_samples=2, language_target="latin")
  rep = evaluate(None, None, FakeTokenizer(), examples, ec)
  assert rep["num_examples"] == 4
  assert rep["pass@1_greedy"] == 1.0 and rep["pass@1_sampled"] == 0.75 and rep["pass@2"] == 1.0
  assert rep["length_greedy"] == 7 and rep["length_sampled"] == 9
  assert set(rep["per_task"]) == {"a", "b"}
  a, b = rep["per_task"]["a"], rep["per_task"]["b"]
  assert a["num_examples"] == b["num_examples"] == 2
  assert a["pass@1_sampled"] == 1.0 and b["pass@1_sampled"] == 0.5
  assert a["language_consistent_sampled"] == 1.0 and b["language_consistent_sampled"] == 0.0
  np.testing.assert_allclose(b["language_greedy"], 2 / 3)                 # "we", "them" of we/加/them
  np.testing.assert_allclose(rep["language_greedy"], (a["language_greedy"] + b["language_greedy"]) / 2)
  assert "samples" not in a and len(rep["samples"]) == 3
  # One task only: no breakdown (it would repeat the top-level numbers).
  single = evaluate(None, None, FakeTokenizer(), [_ex("a", "2")] * 2, EvalConfig(num_examples=2, num_samples=2))
  assert "per_task" not in single and "language_greedy" not in single


def test_a_short_last_batch_is_evaluated_too(monkeypatch):
  monkeypatch.setattr(evaluate_module, "rollout", _fake_rollout)
  examples = [_ex("a", "2"), _ex("b", "3"), _ex("a", "4")]
  rep = evaluate(None, None, FakeTokenizer(), examples, EvalConfig(num_examples=3, batch_size=2, num_samples=2))
  assert rep["num_examples"] == 3                            # 2 + a padded batch of 1, not 2
  assert rep["per_task"]["a"]["num_examples"] == 2 and rep["per_task"]["b"]["num_examples"] == 1
  np.testing.assert_allclose(rep["pass@1_sampled"], (1 + 0.5 + 1) / 3)


# --- evaluate on a tiny model: reproducibility -------------------------------------------------------

def test_same_seed_same_report(monkeypatch):
  cfg = ModelConfig.preset("tiny")
  # init_variables' tree drawn with numpy: compiling init_variables would cost more than the evaluations.
  rs = np.random.RandomState(0)
  shapes = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  variables = jax.tree.map(lambda s: rs.normal(0.0, 0.02, s.shape).astype(s.dtype), shapes)
  tok = FakeTokenizer(vocab_size=64)
  examples = list(tasks.get("arithmetic", digits=1, ops="+").examples("test", seed=0, num=4))
  sampled = []

  def spy(*args, **kwargs):
    out = real(*args, **kwargs)
    if not kwargs["settings"].greedy:
      sampled.append(out.texts)
    return out

  real = evaluate_module.rollout
  monkeypatch.setattr(evaluate_module, "rollout", spy)
  ec = EvalConfig(num_examples=4, batch_size=2, max_prompt_len=24, max_new_tokens=6, num_samples=2,
                  language_target="latin")
  first = evaluate(cfg, variables, tok, examples, ec)
  second = evaluate(cfg, variables, tok, examples, ec)
  assert first == second
  assert sampled[:2] == sampled[2:4]
  assert sampled[0] != sampled[1]                  # each batch draws with its own key
  evaluate(cfg, variables, tok, examples, EvalConfig(**{**ec.__dict__, "seed": 1}))
  assert sampled[4:6] != sampled[:2]               # another seed, other samples


# --- report helpers ----------------------------------------------------------------------------------

def test_eval_table_and_plot_bars(tmp_path):
  reports = {
      "base": {"pass@1_greedy": 0.25, "pass@1_sampled": 0.2, "pass@1": 0.2, "pass@4": 0.5, "maj@4": 0.3,
               "format_greedy": 0.5, "format_sampled": 0.4, "length_sampled": 12.5,
               "per_task": {"x": {"pass@1_greedy": 0.5}, "y": {"pass@1_greedy": 0.0}}},
      "r1": {"pass@1_greedy": 0.75, "pass@4": 0.9, "language_consistent_greedy": 1.0,
             "language_consistent_sampled": 0.9},
  }
  cols = eval_columns(reports)
  assert cols == ["pass@1_greedy", "pass@1_sampled", "pass@4", "maj@4", "format_greedy", "format_sampled",
                  "language_consistent_greedy", "language_consistent_sampled", "length_sampled"]
  assert "language_consistent_greedy" not in eval_columns({"base": reports["base"]})
  table = eval_table(reports).splitlines()
  assert table[2].startswith("| base | 25.0% | 20.0% | 50.0% |") and table[2].endswith("| 12.5 |")
  assert table[4].startswith("| base / x | 50.0% |") and len(table) == 6
  path = tmp_path / "bars.png"
  plot_bars(reports, [c for c in cols if not c.startswith("length")], str(path), title="eval")
  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
