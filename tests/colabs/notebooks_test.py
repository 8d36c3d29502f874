"""The colabs/ notebooks: each .ipynb matches its jupytext .py pair, and runs top to bottom in a tiny setting.

Adding a notebook to the execution test is one line in NOTEBOOKS. A notebook takes its knobs from the
cell tagged `parameters`; the harness adds a cell right after it that overrides them (as papermill
does), so the defaults stay visible and only names that the parameters cell defines can be injected.
Every notebook has a WORKDIR parameter, set here to a fresh temporary directory.
"""
from __future__ import annotations

import ast
import dataclasses
import glob
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (after the skips above)
from jupyter_client.manager import KernelManager  # noqa: E402

COLABS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "colabs")
KERNEL = "r1jax-test-python"


def _check_moe_routing(workdir: str, nb) -> None:
  with open(os.path.join(workdir, "expert_load.json")) as f:
    summary = json.load(f)
  assert summary["layers"], summary
  for key in ("maxvio_bias_zeroed", "maxvio_learned_bias"):
    assert len(summary[key]) == len(summary["layers"]), summary
    assert all(math.isfinite(v) and v >= 0 for v in summary[key]), summary
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", ()))
  assert "MaxVio, learned bias" in text


@dataclasses.dataclass(frozen=True)
class Notebook:
  name: str                                        # colabs/<name>.ipynb
  parameters: Mapping[str, Any]                    # overrides of its `parameters` cell (WORKDIR is added)
  outputs: tuple[str, ...] = ()                    # files it must write under WORKDIR
  check: Callable[[str, Any], None] | None = None  # check(workdir, executed notebook)
  slow: bool = False                               # minutes: only in the full suite (CI), not `-m "not slow"`


def _check_quickstart(workdir: str, nb) -> None:
  text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", ()))
  summary = json.loads([line for line in text.splitlines() if line.startswith('{"pretrain"')][-1])
  assert set(summary) >= {"pretrain", "r1_zero", "sft_r1", "distill"}
  assert all(0.0 <= v <= 1.0 for v in summary.values())


NOTEBOOKS = [
    Notebook("moe_routing", {"STEPS": 8, "TINY": True}, ("expert_load.png", "expert_load.json"),
             _check_moe_routing),
    Notebook("r1_quickstart", {"SETTING": "tiny"},
             ("report.md", "quickstart_curves.png", "eval/results.png", "eval/results.json"), _check_quickstart,
             slow=True),
]


# ----------------------------------------------------------------------------------------------- harness
def parameter_names(nb) -> set[str]:
  """Names assigned in the cell tagged `parameters`."""
  cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", ())]
  if len(cells) != 1:
    raise ValueError(f"expected one cell tagged 'parameters', found {len(cells)}")
  tree = ast.parse(cells[0].source)
  return {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
          for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)}


def inject_parameters(nb, parameters: Mapping[str, Any]):
  """A copy of `nb` with a cell that reassigns `parameters` right after the `parameters` cell."""
  unknown = set(parameters) - parameter_names(nb)
  if unknown:
    raise ValueError(f"not defined in the parameters cell: {sorted(unknown)}")
  nb = nbformat.from_dict(nb)
  i = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", ()))
  source = "# Injected by tests/colabs/notebooks_test.py\n" + \
      "".join(f"{k} = {v!r}\n" for k, v in parameters.items())
  nb.cells.insert(i + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
  return nb


def _kernel_manager(spec_dir: str) -> KernelManager:
  """A kernel that runs this interpreter (sys.executable), whatever kernelspecs the machine has."""
  os.makedirs(os.path.join(spec_dir, KERNEL), exist_ok=True)
  with open(os.path.join(spec_dir, KERNEL, "kernel.json"), "w") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "r1jax tests", "language": "python"}, f)
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_dir]))


