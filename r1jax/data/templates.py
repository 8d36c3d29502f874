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

The model's own chat template (a Hugging Face tokenizer's Jinja `chat_template`) is selected by name too:
"chat" sends the question as the user message, "chat_boxed" adds the instruction DeepSeek-R1 and Qwen
recommend for math ("Please reason step by step, and put your final answer within \\boxed{}."). They need
the tokenizer: `get_template("chat_boxed", tokenizer)`.
"""
from __future__ import annotations

import dataclasses
import datetime
import functools
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from r1jax.data.tokenizer import THINK_CLOSE, THINK_OPEN

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


BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


class TemplateError(ValueError):
  """A chat template that cannot render (Jinja syntax, an error it raises itself, a missing template)."""


def _raise(message: str):
  raise TemplateError(f"the chat template raised: {message}")


@functools.lru_cache(maxsize=16)
def _compile(source: str):
  """A Jinja chat template, compiled as transformers does: sandboxed (a template cannot reach Python
  objects), trim_blocks/lstrip_blocks, loop controls, `tojson` without HTML escaping, `raise_exception`
  and `strftime_now`."""
  try:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
  except ImportError as e:                                          # a core dependency; says so if missing
    raise ImportError("rendering a model's chat template needs jinja2 (pip install jinja2)") from e
  env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
  env.filters["tojson"] = lambda x, indent=None, separators=None, sort_keys=False, ensure_ascii=False: json.dumps(
      x, indent=indent, separators=separators, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
  env.globals["raise_exception"] = _raise
  env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
  try:
    return env.from_string(source)
  except jinja2.TemplateSyntaxError as e:
    raise TemplateError(f"the chat template does not parse: {e.message} (template line {e.lineno})") from e


def render_model_chat(source: str, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True,
                      bos_token: str | None = None, eos_token: str | None = None, **kwargs: Any) -> str:
  """Renders `messages` with a model's Jinja chat template `source` (tokenizer_config.json's chat_template),
  as transformers' apply_chat_template(tokenize=False) does; kwargs reach the template (e.g.
  enable_thinking=False for Qwen3)."""
  return _compile(source).render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                 bos_token=bos_token or "", eos_token=eos_token or "", **kwargs)


@dataclasses.dataclass(frozen=True)
class ModelChatTemplate:
  """The question as a user message (after an optional system message), rendered with the model's own
  Jinja chat template.

  Attributes:
    name: registry name of the choice ("chat", "chat_boxed").
    source: the Jinja template text.
    instruction: appended to the question, after a blank line ("" for none).
    system: optional system message.
    response_prefix: what the rendered prompt already opened of the response: "<think>\\n" when the template
      ends its generation prompt with it (DeepSeek-R1-Distill), so a format reward sees the whole response.
    bos_token, eos_token: the tokenizer's special tokens, as the template may print them.
  """
  name: str
  source: str
  instruction: str = ""
  system: str | None = None
  response_prefix: str = ""
  bos_token: str | None = None
  eos_token: str | None = None

  def __call__(self, question: str) -> str:
    content = f"{question}\n\n{self.instruction}" if self.instruction else question
    messages = [{"role": "system", "content": self.system}] if self.system is not None else []
    messages.append({"role": "user", "content": content})
    return render_model_chat(self.source, messages, bos_token=self.bos_token, eos_token=self.eos_token)


# The choices that render the model's own template: name -> the instruction added to the question.
MODEL_CHAT = {"chat": "", "chat_boxed": BOXED_INSTRUCTION}


def model_chat_template(name: str, tokenizer: Any) -> ModelChatTemplate:
  """The template `name` of MODEL_CHAT over `tokenizer`'s chat template (its `chat_template` attribute)."""
  source = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
  if not source:
    raise ValueError(f"prompt template {name!r} renders the model's own chat template, but "
                     f"{'no tokenizer was given' if tokenizer is None else 'its tokenizer has none'} (a Hugging "
                     "Face tokenizer_config.json chat_template); choose one of " + str(sorted(TEMPLATES)))
  special = lambda attr: getattr(tokenizer, attr, None)
  t = ModelChatTemplate(name, source, instruction=MODEL_CHAT[name], bos_token=special("bos_token"),
                        eos_token=special("eos_token"))
  # What the generation prompt opens of the response: the rendered prompt's tail after the user turn.
  probe = t("\x00")
  tail = probe[probe.rindex("\x00") + 1:]
  opened = THINK_OPEN if THINK_OPEN in tail and THINK_CLOSE not in tail[tail.rindex(THINK_OPEN):] else None
  return dataclasses.replace(t, response_prefix=tail[tail.rindex(opened):]) if opened else t


TEMPLATES: dict[str, Callable[[str], str]] = {
    t.name: t for t in (
        PromptTemplate("r1_zero", R1_ZERO_FORMAT),
        PromptTemplate("compact", COMPACT_FORMAT, response_prefix=THINK_OPEN),
        ChatTemplate("chatml"),
        ChatTemplate("chatml_think", response_prefix=THINK_OPEN + "\n"),
    )
}


def template_names() -> list[str]:
  """Every name get_template knows (the model-chat ones need a tokenizer with a chat template)."""
  return sorted([*TEMPLATES, *MODEL_CHAT])


def check_template(name_or_fn: str | Callable[[str], str]) -> None:
  """Raises ValueError (listing the known names) unless `name_or_fn` is a callable or a known name; what a
  config check calls before any tokenizer is loaded."""
  if not callable(name_or_fn) and name_or_fn not in template_names():
    raise ValueError(f"unknown prompt template {name_or_fn!r}; known: {template_names()}")


def get_template(name_or_fn: str | Callable[[str], str], tokenizer: Any = None) -> Callable[[str], str]:
  """Returns the template registered under `name_or_fn`, or `name_or_fn` itself if callable. The names of
  MODEL_CHAT ("chat", "chat_boxed") render `tokenizer`'s own chat template.

  Raises:
    ValueError: unknown name (the message lists the known ones), or a model-chat name without a tokenizer
      that has a chat template.
  """
  if callable(name_or_fn):
    return name_or_fn
  if isinstance(name_or_fn, str) and name_or_fn in MODEL_CHAT:
    return model_chat_template(name_or_fn, tokenizer)
  try:
    return TEMPLATES[name_or_fn]
  except (KeyError, TypeError):
    raise ValueError(
        f"unknown prompt template {name_or_fn!r}; known: {template_names()}") from None


def response_prefix(template: Callable[[str], str]) -> str:
  """The response text a template's prompt already opened ("" for plain callables)."""
  return getattr(template, "response_prefix", "")
