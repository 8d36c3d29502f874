"""Rejection sampling: the keep rule, dedupe and preference, resume after a kill, skip when finished, config
errors, and the experiment on an exported model.

Two samplers: the tiny random model (real keys, real shapes: resume must reproduce it byte for byte) and a
scripted one that answers every prompt with the same hand-written completions, so the keep rule is tested
on traces that the rewards both accept and reject.
"""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from configs import rejection_sample as rejection_config
from r1jax.checkpoint import save_model
from r1jax.config_utils import ConfigFieldError, build
from r1jax.data import SentencePieceTokenizer, get_template, response_prefix, tasks
from r1jax.data.jsonl import JsonlError
from r1jax.model import init_variables
from r1jax.rewards import combine
from r1jax.stages import rejection, standalone
from r1jax.stages.fingerprint import FingerprintMismatch
from r1jax.stages.rejection import RejectionConfig, read_traces, rejection_sample, select
from r1jax.sampling import SampleOutput
from r1jax.sampling import rollout as rollout_lib
from r1jax.testing import FakeTokenizer, tiny_model_config

TOK = FakeTokenizer(vocab_size=64)                     # the scripted sampler's
# Every real-model run here (library and experiment) uses one model config, the SentencePiece tokenizer
# the experiment needs and the same shapes, B=2 prompts x K=4 samples, P=24, N=8: one sampler compilation.
MODEL = tiny_model_config(vocab_size=296)
SMALL = dict(num_samples=4, batch_size=2, max_prompt_len=24, max_new_tokens=8)


@pytest.fixture(scope="module")
def sp():
  texts = [f"Q: What is {a} + {b}?\nA: <think> {a} plus {b} </think> <answer>{a + b}</answer>"
           for a in range(10) for b in range(10)]
  tok = SentencePieceTokenizer.train(texts, vocab_size=MODEL.vocab_size)
  assert tok.vocab_size == MODEL.vocab_size
  return tok


@pytest.fixture(scope="module")
def variables():
  return init_variables(MODEL, jax.random.key(0))


def _examples(num=5):
  return list(tasks.get("arithmetic", digits=1, ops="+").examples("train", seed=0, num=num))


def _lines(path):
  with open(path, "rb") as f:
    return f.read()


def _check_counts(stats):
  for c in [*stats["tasks"].values(), stats["all"]]:
    assert 0 <= c["kept"] <= c["passed"] <= c["samples"]
    assert c["prompts_with_kept"] <= c["prompts"] and c["kept"] >= c["prompts_with_kept"]
    assert c["acceptance_rate"] == pytest.approx(c["passed"] / c["samples"])
    assert c["prompt_coverage"] == pytest.approx(c["prompts_with_kept"] / c["prompts"])
  for key in ("prompts", "samples", "passed", "kept", "prompts_with_kept"):
    assert stats["all"][key] == sum(c[key] for c in stats["tasks"].values())


# ------------------------------------------------------------------------------------------ selection
def test_select_prefers_the_shortest_and_drops_duplicates():
  texts = ["a long correct one", "ok", "o k", "  ok \n", "rejected", "mid one"]
  tokens = [18, 3, 3, 6, 1, 7]
  passed = [True, True, True, True, False, True]
  # "  ok \n" normalises to "ok": a duplicate of the shorter index 1. The rejected shortest never appears.
  assert select(texts, tokens, passed, max_per_prompt=10) == [1, 2, 5, 0]
  assert select(texts, tokens, passed, max_per_prompt=2) == [1, 2]
  assert select(texts, tokens, [False] * 6, max_per_prompt=3) == []


def test_select_random_is_seeded_and_obeys_the_rule():
  texts = [f"t{i % 4}" for i in range(12)]            # 4 distinct texts, each 3 times
  passed = [i % 3 != 0 for i in range(12)]
  pick = lambda seed: select(texts, [1] * 12, passed, max_per_prompt=12, prefer="random",
                             rng=np.random.default_rng(seed))
  assert pick(0) == pick(0)
  for seed in range(5):
    kept = pick(seed)
    assert all(passed[i] for i in kept)
    assert len({texts[i] for i in kept}) == len(kept) == 4
  with pytest.raises(ValueError, match="rng"):
    select(texts, [1] * 12, passed, max_per_prompt=1, prefer="random")


