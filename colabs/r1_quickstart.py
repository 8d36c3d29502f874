# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The DeepSeek-R1 pipeline on a CPU runtime
#
# This notebook runs r1jax's whole R1 pipeline (`r1jax.stages.pipeline`, what `experiments/r1_pipeline.py`
# runs) at toy scale:
#
# 1. **pretrain** a tiny DeepSeek-V3-style MoE on 2-digit addition. The corpus mixes a worked
#    column-by-column solution inside `<think>` (rarer) with a direct answer that forgets to carry, and
#    names the columns partly in English, partly in Cyrillic: the *language mixing* R1-Zero showed;
# 2. **R1-Zero**: GRPO from the base with rule rewards only (accuracy + format);
# 3. **rejection sampling** from R1-Zero (correct, well-formatted, single-script traces) and a
#    **cold-start SFT** of the base on them;
# 4. **RL round 2** with the language-consistency reward added;
# 5. rejection sampling again and an **SFT** of the base on those traces: **R1**;
# 6. **distillation** of a small dense Qwen2-style student on R1's traces, next to the same student
#    pretrained on the corpus alone;
# 7. one **evaluation table** on held-out problems.
#
# Every stage is resumable: rerunning a cell after an interruption continues where it stopped.
# The default configuration is already small: about 15 minutes on a 2-core CPU runtime, with the
# results in the README. `SETTING = "runlocal"` runs every stage at a third of the length (about 7
# minutes): a smoke run whose models are too short-trained to learn the task.

# %% [markdown]
# ## Setup
#
# Run locally from a checkout where r1jax is installed (`pip install -e ".[notebooks]"`), the notebook
# needs no setup: leave `R1JAX_SOURCE` empty. On a fresh hosted runtime (Colab) set `R1JAX_SOURCE` to
# where r1jax comes from: the git URL of an r1jax repository (cloned once into `./<repository name>`,
# `/content/r1jax` on Colab), or the path of a checkout on this machine (a folder uploaded to `/content`,
# or on a mounted Drive). The next cell then pip-installs it with its notebook extras into this runtime.

# %% tags=["parameters"]
R1JAX_SOURCE = ""       # a git URL or the path of an r1jax checkout; needed where r1jax is not installed
PIP_ARGS = []           # extra `pip install` arguments, e.g. ["--no-index", "--find-links", "/content/wheels"]
SETTING = None          # None (the README's run, ~15 min), "runlocal" (smoke, ~7 min) or "tiny" (the test)
WORKDIR = "/tmp/r1jax_quickstart"

# %% tags=["install"]
# Installs r1jax where this kernel cannot import it (a fresh runtime), or from R1JAX_SOURCE when that is
# set and r1jax is not imported yet (a restarted runtime installs the source again). It is a plain, not
# an editable, `pip install <checkout>[notebooks]` into this interpreter: an editable install is only
# importable after the interpreter restarts, a plain one right away. The pipeline's configs/ package is
# not part of the library, so the checkout also goes on sys.path.
import importlib
import importlib.util
import os
import subprocess
import sys


def run_command(cmd):
  """Runs `cmd`, streaming its output into the notebook (a subprocess's own output may not reach it)."""
  print("$", " ".join(cmd), flush=True)
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    print(line, end="", flush=True)
  if proc.wait():
    raise RuntimeError(f"{' '.join(cmd[:4])} ... failed with exit status {proc.returncode} (output above)")


def checkout_of(source):
  """The r1jax checkout that `source` names: a directory as it is, a git URL cloned once into ./<name>."""
  if "://" in source or source.startswith("git@"):
    url = source.removeprefix("git+")
    path = os.path.abspath(os.path.basename(url.rstrip("/")).removesuffix(".git"))
    if not os.path.exists(path):
      run_command(["git", "clone", "-q", "--depth", "1", url, path])
  else:
    path = os.path.abspath(os.path.expanduser(source))
  if not (os.path.isfile(os.path.join(path, "setup.py")) and os.path.isdir(os.path.join(path, "r1jax"))):
    raise FileNotFoundError(f"R1JAX_SOURCE={source!r}: {path} is not an r1jax checkout (no setup.py and "
                            "r1jax/ in it); delete it if it is a clone of something else")
  return path


checkout = checkout_of(R1JAX_SOURCE) if R1JAX_SOURCE else None
if importlib.util.find_spec("r1jax") is None or (checkout and "r1jax" not in sys.modules):
  if checkout is None:
    raise RuntimeError(
        "r1jax is not installed in this runtime: set R1JAX_SOURCE in the parameters cell to the git URL of "
        "an r1jax repository, or to the path of an r1jax checkout on this machine (e.g. a folder uploaded "
        "to /content or on a mounted Drive), and run the notebook again")
  run_command([sys.executable, "-m", "pip", "install", "-q", checkout + "[notebooks]", *PIP_ARGS])
  importlib.invalidate_caches()   # the import system's directory caches predate the install

import r1jax  # before the checkout goes on sys.path, so this is the installed copy

if checkout is None:   # r1jax was already installed: an editable install's checkout, if it is one
  checkout = os.path.dirname(os.path.dirname(os.path.abspath(r1jax.__file__)))
if not os.path.isfile(os.path.join(checkout, "configs", "r1_pipeline.py")):
  raise FileNotFoundError(f"{checkout} has no configs/r1_pipeline.py: set R1JAX_SOURCE to an r1jax checkout")
if checkout not in sys.path:
  sys.path.insert(0, checkout)
print(f"r1jax {r1jax.__version__} from {os.path.dirname(r1jax.__file__)}; configs/ from {checkout}")

# %%
import json

from absl import logging

from configs import r1_pipeline
from r1jax.stages.pipeline import run

logging.set_verbosity(logging.WARNING)
config = r1_pipeline.get_config(SETTING)
result = run(config, WORKDIR)

# %% [markdown]
# ## Training curves of the two RL stages
#
# Reward, accuracy, format rate and response length of the training rollouts, per GRPO step. In round 2
# the language-consistency reward joins the sum.

# %%
import matplotlib.pyplot as plt

from r1jax.stages.writers import MetricsWriter

fig, axes = plt.subplots(1, 4, figsize=(15, 3))
for stage in ("r1_zero", "rl2"):
  records = MetricsWriter(os.path.join(WORKDIR, stage, "metrics.jsonl")).read("train")
  for ax, key in zip(axes, ("reward", "accuracy", "format", "length")):
    ax.plot([r["step"] for r in records], [r[key] for r in records], marker=".", label=stage)
    ax.set_title(key)
    ax.set_xlabel("GRPO step")
axes[0].legend()
fig.tight_layout()
fig.savefig(os.path.join(WORKDIR, "quickstart_curves.png"), dpi=100)
plt.show()

# %% [markdown]
# ## Evaluation table
#
# Held-out problems never seen in pretraining or RL. `language consistent` is the share of completions
# whose chain of thought is written entirely in the target script.

# %%
from IPython.display import Image, Markdown, display

display(Markdown(open(os.path.join(WORKDIR, "report.md")).read()))
display(Image(os.path.join(WORKDIR, "eval", "results.png")))
with open(os.path.join(WORKDIR, "eval", "results.json")) as f:
  results = json.load(f)
summary = {name: round(rep["pass@1_greedy"], 3) for name, rep in results.items()}
print(json.dumps(summary))
