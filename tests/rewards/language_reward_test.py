"""Tests for r1jax.rewards.language: word shares per script, against hand counts."""
import pytest

from r1jax.rewards import language_consistency_reward, script_word_counts


@pytest.mark.parametrize("text, counts", [
    ("The sum is 12.", {"latin": 3}),                         # "12" and "." are not words.
    ("Let x be 2", {"latin": 2}),                             # "x": one-letter words don't count.
    ("Let x be 数学 and Пусть", {"latin": 3, "han": 2, "cyrillic": 1}),
    ("我们 compute 面积", {"han": 4, "latin": 1}),              # Each Han character is a word.
    ("これは test です", {"hiragana": 5, "latin": 1}),
    ("カタカナ", {"katakana": 4}),
    ("한국어 문장 test", {"hangul": 2, "latin": 1}),
    ("Ελληνικά και English", {"greek": 2, "latin": 1}),
    ("café naïve", {"latin": 2}),                             # Precomposed accents.
    ("cafe\u0301 nai\u0308ve", {"latin": 2}),                 # Combining marks join the word.
    ("नमस्ते दुनिया", {"devanagari": 2}),                        # Vowel signs are marks.
    ("Moscowмосква", {"latin": 1, "cyrillic": 1}),            # A script change splits a word.
    ("𝑥𝑦 ℝℝ and π θ", {"latin": 1}),                          # Math letters are no script.
    ("", {}), ("123 + 456 = 579", {}),
    # Invisible characters and dots inside a word do not split it into uncounted one-letter words.
    ("ones д\u200bе\u200bс\u200bя\u200bт\u200bк\u200bи", {"latin": 1, "cyrillic": 1}),
    ("ones д\u200dе\u200cс\u2060я\ufeffт\u00adк\u200bи", {"latin": 1, "cyrillic": 1}),
    ("ones д.е.с.я.т.к.и", {"latin": 1, "cyrillic": 1}),
    ("te\u200bn\u200bs", {"latin": 1}),
    ("e.g. well-known it's", {"latin": 3}),
    ("x.y", {"latin": 1}), ("x. y", {}),                     # ". " ends a word; one letter is a symbol
    ("tens-десятки", {"latin": 1, "cyrillic": 1}),          # a connector between scripts joins nothing
    ("a..b", {}),                                            # two dots end the word
])
def test_script_word_counts(text, counts):
  assert dict(script_word_counts(text)) == counts


@pytest.mark.parametrize("completion, target, share", [
    ("<think>The area is 数学 big</think><answer>4</answer>", "latin", 4 / 6),
    ("<think>The area is 数学 big</think><answer>4</answer>", "chinese", 2 / 6),
    ("<think>The area is 数学 big</think><answer>4</answer>", ("latin", "han"), 1.0),
    ("<think>これは test です</think>", "japanese", 5 / 6),
    ("<think>これは test です</think>", "english", 1 / 6),
    ("<think>Пусть x равно two</think>", "russian", 2 / 3),
    ("<think>only English words here</think><answer>数学</answer>", "latin", 1.0),  # Not the answer.
    ("prefilled think 数</think><answer>x</answer>", "latin", 2 / 3),  # Before </think>.
    ("no tags at all 数", "latin", 4 / 5),
    ("<think>12 + 30 = 42</think><answer>42</answer>", "latin", 0.0),  # No words.
    ("<think></think><answer>42</answer>", "latin", 0.0),
    ("<think>ones 9+5=14 д\u200bе\u200bс\u200bя\u200bт\u200bк\u200bи 6+9+1=16</think>", "latin", 0.5),
    ("<think>ones 9+5=14 д.е.с.я.т.к.и 6+9+1=16</think>", "latin", 0.5),
])
def test_language_consistency_reward(completion, target, share):
  assert language_consistency_reward(completion, target=target) == pytest.approx(share)


def test_unknown_target_is_a_config_error():
  with pytest.raises(ValueError, match="unknown language target"):
    language_consistency_reward("hello world", target="klingon")
