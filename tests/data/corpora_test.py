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