# ------------------------------------------------------------------------------------------ scripted sampler
def _scripted(answers, texts_for):
  """A stand-in for r1jax.sampling.sample: completion k of every prompt is texts_for(answer)[k] + eos."""

  def fake_sample(cfg, params, prompt_tokens, prompt_mask, *, num_samples, max_new_tokens, pad_id, **kw):
    del cfg, params, kw
    rows = []
    for toks, m in zip(np.asarray(prompt_tokens), np.asarray(prompt_mask)):
      completions = texts_for(answers[tuple(toks[m > 0])])
      assert len(completions) == num_samples
      rows += [TOK.encode(t) + [TOK.eos_id] for t in completions]
    n = max_new_tokens
    assert all(len(r) <= n for r in rows)
    tokens = np.full((len(rows), n), pad_id, np.int32)
    mask = np.zeros((len(rows), n), np.int32)
    for i, r in enumerate(rows):
      tokens[i, :len(r)], mask[i, :len(r)] = r, 1
    return SampleOutput(tokens=tokens, logprobs=np.zeros((len(rows), n), np.float32), mask=mask,
                        lengths=mask.sum(-1), truncated=np.zeros(len(rows), bool))

  return fake_sample


def _completions(ans):
  wrong = str(int(ans) + 1)
  return [
      f" add them up, it is {ans} </think> <answer>{ans}</answer>",   # correct, formatted, longest
      f" {ans} </think> <answer>{ans}</answer>",                      # correct, formatted, shortest
      f"  {ans}   </think>\n<answer>{ans}</answer>",                  # the same up to whitespace
      f" {ans} </think> <answer>{wrong}</answer>",                    # formatted, wrong
      f" {ans} </think> {ans}",                                       # correct, no answer tags
      "",                                                             # stops at once
  ]


@pytest.fixture
def scripted(monkeypatch):
  examples = _examples(5)
  template = get_template("compact")
  answers = {tuple(TOK.encode(template(ex["question"]), add_bos=True)): ex["answer"] for ex in examples}
  monkeypatch.setattr(rollout_lib, "sample", _scripted(answers, _completions))
  return examples


def _rescore(rec, rc):
  prefix = response_prefix(get_template(rc.template))
  total, parts = combine(prefix + rec["completion"], rec, dict(rc.reward_weights))
  assert total == pytest.approx(rec["reward"]) and parts == pytest.approx(rec["rewards"])
  return rejection.passes(total, parts, rec["completion"], rc)


@pytest.mark.parametrize("max_per_prompt", [1, 2, 6])
def test_strict_rule_keeps_only_correct_formatted_distinct_shortest(scripted, tmp_path, max_per_prompt):
  rc = RejectionConfig(num_samples=6, batch_size=2, max_prompt_len=24, max_new_tokens=48,
                       max_per_prompt=max_per_prompt)
  out = tmp_path / "traces.jsonl"
  stats = rejection_sample(MODEL, None, TOK, scripted, rc, out, source="scripted", verbose=False)
  recs = read_traces(out)
  _check_counts(stats)
  a = stats["all"]
  assert (a["prompts"], a["samples"], a["passed"]) == (5, 30, 15)     # samples 0, 1, 2 pass for each prompt
  assert a["kept"] == len(recs) == 5 * min(max_per_prompt, 2)         # 2 is a duplicate of 1
  assert a["acceptance_rate"] == pytest.approx(0.5) and a["prompt_coverage"] == 1.0
  by_question = {}
  for rec in recs:
    assert _rescore(rec, rc)
    assert rec["rewards"] == {"accuracy": 1.0, "format": 1.0} and rec["reward"] == 2.0
    assert rec["prompt"] == get_template("compact")(rec["question"])
    assert rec["source"] == "scripted" and rec["task"] == "arithmetic"
    assert rec["num_tokens"] == len(TOK.encode(rec["completion"])) + 1     # + the eos it stopped with
    by_question.setdefault(rec["question"], []).append(rec["completion"])
  for ex in scripted:
    kept = by_question[ex["question"]]
    assert kept[0] == _completions(ex["answer"])[1]                   # the shortest correct trace first
    assert len({" ".join(k.split()) for k in kept}) == len(kept)


