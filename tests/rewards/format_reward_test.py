"""Tests for r1jax.rewards.format: the R1 format reward and answer/think extraction."""
import pytest

from r1jax.rewards import answer_region, extract_answer, extract_think, format_reward

GOOD = "<think>2 + 2 is 4.</think> <answer>4</answer>"


@pytest.mark.parametrize("completion", [
    GOOD,
    "<think>a</think><answer>b</answer>",
    "\n  <think>\nmulti\nline\n</think>\n\n<answer>\n4\n</answer>\n",
])
def test_strict_accepts_exact_format(completion):
  assert format_reward(completion) == 1.0
  assert format_reward(completion, strict=False) == 1.0


@pytest.mark.parametrize("completion, lenient", [
    ("", 0.0),
    ("4", 0.0),
    ("<answer>4</answer>", 0.0),                                   # No think block.
    ("<think>x</think>", 0.0),                                     # No answer.
    ("<think>x</think><answer>  </answer>", 0.0),                  # Blank answer.
    ("<think> </think><answer>4</answer>", 1.0),                   # Blank think: lenient only.
    ("x</think><answer>4</answer>", 1.0),                          # Prompt opened <think>.
    ("Sure! <think>x</think><answer>4</answer>", 1.0),             # Text before.
    ("<think>x</think><answer>4</answer><|im_end|>", 1.0),          # Text after.
    ("<think>x</think>So: <answer>4</answer>", 1.0),               # Text between.
    ("<answer>4</answer><think>x</think>", 0.0),                   # Wrong order.
    ("<think>x<answer>4</answer></think>", 0.0),                   # Answer inside think.
    ("<think>x</think><answer>4</answer><answer>5</answer>", 0.0),  # Two answers: hedging.
    ("<think>x</think><think>y</think><answer>4</answer>", 0.0),    # Two think blocks.
    ("<think><think>x</think></think><answer>4</answer>", 0.0),     # Nested tags.
    ("<think>x</think><answer>4", 0.0),                            # Unclosed answer.
    ("<THINK>x</THINK><ANSWER>4</ANSWER>", 0.0),                   # Tags are case-sensitive.
    ("<think>x</think><answer>4</answer></answer>", 0.0),
])
def test_strict_rejects_and_lenient_tolerates(completion, lenient):
  assert format_reward(completion) == 0.0
  assert format_reward(completion, strict=False) == lenient


def test_non_str_is_a_caller_bug():
  with pytest.raises(TypeError):
    format_reward(None)


def test_extract_answer_takes_last_complete_block():
  assert extract_answer(GOOD) == "4"
  assert extract_answer("<answer>1</answer> then <answer>2</answer>") == "2"
  assert extract_answer("<answer>1</answer> <answer>2") == "1"
  assert extract_answer("no tags") is None
  assert extract_answer("</answer><answer>") is None


def test_extract_think():
  assert extract_think(GOOD) == "2 + 2 is 4."
  assert extract_think("prefilled</think><answer>4</answer>") == "prefilled"
  assert extract_think("<think>cut off at the length lim") == "cut off at the length lim"
  assert extract_think("plain text") == "plain text"


@pytest.mark.parametrize("completion, region", [
    ("<think>7</think><answer>4</answer>", "4"),
    ("<think>7</think> The answer is 4", " The answer is 4"),   # After </think>.
    ("<think>7 and 4, cut off", ""),                             # Truncated: no answer.
    ("The answer is \\boxed{4}", "The answer is \\boxed{4}"),     # No tags at all.
])
def test_answer_region(completion, region):
  assert answer_region(completion) == region
