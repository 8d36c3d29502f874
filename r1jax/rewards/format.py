"""The R1 response format: `<think> reasoning </think> <answer> answer </answer>`.

`format_reward` scores the format; `extract_answer` / `extract_think` / `answer_region` cut a
completion into the parts the other rewards read. Everything here is `str.find` / `str.count`, so
each call is linear in the length of the completion whatever the text (no regular expressions, so
no backtracking on adversarial input such as 1 MB of nested tags).

Prompt templates that end in "<think>" (r1jax.data.templates, `response_prefix`) open the think
block inside the prompt: prepend the prefix before a strict check, or use `strict=False`, which
accepts a completion that starts inside the think block.
"""
from __future__ import annotations

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def format_reward(completion: str, *, strict: bool = True) -> float:
  """1.0 when the completion has the R1 format, else 0.0.

  Strict (the DeepSeek-R1 rule): exactly one `<think>...</think>` followed by exactly one
  `<answer>...</answer>`, both non-blank, and only whitespace before, between and after them.

  Lenient (`strict=False`) still demands one `</think>` followed by one non-blank
  `<answer>...</answer>` and no repeated tag, but tolerates what real generations carry:
    * a missing `<think>` (the prompt template opened it), and an empty think block;
    * text before the think block, between `</think>` and `<answer>`, and after `</answer>`
      (e.g. "The answer is:" or a chat end-of-turn marker).
  A second answer block is never accepted: it would let a policy hedge between answers.

  Args:
    completion: the generated text (without the prompt).
    strict: which of the two rules above to apply.

  Returns:
    1.0 or 0.0.

  Raises:
    TypeError: `completion` is not a str (a caller bug, not model output).
  """
  if not isinstance(completion, str):
    raise TypeError(f"completion must be str, got {type(completion).__name__}")
  counts = [completion.count(tag) for tag in TAGS]
  n_think_open, n_think_close, n_answer_open, n_answer_close = counts
  if n_think_close != 1 or n_answer_open != 1 or n_answer_close != 1:
    return 0.0
  if n_think_open > 1 or (strict and n_think_open != 1):
    return 0.0
  think_close = completion.find(THINK_CLOSE)
  answer_open = completion.find(ANSWER_OPEN)
  answer_close = completion.find(ANSWER_CLOSE)
  think_open = completion.find(THINK_OPEN)  # -1 when the prompt opened the block.
  if not think_open < think_close < answer_open < answer_close:
    return 0.0
  answer = completion[answer_open + len(ANSWER_OPEN):answer_close]
  if _is_blank(answer):
    return 0.0
  if strict:
    think = completion[think_open + len(THINK_OPEN):think_close]
    if (_is_blank(think) or not _is_blank(completion[:think_open])
        or not _is_blank(completion[think_close + len(THINK_CLOSE):answer_open])
        or not _is_blank(completion[answer_close + len(ANSWER_CLOSE):])):
      return 0.0
  return 1.0


def extract_answer(completion: str) -> str | None:
  """Content of the last complete `<answer>...</answer>` block, or None if there is none.

  The last block wins because a model that revises itself writes the final answer last.
  """
  close = completion.rfind(ANSWER_CLOSE)
  if close < 0:
    return None
  start = completion.rfind(ANSWER_OPEN, 0, close)
  if start < 0:
    return None
  return completion[start + len(ANSWER_OPEN):close]


def extract_think(completion: str) -> str:
  """The chain of thought: what the language-consistency reward reads.

  * `<think>` present: from after the first `<think>` to the next `</think>` (or to the end of
    the text when the block was never closed, e.g. a generation cut at the length limit);
  * only `</think>` present (the prompt opened the block): everything before it;
  * no think tags: the whole completion.
  """
  start = completion.find(THINK_OPEN)
  if start >= 0:
    start += len(THINK_OPEN)
    end = completion.find(THINK_CLOSE, start)
    return completion[start:] if end < 0 else completion[start:end]
  end = completion.find(THINK_CLOSE)
  return completion if end < 0 else completion[:end]


def answer_region(completion: str) -> str:
  """Where accuracy rewards look for the final answer.

  1. the content of the last `<answer>...</answer>` block, if any;
  2. else the text after the last `</think>`, so numbers inside the reasoning never count;
  3. else, if a `<think>` was opened but never closed (a truncated generation), nothing: "";
  4. else the whole completion (a model prompted without tags, e.g. answering with \\boxed{}).
  """
  answer = extract_answer(completion)
  if answer is not None:
    return answer
  close = completion.rfind(THINK_CLOSE)
  if close >= 0:
    return completion[close + len(THINK_CLOSE):]
  if THINK_OPEN in completion:
    return ""
  return completion


def _is_blank(text: str) -> bool:
  return not text or text.isspace()
