"""The colabs/ notebooks: each .ipynb matches its jupytext .py pair, and runs top to bottom in a tiny setting.

Adding a notebook to the execution test is one line in NOTEBOOKS. A notebook takes its knobs from the
cell tagged `parameters`; the harness adds a cell right after it that overrides them (as papermill
does), so the defaults stay visible and only names that the parameters cell defines can be injected.
Every notebook has a WORKDIR parameter, set here to a fresh temporary directory.

Each notebook's `install` cell (what a fresh hosted runtime such as Colab runs first) is also tested on its
own, in a kernel of a fresh venv without r1jax: see test_install_cell_on_a_fresh_runtime.
"""
from __future__ import annotations

import ast
import dataclasses
import glob
import json
import math
import os
import re
import shutil
import site
import subprocess
import sys
import venv
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
  uses_checkout: bool = False                      # imports configs/ and experiments/ from the checkout


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
             slow=True, uses_checkout=True),
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


def _kernel_manager(spec_dir: str, python: str = sys.executable,
                    env: Mapping[str, str] | None = None) -> KernelManager:
  """A kernel that runs `python` (this interpreter by default), whatever kernelspecs the machine has.

  `env` is added to (and overrides) the environment the kernel inherits from this process.
  """
  os.makedirs(os.path.join(spec_dir, KERNEL), exist_ok=True)
  with open(os.path.join(spec_dir, KERNEL, "kernel.json"), "w") as f:
    json.dump({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
               "display_name": "r1jax tests", "language": "python", "env": dict(env or {})}, f)
  return KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[spec_dir]))


def run_notebook(nb, *, name: str, cwd: str, timeout: int = 900, python: str = sys.executable,
                 env: Mapping[str, str] | None = None):
  """Executes the notebook object `nb` in place in a kernel of `python` started in `cwd`; returns it.

  Fails the test with the failing cell's source and traceback (a cell tagged `raises-exception` may fail:
  its error is left in its outputs).
  """
  km = _kernel_manager(os.path.join(cwd, ".kernelspec"), python, env)
  client = nbclient.NotebookClient(nb, km=km, timeout=timeout, startup_timeout=180,
                                   resources={"metadata": {"path": cwd}})
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{name} failed:\n" + re.sub(r"\x1b\[[0-9;]*m", "", str(e)), pytrace=False)
  finally:   # nbclient leaves a kernel it was handed running: stop it (and its memory) now
    if km.has_kernel:
      km.shutdown_kernel(now=True)
  return nb


def execute_notebook(path: str, parameters: Mapping[str, Any], *, cwd: str, timeout: int = 900):
  """Runs the notebook at `path` with `parameters` injected, in `cwd`; returns the executed notebook."""
  nb = inject_parameters(nbformat.read(path, as_version=4), parameters)
  return run_notebook(nb, name=os.path.basename(path), cwd=cwd, timeout=timeout)


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


# ----------------------------------------------------------------------------------------------- install cell
# Every notebook has a cell tagged `install` after its parameters cell: on a fresh hosted runtime, where r1jax
# cannot be imported, it pip-installs the checkout that R1JAX_SOURCE names (a path, or a git URL it clones)
# and must leave r1jax importable in the same kernel. The test below runs that cell in a kernel of a fresh
# venv that has every dependency but not r1jax, without network.
ROOT = os.path.dirname(COLABS)
OFFLINE_PIP_ARGS = ["--no-index", "--no-deps", "--no-build-isolation"]   # pip touches no index, builds here
# A kernel without network access, as far as pip and git are concerned: any request they made would go to a
# closed local port and fail at once (PIP_RETRIES=0), so an install that ignored PIP_ARGS fails the test.
OFFLINE_ENV = {
    "PYTHONPATH": "", "PYTHONNOUSERSITE": "1", "PIP_CONFIG_FILE": os.devnull, "PIP_RETRIES": "0",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_CACHE_DIR": "1", "NO_PROXY": "", "no_proxy": "",
    **{k: "http://127.0.0.1:9" for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                                          "all_proxy")},
}


def _cell_tagged(nb, tag: str):
  cells = [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", ())]
  if len(cells) != 1:
    raise ValueError(f"expected one cell tagged {tag!r}, found {len(cells)}")
  return cells[0]


def _copy_checkout(dest: str) -> str:
  """Copies what installing r1jax and running the notebooks needs from this checkout to `dest`.

  That is the top-level files (setup.py and the rest of the packaging metadata) and the r1jax, configs and
  experiments packages, without build products. pip builds a local directory in place, so the install writes
  into the copy, never into this checkout. A `.git` file (a git worktree's pointer to its repository) is not
  copied: the copy would then be that worktree to git, and making the copy a repository would commit to it.
  """
  skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "*.egg-info", "build", "dist")
  os.makedirs(dest)
  for name in os.listdir(ROOT):
    if os.path.isfile(os.path.join(ROOT, name)) and name != ".git":
      shutil.copy2(os.path.join(ROOT, name), dest)
  for package in ("r1jax", "configs", "experiments"):
    shutil.copytree(os.path.join(ROOT, package), os.path.join(dest, package), ignore=skip)
  return dest


