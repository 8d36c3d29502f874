"""MATH-500 (Lightman et al., 2023): 500 MATH test problems with LaTeX answers; evaluation only.

    task = tasks.get("math500")
    ex = next(task.examples("test"))
    # {"task": "math500", "question": "Convert the point $(0,3)$ ...",
    #  "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "solution": "...", "subject": "Precalculus",
    #  "level": 2, "unique_id": "test/precalculus/807.json"}

The data (MIT, OpenAI prm800k) ships in `datasets/math500/` with its SOURCE.md. There is only a
test split: these are MATH test problems, so don't train on them. The gold `answer` is LaTeX,
verified by `r1jax.rewards.verify_latex` (math-verify equivalence under a hard deadline).
"""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from r1jax import rewards
from r1jax.data.tasks import procedural, records

_FIELDS = ("problem", "answer", "solution", "subject", "level", "unique_id")


@dataclasses.dataclass(frozen=True)
class Math500:
  """MATH-500.

  Attributes:
    data_dir: folder with test.jsonl; None for the copy shipped with r1jax.
  """
  data_dir: str | os.PathLike | None = None

  name: ClassVar[str] = "math500"
  splits: ClassVar[tuple[str, ...]] = ("test",)

  def examples(self, split: str = "test", *, seed: int = 0, num: int | None = None,
               shuffle: bool = False) -> Iterator[dict[str, Any]]:
    """The 500 problems in file order, or shuffled by `seed`; the first `num` of them.

    Raises:
      ValueError: a split other than "test"; a malformed line or missing field ("path:line:
        ..."), raised here, before iteration starts.
    """
    if split != "test":
      raise ValueError(f"task 'math500' has splits ['test'], not {split!r}: MATH-500 is an "
                       f"evaluation set")
    procedural.check_num(num)
    data_dir = records.DATA_DIR / "math500" if self.data_dir is None else self.data_dir
    path = os.path.join(data_dir, "test.jsonl")
    parsed = [_to_example(location, record)
              for location, record in records.load_records(path, _FIELDS)]
    if shuffle:
      random.Random(f"{self.name}/{split}/{seed}").shuffle(parsed)
    return iter(parsed[:num] if num is not None else parsed)

  def verify(self, answer_text: str, example: Mapping[str, Any]) -> bool:
    """Whether `answer_text` (the answer region of a completion) is equivalent to the gold."""
    return rewards.verify_latex(answer_text, example)


def _to_example(location: str, record: dict[str, Any]) -> dict[str, Any]:
  answer = record["answer"]
  if not isinstance(answer, str) or not answer.strip():
    raise records.field_error(location, f"'answer' must be a non-empty string, got {answer!r}")
  if not isinstance(record["problem"], str):
    raise records.field_error(location, "'problem' must be a string")
  return {"task": "math500", "question": record["problem"], "answer": answer,
          "solution": record["solution"], "subject": record["subject"], "level": record["level"],
          "unique_id": record["unique_id"]}