def execute_notebook(path: str, parameters: Mapping[str, Any], *, cwd: str, timeout: int = 900):
  """Runs the notebook at `path` with `parameters` injected, in `cwd`; returns the executed notebook.

  Fails the test with the failing cell's source and traceback.
  """
  nb = inject_parameters(nbformat.read(path, as_version=4), parameters)
  client = nbclient.NotebookClient(nb, km=_kernel_manager(os.path.join(cwd, ".kernelspec")), timeout=timeout,
                                   startup_timeout=180, resources={"metadata": {"path": cwd}})
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{os.path.basename(path)} failed:\n" + re.sub(r"\x1b\[[0-9;]*m", "", str(e)), pytrace=False)
  return nb


# ----------------------------------------------------------------------------------------------- tests
def _pairs() -> list[str]:
  names = {os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(COLABS, "*.py"))}
  return sorted(names | {os.path.splitext(os.path.basename(p))[0]
                         for p in glob.glob(os.path.join(COLABS, "*.ipynb"))})


def _cells(nb) -> list[tuple[str, str, tuple]]:
  return [(c.cell_type, c.source.strip(), tuple(c.get("metadata", {}).get("tags", ()))) for c in nb.cells]


@pytest.mark.parametrize("name", _pairs())
def test_ipynb_and_py_are_in_sync(name):
  py, ipynb = os.path.join(COLABS, name + ".py"), os.path.join(COLABS, name + ".ipynb")
  for p in (py, ipynb):
    assert os.path.exists(p), f"{p} is missing: run `jupytext --sync colabs/{name}.py`"
  a, b = jupytext.read(ipynb), jupytext.read(py)
  assert _cells(a) == _cells(b), f"colabs/{name}: .ipynb and .py differ; run `jupytext --sync colabs/{name}.py`"
  for c in nbformat.read(ipynb, as_version=4).cells:
    if c.cell_type == "code":
      assert not c.outputs and c.execution_count is None, f"colabs/{name}.ipynb: commit it with outputs stripped"
  assert "WORKDIR" in parameter_names(a), f"colabs/{name}: the parameters cell must define WORKDIR"


def test_every_notebook_is_executed():
  assert sorted(n.name for n in NOTEBOOKS) == _pairs(), "add the notebook to NOTEBOOKS"


def test_injection_rejects_unknown_parameters():
  nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("A = 1\nB: int = 2",
                                                                 metadata={"tags": ["parameters"]})])
  assert parameter_names(nb) == {"A", "B"}
  assert inject_parameters(nb, {"B": 3}).cells[1].source.endswith("B = 3\n")
  with pytest.raises(ValueError, match="'C'"):
    inject_parameters(nb, {"C": 1})


def _write_notebook(path, *sources: str) -> str:
  cells = [nbformat.v4.new_code_cell("WORKDIR = '.'", metadata={"tags": ["parameters"]})]
  nbformat.write(nbformat.v4.new_notebook(cells=cells + [nbformat.v4.new_code_cell(s) for s in sources]), path)
  return str(path)


def test_kernel_runs_this_interpreter(tmp_path):
  path = _write_notebook(tmp_path / "ok.ipynb", "import os, sys\nprint(sys.executable, WORKDIR, os.getcwd())")
  nb = execute_notebook(path, {"WORKDIR": "/x"}, cwd=str(tmp_path))
  assert nb.cells[-1].outputs[0]["text"].split() == [sys.executable, "/x", str(tmp_path)]


def test_a_failing_cell_fails_with_its_error(tmp_path):
  path = _write_notebook(tmp_path / "bad.ipynb", "x = 1", "raise RuntimeError('boom ' + WORKDIR)")
  with pytest.raises(pytest.fail.Exception, match=r"(?s)bad.ipynb failed:.*RuntimeError: boom /x"):
    execute_notebook(path, {"WORKDIR": "/x"}, cwd=str(tmp_path))


@pytest.mark.parametrize("notebook", [pytest.param(n, id=n.name, marks=[pytest.mark.slow] if n.slow else [])
                                      for n in NOTEBOOKS])
def test_notebook_runs(notebook, tmp_path):
  workdir = str(tmp_path / "work")
  nb = execute_notebook(os.path.join(COLABS, notebook.name + ".ipynb"),
                        {**notebook.parameters, "WORKDIR": workdir}, cwd=str(tmp_path))
  for name in notebook.outputs:
    assert os.path.isfile(os.path.join(workdir, name)), f"{notebook.name} did not write WORKDIR/{name}"
  if notebook.check is not None:
    notebook.check(workdir, nb)
