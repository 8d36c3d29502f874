"""The package layering, read from the source with `ast` (nothing is imported):

    experiments -> r1jax.stages -> r1jax.{rl, train, eval, sampling, ...} -> r1jax.model -> r1jax.sharding

No module of r1jax outside r1jax/stages imports r1jax.stages (so the stages can build on everything below
them without an import cycle), and no module of r1jax imports the repository's configs/ or experiments/
packages, which are not part of the installed library. Below the stages, each package imports only the
packages ALLOWED names for it: the model knows nothing of the kernels, RL, data or checkpoints; rewards,
kernels and sharding are leaves; data uses only the R1 tag constants of rewards.format; checkpoint knows
no model. Every import counts, also one inside a function.
"""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "r1jax"
# The packages below the stages; every other module outside r1jax/stages is held to the same rule.
BELOW_STAGES = ("model", "sharding", "rl", "train", "eval", "sampling", "rewards", "data", "checkpoint", "kernels",
                "hf")
OUTSIDE_LIBRARY = ("configs", "experiments")
# package -> the other r1jax packages (and top-level modules) it may import.
ALLOWED = {
    "kernels": (),
    "sharding": (),
    "rewards": (),
    "checkpoint": (),
    "data": ("rewards",),
    "model": ("sharding",),
    "hf": ("model", "sharding", "checkpoint"),
    "sampling": ("model", "sharding", "kernels", "rewards"),
    "train": ("model", "sharding"),
    "rl": ("model", "sharding", "train"),
    "eval": ("sampling", "model", "sharding", "data", "rewards"),
    "testing": ("model", "data"),
    "config_utils": (),
}


def module_name(path: pathlib.Path, root: pathlib.Path = ROOT) -> str:
  parts = path.relative_to(root).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, name: str, is_package: bool = False) -> set[str]:
  """Every module that `source` (the module `name`) imports, as absolute dotted names.

  `from a import b` yields both "a" and "a.b" (b may be a submodule); relative imports are resolved
  against the module's package; importlib.import_module("x") with a literal name counts as well.
  """
  package = name if is_package else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      out.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")
        base = base[:len(base) - node.level + 1]
        module = ".".join(base + ([node.module] if node.module else []))
      else:
        module = node.module
      out.add(module)
      out.update(f"{module}.{alias.name}" for alias in node.names if alias.name != "*")
    elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) and \
        isinstance(node.args[0].value, str):
      func = node.func
      called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
      if called in ("import_module", "__import__"):
        out.add(node.args[0].value)
  return out


def _is_under(module: str, package: str) -> bool:
  return module == package or module.startswith(package + ".")


def violations(path: pathlib.Path, root: pathlib.Path = ROOT) -> list[str]:
  """The forbidden imports of the r1jax module at `path` (under `root`), as "module imports target" lines."""
  name = module_name(path, root)
  found = []
  for target in sorted(imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py")):
    if any(_is_under(target, p) for p in OUTSIDE_LIBRARY):
      found.append(f"{name} imports {target} (not part of the library)")
    elif _is_under(target, "r1jax.stages") and not _is_under(name, "r1jax.stages"):
      found.append(f"{name} imports {target} (only r1jax.stages and what sits above it may)")
    elif _is_under(target, "r1jax") and target != "r1jax" and name != "r1jax":
      own, other = name.split(".")[1], target.split(".")[1]
      if own in ALLOWED and other != own and other not in ALLOWED[own] and other != "stages":
        found.append(f"{name} imports {target} (r1jax.{own} may import only {list(ALLOWED[own])})")
  return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_the_layers_exist():
  assert (PACKAGE / "stages" / "__init__.py").is_file()
  for package in BELOW_STAGES:
    assert (PACKAGE / package / "__init__.py").is_file(), package
  below = [p for p in MODULES if p.relative_to(PACKAGE).parts[0] in BELOW_STAGES]
  assert len(below) > 40 and len(MODULES) > len(below)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_upward_import(path):
  assert not violations(path)


def test_every_package_has_a_rule():
  packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()} - {"stages"}
  modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
  assert packages | modules == set(ALLOWED)


def test_the_check_sees_every_form_of_import():
  sources = {
      "import r1jax.stages.lm": {"r1jax.stages.lm"},
      "from r1jax import stages": {"r1jax", "r1jax.stages"},
      "from r1jax.stages.grpo import run_rl_stage": {"r1jax.stages.grpo", "r1jax.stages.grpo.run_rl_stage"},
      "def f():\n  from experiments import r1_zero\n": {"experiments", "experiments.r1_zero"},
      "import importlib\nimportlib.import_module('configs.r1_zero')": {"importlib", "configs.r1_zero"},
      "from ..stages import lm": {"r1jax.stages", "r1jax.stages.lm"},
      "from . import losses": {"r1jax.rl", "r1jax.rl.losses"},
  }
  for source, expected in sources.items():
    assert imported_modules(source, "r1jax.rl.step") == expected, source
  assert imported_modules("from .stages import lm", "r1jax", is_package=True) == {"r1jax.stages", "r1jax.stages.lm"}


def test_a_violation_is_reported(tmp_path):
  bad = tmp_path / "r1jax" / "train" / "bad.py"
  bad.parent.mkdir(parents=True)
  bad.write_text("from r1jax.stages.lm import run_lm_stage\nimport configs.sft\n")
  assert violations(bad, tmp_path) == [
      "r1jax.train.bad imports configs.sft (not part of the library)",
      "r1jax.train.bad imports r1jax.stages.lm (only r1jax.stages and what sits above it may)",
      "r1jax.train.bad imports r1jax.stages.lm.run_lm_stage (only r1jax.stages and what sits above it may)"]
  model = tmp_path / "r1jax" / "model" / "bad.py"
  model.parent.mkdir(parents=True)
  model.write_text("from r1jax.kernels import cpu\nfrom r1jax.sharding import mesh\n")
  assert violations(model, tmp_path) == [
      "r1jax.model.bad imports r1jax.kernels (r1jax.model may import only ['sharding'])",
      "r1jax.model.bad imports r1jax.kernels.cpu (r1jax.model may import only ['sharding'])"]
  ok = tmp_path / "r1jax" / "stages" / "fine.py"
  ok.parent.mkdir(parents=True)
  ok.write_text("from r1jax.stages import lm\nfrom r1jax.rl import step\n")
  assert violations(ok, tmp_path) == []