def test_min_total_and_permissive_rules(scripted, tmp_path):
  # Total = accuracy + 0.5 format >= 1.5 accepts the same three samples as the strict rule.
  rc = RejectionConfig(num_samples=6, batch_size=4, max_prompt_len=24, max_new_tokens=48, min_rewards=(),
                       reward_weights=(("accuracy", 1.0), ("format", 0.5)), min_total=1.5, max_per_prompt=6)
  stats = rejection_sample(MODEL, None, TOK, scripted, rc, tmp_path / "a.jsonl", verbose=False)
  assert (stats["all"]["passed"], stats["all"]["kept"]) == (15, 10)
  assert all(_rescore(r, rc) for r in read_traces(tmp_path / "a.jsonl"))
  # Anything goes but the empty completion: five distinct non-empty ones per prompt.
  rc = dataclasses.replace(rc, min_total=float("-inf"), prefer="random")
  stats = rejection_sample(MODEL, None, TOK, scripted, rc, tmp_path / "b.jsonl", verbose=False)
  assert (stats["all"]["passed"], stats["all"]["kept"]) == (25, 20)
  _check_counts(stats)


@pytest.mark.parametrize("target, prompts, kept", [(3, 2, 4), (4, 2, 4), (5, 4, 8), (100, 5, 10)])
def test_target_count_stops_at_the_batch_that_reaches_it(scripted, tmp_path, monkeypatch, target, prompts, kept):
  # Two distinct passing traces per prompt, two prompts per batch: 4 traces a batch (the last batch: 2).
  rc = RejectionConfig(num_samples=6, batch_size=2, max_prompt_len=24, max_new_tokens=48, max_per_prompt=2,
                       target_kept=target)
  out = tmp_path / "t.jsonl"
  real, calls = rejection.rollout, []
  monkeypatch.setattr(rejection, "rollout", lambda *a, **kw: calls.append(1) or real(*a, **kw))
  stats = rejection_sample(MODEL, None, TOK, scripted, rc, out, verbose=False)
  _check_counts(stats)
  assert (stats["all"]["prompts"], stats["all"]["kept"], len(read_traces(out))) == (prompts, kept, kept)
  assert len(calls) == -(-prompts // 2)                # no batch is sampled past the target
  assert stats["target_reached"] == (kept >= target)
  assert [r["question"] for r in read_traces(out)][::2] == [ex["question"] for ex in scripted[:prompts]]


def test_target_count_resumes_to_the_same_stop(scripted, tmp_path, monkeypatch):
  rc = RejectionConfig(num_samples=6, batch_size=2, max_prompt_len=24, max_new_tokens=48, max_per_prompt=2,
                       target_kept=5)
  straight = tmp_path / "straight.jsonl"
  first = rejection_sample(MODEL, None, TOK, scripted, rc, straight, verbose=False)
  # Killed after the second batch's records and progress were written, before the stats: the target is met,
  # so the rerun samples nothing more and finishes with the same traces.
  killed = tmp_path / "killed.jsonl"
  real_write = rejection.write_json

  def dies_writing_the_stats(path, obj):
    if str(path).endswith(".stats.json"):
      raise KeyboardInterrupt("killed")
    return real_write(path, obj)

  monkeypatch.setattr(rejection, "write_json", dies_writing_the_stats)
  with pytest.raises(KeyboardInterrupt):
    rejection_sample(MODEL, None, TOK, scripted, rc, killed, verbose=False)
  monkeypatch.setattr(rejection, "write_json", real_write)

  def no_sampling(*a, **kw):
    raise AssertionError("the target was met: nothing more to sample")

  monkeypatch.setattr(rejection, "rollout", no_sampling)
  assert rejection_sample(MODEL, None, TOK, scripted, rc, killed, verbose=False)["all"] == first["all"]
  assert _lines(killed) == _lines(straight)


# ------------------------------------------------------------------------------------------ the real sampler
def test_random_model_end_to_end_keeps_and_rejects(variables, sp, tmp_path):
  ex = _examples(5)
  permissive = RejectionConfig(**SMALL, min_rewards=(), max_per_prompt=2)
  stats = rejection_sample(MODEL, variables, sp, ex, permissive, tmp_path / "p.jsonl", verbose=False)
  recs = read_traces(tmp_path / "p.jsonl")
  _check_counts(stats)
  assert stats["all"]["samples"] == 20 and 0 < len(recs) == stats["all"]["kept"] <= 10
  for rec in recs:
    assert _rescore(rec, permissive) and rec["completion"].strip()
    assert "\x00" not in rec["completion"] and 1 <= rec["num_tokens"] <= SMALL["max_new_tokens"]
  # The R1 rule on an untrained model: every sample is rejected, and the JSONL is empty but valid.
  strict = RejectionConfig(**SMALL)
  stats = rejection_sample(MODEL, variables, sp, ex, strict, tmp_path / "s.jsonl", verbose=False)
  _check_counts(stats)
  assert stats["all"]["samples"] == 20 and stats["all"]["passed"] == stats["all"]["kept"] == 0
  assert read_traces(tmp_path / "s.jsonl") == []


def test_interrupted_run_resumes_to_the_same_bytes(variables, sp, tmp_path, monkeypatch):
  ex = _examples(5)                                    # 3 batches of 2, the last one partial
  rc = RejectionConfig(**SMALL, min_rewards=(), max_per_prompt=3, prefer="random")
  straight = tmp_path / "straight.jsonl"
  rejection_sample(MODEL, variables, sp, ex, rc, straight, verbose=False)

  killed = tmp_path / "killed.jsonl"
  real, calls = rejection.rollout, []

  def dies_on_the_third_batch(*args, **kw):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt("killed")
    return real(*args, **kw)

  monkeypatch.setattr(rejection, "rollout", dies_on_the_third_batch)
  with pytest.raises(KeyboardInterrupt):
    rejection_sample(MODEL, variables, sp, ex, rc, killed, verbose=False)
  assert len(read_traces(straight)) > 0
  with open(str(killed) + ".progress.json") as f:
    progress = json.load(f)
  assert progress["batches_done"] == 2 and progress["bytes"] == os.path.getsize(killed)
  assert len(read_traces(killed)) == progress["tasks"]["arithmetic"]["kept"] > 0    # valid between batches
  assert not os.path.exists(str(killed) + ".stats.json")
  # A kill while writing batch 3: one whole record and half of the next reached the disk.
  with open(killed, "ab") as f:
    f.write(b'{"prompt": "p", "completion": "c"}\n{"prompt": "Q: What is 1 + ')
  with pytest.raises(JsonlError, match=f"{killed}:\\d+: malformed JSON"):
    read_traces(killed)

  monkeypatch.setattr(rejection, "rollout", real)
  stats = rejection_sample(MODEL, variables, sp, ex, rc, killed, verbose=False)
  assert _lines(killed) == _lines(straight)
  assert len(read_traces(killed)) == stats["all"]["kept"]
  assert stats["all"]["prompts"] == 5
  assert not os.path.exists(str(killed) + ".progress.json")


def test_finished_stage_is_skipped_and_a_changed_config_refused(scripted, tmp_path, monkeypatch):
  rc = RejectionConfig(num_samples=6, batch_size=2, max_prompt_len=24, max_new_tokens=48)
  out = tmp_path / "t.jsonl"
  first = rejection_sample(MODEL, None, TOK, scripted, rc, out, verbose=False)
  before = _lines(out)

  def no_sampling(*a, **kw):
    raise AssertionError("a finished stage must not sample")

  monkeypatch.setattr(rejection, "rollout", no_sampling)
  assert rejection_sample(MODEL, None, TOK, scripted, rc, out, verbose=False) == first
  assert _lines(out) == before
  with pytest.raises(FingerprintMismatch, match=r"t.jsonl.stats.json was made under another config .*: "
                     r"config.max_per_prompt: 1 -> 2\. Delete it"):
    rejection_sample(MODEL, None, TOK, scripted, dataclasses.replace(rc, max_per_prompt=2), out, verbose=False)
  with pytest.raises(FingerprintMismatch, match=r"examples_sha256: .* -> "):
    rejection_sample(MODEL, None, TOK, scripted[:4] + _examples(6)[5:], rc, out, verbose=False)
  # The model is named by its weights, not its path: another source path with the same weights is the same
  # stage; other weights (model_id, or the digest of `variables`) are refused, as is another tokenizer.
  assert rejection_sample(MODEL, None, TOK, scripted, rc, out, verbose=False, source="/elsewhere") == first
  with pytest.raises(FingerprintMismatch, match=r"model: .* -> \"sha256:other\""):
    rejection_sample(MODEL, None, TOK, scripted, rc, out, verbose=False, model_id="sha256:other")
  with pytest.raises(FingerprintMismatch, match=r"tokenizer: "):
    rejection_sample(MODEL, None, FakeTokenizer(vocab_size=TOK.vocab_size + 1), scripted, rc, out, verbose=False)


# ------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value, match", [
    ("num_samples", 0, r"RejectionConfig.num_samples=0"),
    ("max_per_prompt", 0, r"RejectionConfig.max_per_prompt=0"),
    ("target_kept", -1, r"RejectionConfig.target_kept=-1"),
    ("prefer", "longest", r"RejectionConfig.prefer='longest'"),
    ("top_p", 0.0, r"RejectionConfig.top_p=0.0"),
    ("temperature", -1.0, r"RejectionConfig.temperature=-1.0"),
    ("reward_weights", (("accurracy", 1.0),), r"RejectionConfig.reward_weights: unknown reward 'accurracy'"),
    ("min_rewards", (("language_consistency", 1.0),), r"min_rewards: 'language_consistency' needs a non-zero"),
    ("template", "nope", r"unknown prompt template 'nope'"),
])
def test_config_errors_name_the_field(field, value, match):
  with pytest.raises(ConfigFieldError, match=match):
    build(RejectionConfig, {field: value}, "config.rejection")


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_experiment_config_validates(arg):
  c = rejection_config.get_config(arg)
  rc, task = standalone.validate_rejection_sample(c)
  assert rc.template == c.template and task.name == c.task.name
  c.template = "r1_zero"                               # one knob: the sampled and written prompts agree
  assert standalone.validate_rejection_sample(c)[0].template == "r1_zero"
  c.rejection.prefer = "longest"
  with pytest.raises(ConfigFieldError, match="config.rejection: RejectionConfig.prefer"):
    standalone.validate_rejection_sample(c)


