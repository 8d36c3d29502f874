"""The core install (`pip install -e .`) is enough to import every library module, config and experiment.

The test and hf extras (torch, transformers, safetensors, pytest, the notebook runners) are installed in the
test environment, so a module that imports one of them at import time would pass every other test and still
break a user who followed the set-up line. Here they are made unimportable in a fresh interpreter, and every
module under r1jax/, configs/ and experiments/ is imported.
"""
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXTRAS_ONLY = ("torch", "transformers", "safetensors", "pytest", "hypothesis", "xdist", "jupytext", "nbclient",
               "nbformat", "ipykernel")

_SCRIPT = r"""
import importlib, importlib.abc, pathlib, sys

BLOCKED = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"No module named {name!r} (blocked: not a core requirement)")
    return None

sys.meta_path.insert(0, Block())
root = pathlib.Path(sys.argv[2])
names = []
for package in ("r1jax", "configs", "experiments"):
  for path in sorted((root / package).rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
failed = []
for name in names:
  try:
    importlib.import_module(name)
  except Exception as e:  # report every failure, not just the first
    failed.append(f"{name}: {type(e).__name__}: {e}")
print(len(names), "modules")
if failed:
  sys.exit("\n".join(failed))
"""


@pytest.mark.parametrize("blocked", [EXTRAS_ONLY, EXTRAS_ONLY + ("tokenizers",)], ids=["extras", "extras+tokenizers"])
def test_every_module_imports_without_the_extras(blocked):
  """Also without `tokenizers` (a core requirement that only the Hugging Face tokenizer uses, when it loads)."""
  proc = subprocess.run([sys.executable, "-c", _SCRIPT, ",".join(blocked), str(ROOT)], cwd=ROOT,
                        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu",
                                                                           "PYTHONPATH": str(ROOT)})
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert int(proc.stdout.split()[0]) > 50
