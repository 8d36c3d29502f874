"""Tests for r1jax.data.tasks: registry, procedural generators, and the shipped GSM8K / MATH-500."""
import hashlib
import itertools
import re

import pytest

from r1jax import rewards
from r1jax.data import tasks
from r1jax.data.tasks import procedural, records


def _identity(example):
  """The problem identity the split is hashed on (independent re-statement of the tasks' rule)."""
  if example["task"] == "arithmetic":
    a, b = example["operands"]
    op = example["op"]
    return f"{min(a, b)}{op}{max(a, b)}" if op in "+*" else f"{a}{op}{b}"
  return str(sorted(example["numbers"]))


PROCEDURAL = [
    ("arithmetic", {}),
    ("arithmetic", {"digits": 2, "ops": "+-"}),
    ("arithmetic", {"digits": (3, 6), "ops": "/"}),
    ("countdown", {}),
    ("countdown", {"num_numbers": 4, "max_target": 1000}),
]


def test_registry():
  assert tasks.names() == ["arithmetic", "countdown", "gsm8k", "math500"]
  with pytest.raises(ValueError, match=r"unknown task 'gsm9k'.*arithmetic.*countdown.*gsm8k"):
    tasks.get("gsm9k")
  with pytest.raises(TypeError):
    tasks.get("arithmetic", no_such_knob=1)
  for bad in [{"digits": 0}, {"digits": (3, 2)}, {"ops": "^"}, {"ops": ""}, {"test_fraction": 1}]:
    with pytest.raises(ValueError):
      tasks.get("arithmetic", **bad)
  with pytest.raises(ValueError):
    tasks.get("countdown", num_numbers=1)
  for name in tasks.names():
    task = tasks.get(name)
    assert task.name == name
    with pytest.raises(ValueError, match="splits"):
      task.examples("validation")


@pytest.mark.parametrize("name, config", PROCEDURAL)
def test_procedural_train_and_test_are_disjoint(name, config):
  task = tasks.get(name, **config)
  train = {_identity(ex) for seed in (0, 1) for ex in task.examples("train", seed=seed, num=1500)}
  test = {_identity(ex) for seed in (0, 1, 2) for ex in task.examples("test", seed=seed, num=200)}
  assert len(test) > 200 and len(train) > 1500  # Different seeds give different problems.
  assert not train & test
  for identity in list(test)[:50]:
    assert procedural.split_of(name, identity, task.test_fraction) == "test"


@pytest.mark.parametrize("name, config", PROCEDURAL)
def test_procedural_is_seeded_and_golds_verify(name, config):
  task = tasks.get(name, **config)
  first = list(task.examples("train", seed=7, num=300))
  assert first == list(task.examples("train", seed=7, num=300))
  assert first != list(task.examples("train", seed=8, num=300))
  assert len({_identity(ex) for ex in first}) == 300  # A finite stream has no repeats.
  for ex in first + list(task.examples("test", seed=7, num=100)):
    assert {"task", "question", "answer"} <= set(ex) and ex["task"] == name
    assert task.verify(ex["answer"], ex), ex
    assert rewards.accuracy_reward(f"<think>t</think><answer>{ex['answer']}</answer>", ex) == 1.0


def test_arithmetic_knobs_and_answers():
  task = tasks.get("arithmetic", digits=3, ops="+-*")
  for ex in task.examples("train", num=200):
    a, b = ex["operands"]
    assert 100 <= a <= 999 and 100 <= b <= 999
    assert ex["question"] == f"What is {a} {ex['op']} {b}?"
    assert int(ex["answer"]) == {"+": a + b, "-": a - b, "*": a * b}[ex["op"]]
    assert not task.verify(str(int(ex["answer"]) + 1), ex)
  for ex in tasks.get("arithmetic", digits=(4, 5), ops="/").examples("test", num=100):
    a, b = ex["operands"]
    q, r = divmod(a, b)
    assert ex["answer"] == f"{q} R {r}" and 2 <= b and len(str(b)) < len(str(a))
    assert task.verify(f"{q} remainder {r}", ex) and not task.verify(f"{q} R {r + 1}", ex)


def test_countdown_problems_are_valid():
  task = tasks.get("countdown")
  for ex in task.examples("test", num=200):
    assert 3 <= len(ex["numbers"]) <= 4 and all(1 <= n <= 99 for n in ex["numbers"])
    assert 1 <= ex["target"] <= 100
    assert str(ex["numbers"]) in ex["question"] and str(ex["target"]) in ex["question"]
    assert rewards.evaluate_equation(ex["answer"], ex["numbers"]) == ex["target"]
    assert not task.verify(ex["answer"] + " + 1", ex)