def _fresh_venv(root: str) -> tuple[str, str]:
  """A new venv under `root` in which everything this interpreter has is importable except r1jax.

  Returns its python and its site-packages. The venv is created without pip (nothing is downloaded). A .pth
  file in its site-packages runs site.addsitedir on a folder of symlinks to every entry of this interpreter's
  site-packages except r1jax's own (the dist-info, and an editable install's finder module and .pth files,
  which would otherwise map `import r1jax` to this checkout): pip, setuptools, ipykernel and r1jax's
  dependencies import from there, the other .pth files there are processed as usual, and the venv's own
  site-packages comes first on sys.path, where a real install puts r1jax.
  """
  venv_dir = os.path.join(root, "venv")
  venv.EnvBuilder(with_pip=False, symlinks=True).create(venv_dir)
  python = os.path.join(venv_dir, "bin", "python")
  site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 capture_output=True, text=True, check=True).stdout.strip()
  deps = os.path.join(root, "deps")
  os.makedirs(deps)
  for directory in site.getsitepackages():
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else ():
      if name.startswith(("r1jax", "__editable__")) or name == "easy-install.pth" or \
          os.path.lexists(os.path.join(deps, name)):
        continue
      os.symlink(os.path.join(directory, name), os.path.join(deps, name))
  with open(os.path.join(site_packages, "r1jax_test_dependencies.pth"), "w") as f:
    f.write(f"import site; site.addsitedir({deps!r})\n")
  return python, site_packages


def _git_url(checkout: str) -> str:
  """Makes `checkout` a git repository with one commit; returns its file:// URL (cloning needs no network)."""
  git = ["git", "-C", checkout, "-c", "user.name=test", "-c", "user.email=test@localhost"]
  for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "checkout"]):
    subprocess.run(git + args, check=True, capture_output=True)
  return "file://" + checkout


# What the kernel reports after the install cell: where its python and site-packages are, where r1jax was
# imported from, and (for a notebook that uses the checkout) where configs and experiments are found.
_REPORT = """\
import importlib.util, json, sys, sysconfig
import r1jax
report = {"python": sys.executable, "site_packages": sysconfig.get_paths()["purelib"], "r1jax": r1jax.__file__}
if USES_CHECKOUT:
  from configs import r1_pipeline
  assert r1_pipeline.get_config("tiny").seed == 0
  report["configs"] = r1_pipeline.__file__
  report["experiments"] = importlib.util.find_spec("experiments.r1_pipeline").origin
print("REPORT", json.dumps(report))
"""


def _under(path: str, directory: str) -> bool:
  return os.path.commonpath([os.path.realpath(path), os.path.realpath(directory)]) == os.path.realpath(directory)


@pytest.mark.parametrize("notebook,source", [pytest.param(n, "path", id=n.name) for n in NOTEBOOKS] +
                         [pytest.param(n, "git", id=n.name + "-git") for n in NOTEBOOKS if n.uses_checkout])
def test_install_cell_on_a_fresh_runtime(notebook, source, tmp_path):
  """The install cell, in a kernel of a fresh venv without r1jax: first without R1JAX_SOURCE (a clear error
  naming it), then with R1JAX_SOURCE a local checkout (or its git URL), installed offline through PIP_ARGS.
  r1jax must then be imported from the venv's site-packages: an editable install would not be importable in
  the same kernel, and an install that only put the checkout on sys.path would import the checkout's copy.
  """
  if source == "git" and shutil.which("git") is None:
    pytest.skip("git is not installed")
  name = notebook.name
  original = nbformat.read(os.path.join(COLABS, name + ".ipynb"), as_version=4)
  parameters, install = _cell_tagged(original, "parameters"), _cell_tagged(original, "install")
  assert original.cells.index(install) > original.cells.index(parameters), f"{name}: install before parameters"
  defaults = {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(parameters.source).body
              if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") in ("R1JAX_SOURCE", "PIP_ARGS")}
  assert defaults.get("R1JAX_SOURCE") == "", f"{name}: R1JAX_SOURCE must default to '' (no install locally)"
  assert not set(defaults.get("PIP_ARGS", ())) & set(OFFLINE_PIP_ARGS), \
      f"{name}: by default PIP_ARGS must leave pip a normal install that fetches the dependencies"

  checkout = _copy_checkout(str(tmp_path / "r1jax-src"))
  python, site_packages = _fresh_venv(str(tmp_path))
  run_dir = tmp_path / "run"   # the kernel's cwd (where a git URL is cloned), not the checkout
  run_dir.mkdir()
  url = _git_url(checkout) if source == "git" else checkout
  expected_checkout = str(run_dir / "r1jax-src") if source == "git" else checkout
  code = nbformat.v4.new_code_cell
  nb = inject_parameters(nbformat.v4.new_notebook(cells=[
      parameters,
      code("import importlib.util\nassert importlib.util.find_spec('r1jax') is None, 'r1jax is importable'"),
      code(install.source, metadata={"tags": ["raises-exception"]}),   # no R1JAX_SOURCE: must raise
      code(f"R1JAX_SOURCE = {url!r}"),
      install,
      code(f"USES_CHECKOUT = {notebook.uses_checkout}\n" + _REPORT),
  ]), {"R1JAX_SOURCE": "", "PIP_ARGS": OFFLINE_PIP_ARGS, "WORKDIR": str(tmp_path / "work")})
  run_notebook(nb, name=f"{name}'s install cell", cwd=str(run_dir), timeout=300, python=python, env=OFFLINE_ENV)

  without_source = next(c for c in nb.cells if "raises-exception" in c.metadata.get("tags", ()))
  error = [o for o in without_source.outputs if o.output_type == "error"]
  assert error and "R1JAX_SOURCE" in error[0].evalue, f"no error naming R1JAX_SOURCE: {without_source.outputs}"
  text = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
  report = json.loads(text.split("REPORT ", 1)[1])
  assert (report["python"], report["site_packages"]) == (python, site_packages), report
  assert _under(report["r1jax"], report["site_packages"]), f"r1jax was not installed into the venv: {report}"
  if notebook.uses_checkout:
    assert _under(report["configs"], expected_checkout) and _under(report["experiments"], expected_checkout), \
        report
