"""The rollout path (prompts -> sample -> decode -> score): the short-batch rule, what stays on device, the
scores, and group selection."""
import jax
import numpy as np
import pytest

from r1jax.data import tasks
from r1jax.data.pipeline import prompt_batches
from r1jax.model import init_variables
from r1jax.rewards import combine
from r1jax.sampling import sample
from r1jax.sampling.rollout import (RewardScorer, RolloutSettings, concat, decode_completions, pad_prompts, rollout,
                                    select_groups)
from r1jax.testing import FakeTokenizer, tiny_model_config

TOK = FakeTokenizer(vocab_size=64)
CFG = tiny_model_config(vocab_size=64)
SETTINGS = RolloutSettings(num_samples=2, max_new_tokens=6)


@pytest.fixture(scope="module")
def variables():
  return init_variables(CFG, jax.random.key(0))


@pytest.fixture(scope="module")
def batches():
  examples = list(tasks.get("arithmetic", digits=1, ops="+").examples("train", seed=0, num=7))
  return list(prompt_batches(examples, TOK, "compact", batch_size=4, max_prompt_len=16, seed=0, num_epochs=1,
                             shuffle=False, drop_remainder=False))


def test_a_short_batch_is_padded_to_rows_and_its_padding_dropped(variables, batches):
  short = batches[-1]
  assert len(short["examples"]) == 3
  key = jax.random.key(1)
  r = rollout(CFG, variables, TOK, short, rng=key, settings=SETTINGS, rows=4)
  # The sampler ran on the padded batch: the real rows are that call's first 3 * G rows, unchanged.
  tokens, mask = pad_prompts(short, 4)
  assert tokens.shape[0] == 4 and (tokens[3] == tokens[0]).all()
  full = sample(CFG, variables, tokens, mask, rng=key, num_samples=2, max_new_tokens=6, eos_id=TOK.eos_id,
                stop_ids=tuple(TOK.stop_ids), pad_id=TOK.pad_id)
  np.testing.assert_array_equal(np.asarray(r.tokens), np.asarray(full.tokens)[:6])
  np.testing.assert_array_equal(np.asarray(r.logprobs), np.asarray(full.logprobs)[:6])
  np.testing.assert_array_equal(r.lengths, np.asarray(full.lengths)[:6])
  assert r.num_prompts == 3 and len(r.texts) == 6 and r.examples == short["examples"]
  assert r.texts == decode_completions(TOK, np.asarray(full.tokens)[:6], np.asarray(full.mask)[:6])
  # Prompt j's rows hold prompt j, G times; the update's arrays are device arrays.
  np.testing.assert_array_equal(np.asarray(r.prompt_tokens), np.repeat(np.asarray(short["prompt_tokens"]), 2, 0))
  for name in ("prompt_tokens", "prompt_mask", "tokens", "mask", "logprobs"):
    assert isinstance(getattr(r, name), jax.Array), name
  assert r.rewards is None and r.scores is None
  with pytest.raises(ValueError, match="does not fit in rows=2"):
    pad_prompts(short, 2)


def test_scores_are_the_rewards_of_prefix_plus_completion(variables, batches):
  weights = {"accuracy": 1.0, "format": 0.5}
  scorer = RewardScorer(weights=weights, prefix="<think>")
  r = rollout(CFG, variables, TOK, batches[0], rng=jax.random.key(2), settings=SETTINGS, scorer=scorer)
  for i, text in enumerate(r.texts):
    total, parts = combine("<think>" + text, r.examples[i // 2], weights)
    assert r.scores[i] == (total, parts)
    assert r.rewards[i] == np.float32(total)
    for name in weights:
      assert r.parts[name][i] == np.float32(parts.get(name, 0.0))
  # Hand-written completions: a correct, formatted answer scores 1 + 0.5; a bare wrong one 0.
  ex = {"task": "arithmetic", "question": "What is 2 + 3?", "answer": "5"}
  (good, _), (bad, _) = scorer([" 2+3=5 </think><answer>5</answer>", "7"], [ex, ex])
  assert (good, bad) == (1.5, 0.0)


def test_select_and_concat_keep_whole_groups_on_device(variables, batches):
  scorer = RewardScorer(weights={"accuracy": 1.0})
  a = rollout(CFG, variables, TOK, batches[0], rng=jax.random.key(3), settings=SETTINGS, scorer=scorer)
  b = select_groups(a, [2, 0])
  assert b.examples == [a.examples[2], a.examples[0]]
  assert b.texts == a.texts[4:6] + a.texts[0:2]
  np.testing.assert_array_equal(np.asarray(b.tokens), np.asarray(a.tokens)[[4, 5, 0, 1]])
  np.testing.assert_array_equal(b.parts["accuracy"], a.parts["accuracy"][[4, 5, 0, 1]])
  assert b.scores == [a.scores[i] for i in (4, 5, 0, 1)]
  assert isinstance(b.tokens, jax.Array) and isinstance(b.logprobs, jax.Array)
  c = concat(b, select_groups(a, [3]))
  assert c.num_prompts == 3 and len(c.texts) == 6 and c.texts[4:] == a.texts[6:8]
  np.testing.assert_array_equal(np.asarray(c.prompt_tokens)[4:], np.asarray(a.prompt_tokens)[6:8])
  assert concat(None, b) is b
  assert select_groups(a, []).num_prompts == 0


def test_overlong_is_scored_from_token_counts_and_checked_in_configs():
  from r1jax.rewards import overlong_penalty
  from r1jax.sampling.rollout import check_reward_names
  from r1jax.stages.grpo import RLStageConfig
  ex = {"task": "arithmetic", "question": "What is 2 + 3?", "answer": "5"}
  scorer = RewardScorer(weights={"accuracy": 1.0, "overlong": 1.0}, options={"overlong": {"buffer_len": 4}},
                        max_new_tokens=10)
  text = " 2+3=5 </think><answer>5</answer>"
  scores = scorer([text] * 4, [ex] * 4, lengths=[5, 6, 8, 10])
  # max_len defaults to the budget (10): the ramp covers lengths 7..10, hand-computed values below.
  assert [p["overlong"] for _, p in scores] == [0.0, 0.0, -0.5, -1.0]
  assert [t for t, _ in scores] == [1.0, 1.0, 0.5, 0.0]
  assert scores[2][1]["overlong"] == overlong_penalty(8, max_len=10, buffer_len=4)
  with pytest.raises(ValueError, match="need the completions' token counts"):
    scorer([text], [ex])
  assert RewardScorer(weights={"accuracy": 1.0})([text], [ex]) == [(1.0, {"accuracy": 1.0})]   # no lengths needed
  # Config time: unknown names and bad options fail before any sampling.
  RLStageConfig(reward_weights=(("accuracy", 1.0), ("overlong", 0.5)), reward_options=(("overlong", (("buffer_len", 8),)),))
  with pytest.raises(ValueError, match=r"RLStageConfig.reward_options\['overlong'\]: unknown option\(s\) \['buffer'\]"):
    RLStageConfig(reward_weights=(("overlong", 1.0),), reward_options=(("overlong", (("buffer", 8),)),))
  with pytest.raises(ValueError, match="buffer_len=99"):
    check_reward_names("X", (("overlong", 1.0),), (("overlong", (("buffer_len", 99),)),), 48)
  with pytest.raises(ValueError, match="X.reward_weights: unknown reward 'lenght'"):
    check_reward_names("X", (("lenght", 1.0),), (), 48)