def test_infinite_streams_and_too_small_spaces():
  stream = tasks.get("countdown").examples("train", seed=0, num=None)
  assert len(list(itertools.islice(stream, 1000))) == 1000
  # 1-digit sums: only 55 distinct problems in all, ~5 of them in test.
  with pytest.raises(ValueError, match="too small"):
    list(tasks.get("arithmetic", digits=1, ops="+").examples("test", num=50))
  with pytest.raises(ValueError):
    tasks.get("countdown").examples("train", num=-1)


def test_gsm8k():
  task = tasks.get("gsm8k")
  train, test = list(task.examples("train")), list(task.examples("test"))
  assert (len(train), len(test)) == (7473, 1319)
  assert test[0]["answer"] == "18" and test[0]["solution"].endswith("#### 18")
  assert test[0]["id"] == "gsm8k/test/0"
  assert all(re.fullmatch(r"-?\d+", ex["answer"]) for ex in train + test)  # Commas stripped.
  assert not {ex["question"] for ex in train} & {ex["question"] for ex in test}
  shuffled = list(task.examples("test", seed=3, shuffle=True, num=20))
  assert shuffled == list(task.examples("test", seed=3, shuffle=True, num=20))
  assert shuffled != test[:20] and len(shuffled) == 20
  assert task.verify("18", test[0]) and not task.verify("19", test[0])


def test_math500():
  task = tasks.get("math500")
  examples = list(task.examples("test"))
  assert len(examples) == 500 and len({ex["unique_id"] for ex in examples}) == 500
  first = examples[0]
  assert first["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)" and first["level"] == 2
  assert set(first) == {"task", "question", "answer", "solution", "subject", "level", "unique_id"}
  with pytest.raises(ValueError, match="evaluation set"):
    task.examples("train")
  assert task.verify("(3, \\frac{\\pi}{2})", first)


def test_shipped_data_matches_its_source_record():
  for name, files in (("gsm8k", ("train.jsonl", "test.jsonl")), ("math500", ("test.jsonl",))):
    source = (records.DATA_DIR / name / "SOURCE.md").read_text()
    assert "MIT" in source
    for file in files:
      digest = hashlib.sha256((records.DATA_DIR / name / file).read_bytes()).hexdigest()
      assert digest in source, (name, file)


def _write(tmp_path, name, lines):
  (tmp_path / name).write_text("".join(line + "\n" for line in lines))
  return tmp_path / name


GOOD_GSM8K = '{"question": "q", "answer": "work\\n#### 1,000"}'


@pytest.mark.parametrize("bad_line, message", [
    ('{"question": "q", "answer": "w\\n#### 3"', "malformed JSON"),
    ('{"question": "q"}', "missing required field"),
    ('{"question": "q", "answer": "no final number"}', "does not end in '#### <number>'"),
    ('{"question": 3, "answer": "#### 3"}', "must be strings"),
    ('["question", "answer"]', "expected a JSON object"),
])
def test_malformed_gsm8k_lines_name_file_and_line(tmp_path, bad_line, message):
  path = _write(tmp_path, "test.jsonl", [GOOD_GSM8K, "", bad_line, GOOD_GSM8K])
  with pytest.raises(ValueError, match=re.escape(f"{path}:3: ") + ".*" + re.escape(message)):
    tasks.get("gsm8k", data_dir=tmp_path).examples("test")


def test_custom_gsm8k_dir_and_malformed_math500(tmp_path):
  _write(tmp_path, "test.jsonl", [GOOD_GSM8K])
  assert list(tasks.get("gsm8k", data_dir=tmp_path).examples("test"))[0]["answer"] == "1000"
  math_dir = tmp_path / "math"
  math_dir.mkdir()
  path = _write(math_dir, "test.jsonl",
                ['{"problem": "p", "answer": "1", "solution": "s", "subject": "A", "level": 1, '
                 '"unique_id": "u"}', '{"problem": "p", "answer": "1"}'])
  with pytest.raises(ValueError, match=re.escape(f"{path}:2: ") + ".*missing required"):
    tasks.get("math500", data_dir=math_dir).examples("test")
  with pytest.raises(FileNotFoundError):
    tasks.get("gsm8k", data_dir=tmp_path).examples("train")
