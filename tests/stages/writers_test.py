"""The metrics log survives a kill mid-write: a torn last line is dropped (with a warning) before anything
is appended, resume keeps exactly the checkpointed steps, and a line corrupted elsewhere names path:line."""
import json

import pytest

from r1jax.stages.writers import MetricsLogError, MetricsWriter


def _log(path, steps):
  w = MetricsWriter(str(path))
  for s in steps:
    w.write(s, {"loss": 1.0 / (s + 1)})
  return w


def test_a_torn_last_line_is_dropped_and_the_log_goes_on(tmp_path, capsys):
  path = tmp_path / "metrics.jsonl"
  _log(path, [0, 1, 2])
  with open(path, "a") as f:
    f.write('{"step": 3, "kind": "train", "lo')                    # killed mid-write
  assert [r["step"] for r in MetricsWriter(str(path)).read()] == [0, 1, 2]
  assert f"{path}:4: dropping a torn last line" in capsys.readouterr().err
  assert path.read_text().endswith("\n") and path.read_text().count("\n") == 3
  w = MetricsWriter(str(path))
  w.truncate_after(2)                                                # what a resume at step 2 does
  w.write(3, {"loss": 0.25})
  assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 1, 2, 3]


def test_resume_keeps_the_checkpointed_steps_only(tmp_path):
  path = tmp_path / "metrics.jsonl"
  w = _log(path, [0, 1, 2, 3, 4])
  w.truncate_after(2)
  assert [r["step"] for r in w.read()] == [0, 1, 2]
  w.truncate_after(None)                                             # killed before its first checkpoint
  assert [r["step"] for r in w.read()] == [0]


def test_a_corrupt_line_inside_the_log_names_its_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  _log(path, [0, 1])
  lines = path.read_text().splitlines(keepends=True)
  path.write_text(lines[0] + "not json\n" + lines[1])
  w = MetricsWriter(str(path))
  with pytest.raises(MetricsLogError, match=f"{path}:2: malformed JSON"):
    w.read()
  with pytest.raises(MetricsLogError, match=f"{path}:2: malformed JSON"):
    w.truncate_after(1)
