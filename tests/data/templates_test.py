"""Tests for r1jax.data.templates."""
import pytest

from r1jax import data
from r1jax.testing.fake_tokenizer import FakeTokenizer


def test_r1_zero_is_the_paper_table_1_text():
  expected = (
      "A conversation between User and Assistant. The user asks a question, and the Assistant "
      "solves it. The assistant first thinks about the reasoning process in the mind and then "
      "provides the user with the answer. The reasoning process and answer are enclosed within "
      "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning "
      "process here </think> <answer> answer here </answer>. User: What is 2+3?. Assistant:")
  template = data.get_template("r1_zero")
  assert template("What is 2+3?") == expected
  assert data.response_prefix(template) == ""


def test_compact_opens_think():
  template = data.get_template("compact")
  assert template("2+3") == "Q: 2+3\nA: <think>"
  assert data.response_prefix(template) == "<think>"
  ids = FakeTokenizer().encode(template("2+3"))
  assert ids[-1] == 4  # <think> is one token at the end of the prompt.


def test_braces_in_question_are_literal():
  assert data.get_template("compact")("{x} {}") == "Q: {x} {}\nA: <think>"


def test_render_chat_chatml():
  messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2+2?"}]
  assert data.render_chat(messages) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n"
      "<|im_start|>assistant\n")
  assert data.render_chat(messages[:1], add_generation_prompt=False) == (
      "<|im_start|>system\nBe brief.<|im_end|>\n")


def test_chat_templates():
  assert data.get_template("chatml")("2+2?") == (
      "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
  think = data.get_template("chatml_think")
  assert think("2+2?").endswith("<|im_start|>assistant\n<think>\n")
  assert data.response_prefix(think) == "<think>\n"
  sys = data.ChatTemplate("x", system="S")
  assert sys("q").startswith("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nq")


@pytest.mark.parametrize("message, match", [
    ({"role": "tool", "content": "x"}, "role"),
    ({"role": "user", "content": 3}, "content"),
    ({"content": "x"}, "role"),
])
def test_render_chat_rejects_bad_messages(message, match):
  with pytest.raises(ValueError, match=match):
    data.render_chat([message])


def test_registry():
  assert {"r1_zero", "compact", "chatml", "chatml_think"} <= set(data.TEMPLATES)
  fn = lambda q: q + "?"  # noqa: E731
  assert data.get_template(fn) is fn
  with pytest.raises(ValueError, match="unknown prompt template 'nope'.*compact"):
    data.get_template("nope")
