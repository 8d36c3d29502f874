"""The worked-solution addition corpus: steps by hand, the misconception, mode mixture, reward labels."""
import collections

from r1jax.data import get_template, tasks
from r1jax.data.corpora import addition_completion, addition_corpus, column_addition_steps, no_carry_sum
from r1jax.rewards import accuracy_reward, format_reward


def test_column_addition_by_hand():
  assert column_addition_steps(357, 468) == ["7+8=15", "5+6+1=12", "3+4+1=8"]
  assert column_addition_steps(95, 7) == ["5+7=12", "9+0+1=10"]
  assert no_carry_sum(357, 468) == 715
  assert no_carry_sum(123, 456) == 579          # no carries: the misconception is right


def test_modes_are_graded_as_intended():
  ex = next(iter(tasks.get("arithmetic", digits=3, ops="+").examples("train", seed=0, num=50)))
  a, b = ex["operands"]
  worked = addition_completion(ex, "worked")
  # The compact template opened <think>: the format is checked on "<think>" + completion.
  assert format_reward("<think>" + worked) == 1.0 and accuracy_reward(worked, ex) == 1.0
  direct = addition_completion(ex, "direct")
  assert format_reward("<think>" + direct) == 0.0                     # empty thinking fails the strict rule
  assert accuracy_reward(direct, ex) == float(no_carry_sum(a, b) == a + b)
  bare = addition_completion(ex, "bare")
  assert format_reward("<think>" + bare) == 0.0


def test_mixture_follows_weights_and_seed():
  exs = list(tasks.get("arithmetic", digits=3, ops="+").examples("train", seed=0, num=2000))
  corpus = addition_corpus(exs, get_template("compact"), seed=1)
  counts = collections.Counter(r["mode"] for r in corpus)
  assert abs(counts["worked"] / 2000 - 0.25) < 0.04 and abs(counts["direct"] / 2000 - 0.45) < 0.04
  assert corpus == addition_corpus(exs, get_template("compact"), seed=1)
  assert corpus[0]["prompt"].endswith("<think>")


def test_language_mixing_names_columns_in_two_scripts():
  from r1jax.rewards import language_consistency_reward
  ex = {"op": "+", "operands": (57, 68), "question": "What is 57 + 68?", "answer": "125", "task": "arithmetic"}
  assert addition_completion(ex, "worked", scripts=["latin", "cyrillic"]) == \
      "ones 7+8=15 десятки 5+6+1=12</think><answer>125</answer>"
  assert addition_completion(ex, "worked", scripts=["latin", "latin"]).startswith("ones 7+8=15 tens ")
  mixed = "<think>" + addition_completion(ex, "worked", scripts=["latin", "cyrillic"])
  assert language_consistency_reward(mixed, target="latin") == 0.5      # one word in each script
  assert accuracy_reward(mixed, ex) == 1.0 and format_reward(mixed) == 1.0

  exs = list(tasks.get("arithmetic", digits=2, ops="+").examples("train", seed=0, num=3000))
  corpus = addition_corpus(exs, get_template("compact"), mixing={"second_prob": (0.3, 0.7)}, seed=0)
  worked = [r for r in corpus if r["mode"] == "worked"]
  share = lambda i: sum(r["scripts"][i] == "cyrillic" for r in worked) / len(worked)
  assert abs(share(0) - 0.3) < 0.05 and abs(share(1) - 0.7) < 0.05
  assert all("scripts" not in r for r in corpus if r["mode"] != "worked")
  # Without mixing the corpus is unchanged (same draws, digits-only steps).
  plain = addition_corpus(exs[:50], get_template("compact"), seed=0)
  assert all(r["completion"][0].isdigit() for r in plain if r["mode"] == "worked")


def test_language_mixing_bad_options_name_the_key():
  import pytest
  exs = list(tasks.get("arithmetic", digits=2, ops="+").examples("train", seed=0, num=5))
  with pytest.raises(ValueError, match="mixing.second_prob"):
    addition_corpus(exs, get_template("compact"), mixing={"second_prob": (1.5,)})
  with pytest.raises(ValueError, match="mixing.second="):
    addition_corpus(exs, get_template("compact"), mixing={"second": "klingon"})
  with pytest.raises(ValueError, match="unknown keys"):
    addition_corpus(exs, get_template("compact"), mixing={"prob": 0.5})
