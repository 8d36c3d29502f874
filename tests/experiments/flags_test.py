"""The experiments take --config and --workdir (plus the multi-process start-up flags of
experiments/_common.py): every input (data, tokenizer, models) is a config field, set as
--config.<field>=..., and an empty or missing one fails before any work, naming the field."""
import ast
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if not p.stem.startswith("_"))
# The experiments over exported models, and the input field each checks first.
FIRST_INPUT = {"sft": "data", "distill": "data", "grpo": "init", "rejection_sample": "model", "evaluate": "models"}


def _flags(name: str) -> tuple[set[str], set[str]]:
  """(flags defined, flags marked required) in experiments/<name>.py, read with ast."""
  defined, required = set(), set()
  for node in ast.walk(ast.parse((ROOT / "experiments" / f"{name}.py").read_text(encoding="utf-8"))):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
      if node.func.attr.startswith("DEFINE_"):
        defined.add(node.args[0].value)
      elif node.func.attr == "mark_flags_as_required":
        required.update(e.value for e in node.args[0].elts)
  return defined, required


def test_every_experiment_is_listed():
  assert set(EXPERIMENTS) == {*FIRST_INPUT, "r1_zero", "r1_pipeline"}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_the_only_flags_are_config_and_workdir(name):
  assert _flags(name) == ({"config", "workdir"}, {"config", "workdir"})


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_joins_a_multi_process_job_first(name):
  """_define_flags adds the start-up flags, and main's first call is _common.initialize()."""
  tree = ast.parse((ROOT / "experiments" / f"{name}.py").read_text(encoding="utf-8"))
  funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
  calls = lambda f: [ast.unparse(n.value.func) for n in funcs[f].body
                     if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]
  assert "_common.define_distributed_flags" in calls("_define_flags")
  assert calls("main")[0] == "_common.initialize"


def test_the_start_up_flags_are_checked(tmp_path):
  proc = _run("r1_zero", f"--workdir={tmp_path / 'run'}", "--num_processes=2")
  assert proc.returncode != 0
  assert "2 processes but no coordinator_address (argument or $R1JAX_COORDINATOR)" in proc.stderr, proc.stderr[-2000:]
  assert not (tmp_path / "run").exists()


def _run(name: str, *args: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": str(ROOT), "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", f"experiments.{name}", f"--config=configs/{name}.py:runlocal",
                         *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", sorted(FIRST_INPUT))
def test_an_empty_input_fails_before_any_work(name, tmp_path):
  workdir = tmp_path / "run"
  proc = _run(name, f"--workdir={workdir}")
  field = FIRST_INPUT[name]
  assert proc.returncode != 0
  assert f"config.{field} is required: " in proc.stderr and f"--config.{field}=" in proc.stderr, proc.stderr[-2000:]
  assert not workdir.exists()


def test_inputs_are_set_as_config_fields_and_old_flags_are_refused(tmp_path):
  """--config.models=name=DIR,name=DIR reaches the config intact: the missing second model is named."""
  workdir, tok = tmp_path / "eval", tmp_path / "tokenizer.model"
  tok.write_bytes(b"")
  proc = _run("evaluate", f"--config.models=base={tmp_path},r1={tmp_path}/nope", f"--config.tokenizer={tok}",
              f"--workdir={workdir}")
  assert proc.returncode != 0
  assert f"config.models: model 'r1': '{tmp_path}/nope' does not exist" in proc.stderr, proc.stderr[-2000:]
  proc = _run("sft", f"--tokenizer={tok}", f"--workdir={workdir}")
  assert proc.returncode != 0 and "Unknown command line flag 'tokenizer'" in proc.stderr, proc.stderr[-2000:]
  assert not workdir.exists()
