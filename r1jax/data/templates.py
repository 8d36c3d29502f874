"""Prompt templates: question text -> the prompt string the policy continues.

A template is any callable `question -> prompt`. The named ones are `PromptTemplate`s, which also
record `response_prefix`: the part of the expected response that the prompt already opened (the
compact template ends in "<think>"), so a format reward can check `response_prefix + completion`
against the full `<think> ... </think> <answer> ... </answer>` pattern.

    template = get_template("r1_zero")          # DeepSeek-R1 paper, Table 1
    prompt = template("What is 2 + 3?")

Names: "r1_zero" (faithful Table 1 text), "compact" (a few tokens, for tiny CPU models),
"chatml" / "chatml_think" (Qwen2/2.5-style chat, for HF checkpoints). `render_chat` renders a
whole conversation in the ChatML format without Jinja.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

from r1jax.data.tokenizer import THINK_OPEN

# DeepSeek-R1 paper (arXiv:2501.12948), Table 1, verbatim; "prompt" there is our {question}.
R1_ZERO_FORMAT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant "
    "solves it. The assistant first thinks about the reasoning process in the mind and then "
    "provides the user with the answer. The reasoning process and answer are enclosed within "
    "<think> </think> and <answer> </answer> tags, respectively, i.e., <think> reasoning process "
    "here </think> <answer> answer here </answer>. User: {question}. Assistant:"
)
# For tiny models: ~8 template tokens instead of ~100, and the prompt opens <think> itself so the
# model doesn't have to learn to emit it before any reward signal arrives.
COMPACT_FORMAT = "Q: {question}\nA: " + THINK_OPEN

CHAT_ROLES = ("system", "user", "assistant")
_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """A named `str.format` template with a single `{question}` field.

  Attributes:
    name: registry name.
    format: the template text; `{question}` is replaced by the question.
    response_prefix: text of the response already present at the end of the prompt (e.g.
      "<think>"); prepend it to a completion before checking the response format.
  """
  name: str
  format: str
  response_prefix: str = ""

  def __call__(self, question: str) -> str:
    # format() only interprets braces in the template, so braces inside the question are safe.
    return self.format.format(question=question)


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
  """Wraps the question as one user message (after an optional system message) in ChatML.

  Attributes:
    name: registry name.
    system: optional system message.
    response_prefix: text that opens the assistant turn (e.g. "<think>\\n" as R1-Distill models
      expect); it ends the prompt and should be prepended to the completion for format checks.
  """
  name: str
  system: str | None = None
  response_prefix: str = ""

  def __call__(self, question: str) -> str:
    messages = [{"role": "system", "content": self.system}] if self.system is not None else []
    messages.append({"role": "user", "content": question})
    return render_chat(messages, add_generation_prompt=True) + self.response_prefix


def render_chat(messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
  """Renders messages in the ChatML format used by Qwen2/Qwen2.5/Qwen3 chat models.

      <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\n

  Matches the Hugging Face chat templates of those models for plain text messages without tools,
  except that Qwen2/2.5 insert a default system message when none is given: pass it explicitly
  (e.g. "You are a helpful assistant.") to match them token for token. Qwen3 adds none.

  Args:
    messages: [{"role": "system"|"user"|"assistant", "content": str}, ...].
    add_generation_prompt: end with an open assistant turn for the model to continue.

  Returns:
    The rendered conversation.
  """
  parts = []
  for i, m in enumerate(messages):
    role, content = m.get("role"), m.get("content")
    if role not in CHAT_ROLES:
      raise ValueError(f"message {i}: role must be one of {CHAT_ROLES}, got {role!r}")
    if not isinstance(content, str):
      raise ValueError(f"message {i}: content must be a str, got {type(content).__name__}")
    parts.append(f"{_IM_START}{role}\n{content}{_IM_END}\n")
  if add_generation_prompt:
    parts.append(f"{_IM_START}assistant\n")
  return "".join(parts)


TEMPLATES: dict[str, Callable[[str], str]] = {
    t.name: t for t in (
        PromptTemplate("r1_zero", R1_ZERO_FORMAT),
        PromptTemplate("compact", COMPACT_FORMAT, response_prefix=THINK_OPEN),
        ChatTemplate("chatml"),
        ChatTemplate("chatml_think", response_prefix=THINK_OPEN + "\n"),
    )
}


def get_template(name_or_fn: str | Callable[[str], str]) -> Callable[[str], str]:
  """Returns the template registered under `name_or_fn`, or `name_or_fn` itself if callable.

  Raises:
    ValueError: unknown name (the message lists the known ones).
  """
  if callable(name_or_fn):
    return name_or_fn
  try:
    return TEMPLATES[name_or_fn]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown prompt template {name_or_fn!r}; known: {sorted(TEMPLATES)}") from None


def response_prefix(template: Callable[[str], str]) -> str:
  """The response text a template's prompt already opened ("" for plain callables)."""
  return getattr(template, "response_prefix", "")
