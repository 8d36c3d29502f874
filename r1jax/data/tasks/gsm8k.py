"""GSM8K (Cobbe et al., 2021): grade-school math word problems with numeric answers.

    task = tasks.get("gsm8k")
    ex = next(task.examples("test"))
    # {"task": "gsm8k", "question": "Janet's ducks lay 16 eggs ...", "answer": "18",
    #  "solution": "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day. ... #### 18",
    #  "id": "gsm8k/test/0"}

The data (MIT, OpenAI) ships in `datasets/gsm8k/` with its SOURCE.md: train 7,473 and test 1,319
problems. The gold `answer` is the number after the final "####" with thousands commas removed;
`solution` keeps the full rationale (for SFT). Verified by `r1jax.rewards.verify_number`.
"""
from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

from r1jax import rewards
from r1jax.data.tasks import procedural, records


@dataclasses.dataclass(frozen=True)
class Gsm8k:
  """GSM8K train/test.

  Attributes:
    data_dir: folder with train.jsonl / test.jsonl; None for the copy shipped with r1jax.
  """
  data_dir: str | os.PathLike | None = None

  name: ClassVar[str] = "gsm8k"
  splits: ClassVar[tuple[str, ...]] = ("train", "test")

  def examples(self, split: str, *, seed: int = 0, num: int | None = None, shuffle: bool = False
               ) -> Iterator[dict[str, Any]]:
    """The problems of `split` in file order, or shuffled by `seed`; the first `num` of them.

    Raises:
      ValueError: unknown split; a malformed line or missing field ("path:line: ..."), raised
        here, before iteration starts.
    """
    procedural.check_split(self.name, split, self.splits)
    procedural.check_num(num)
    data_dir = records.DATA_DIR / "gsm8k" if self.data_dir is None else self.data_dir
    path = os.path.join(data_dir, f"{split}.jsonl")
    parsed = [_to_example(location, record, split, i)
              for i, (location, record) in enumerate(
                  records.load_records(path, ("question", "answer")))]
    if shuffle:
      random.Random(f"{self.name}/{split}/{seed}").shuffle(parsed)
    return iter(parsed[:num] if num is not None else parsed)

  def verify(self, answer_text: str, example: Mapping[str, Any]) -> bool:
    """Whether `answer_text` (the answer region of a completion) has the gold number."""
    return rewards.verify_number(answer_text, example)


def _to_example(location: str, record: dict[str, Any], split: str, index: int) -> dict[str, Any]:
  question, solution = record["question"], record["answer"]
  if not isinstance(question, str) or not isinstance(solution, str):
    raise records.field_error(location, "fields 'question' and 'answer' must be strings")
  _, marker, final = solution.rpartition("####")
  answer = final.strip().replace(",", "")
  if not marker or rewards.parse_number(answer) is None:
    raise records.field_error(location, f"'answer' does not end in '#### <number>': "
                                        f"{solution[-80:]!r}")
  return {"task": "gsm8k", "question": question, "answer": answer, "solution": solution,
          "id": f"gsm8k/{split}/{index}"}