# ------------------------------------------------------------------------------------------ experiment
def test_experiment_run_on_an_exported_model(variables, sp, tmp_path):
  tok_path, model_dir = str(tmp_path / "tok.model"), str(tmp_path / "model")
  sp.save(tok_path)
  save_model(model_dir, MODEL, variables, metadata={"stage": "test"})
  c = rejection_config.get_config("runlocal")
  c.task.digits = 1
  c.num_problems = 3
  c.rejection.update(dict(SMALL, min_rewards=(), max_per_prompt=1))
  c.model, c.tokenizer = model_dir, tok_path
  stats = standalone.run_rejection_sample(c, str(tmp_path / "out"))
  out = str(tmp_path / "out" / "traces.jsonl")              # the pipeline's rs_* layout
  _check_counts(stats)
  assert stats["source"] == model_dir and stats["all"]["prompts"] == 3 and stats["all"]["samples"] == 12
  recs = read_traces(out)
  assert len(recs) == stats["all"]["kept"] > 0
  assert all(r["source"] == model_dir and r["prompt"].endswith("<think>") for r in recs)
  assert sorted(os.listdir(tmp_path / "out")) == ["traces.jsonl", "traces.jsonl.stats.json"]   # progress: removed
  # A model whose vocabulary is too small for the tokenizer fails before its weights load.
  small = str(tmp_path / "small")
  save_model(small, tiny_model_config(), {"params": {"w": np.zeros(1, np.float32)}})
  c.model = small
  with pytest.raises(ValueError, match="not the tokenizer it was trained with"):
    standalone.run_rejection_sample(c, str(tmp_path / "x"))
  assert not (tmp_path / "x").exists()
