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
# This notebook runs r1jax's whole R1 pipeline (`experiments/r1_pipeline.py`) at toy scale:
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

# %%
# On Colab, clone and install r1jax first (locally: pip install -e ".[notebooks]" in a checkout).
# The pipeline's configs/ and experiments/ live in the repository next to the library, so the
# checkout goes on sys.path.
import os
import subprocess
import sys

if "google.colab" in sys.modules and not os.path.isdir("/content/r1jax"):
  subprocess.run(["git", "clone", "-q", "https://github.com/r1jax/r1jax", "/content/r1jax"], check=True)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/r1jax[notebooks]"], check=True)

import r1jax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(r1jax.__file__)))   # an editable install's checkout
if not os.path.exists(os.path.join(REPO, "configs", "r1_pipeline.py")):
  raise RuntimeError(f"{REPO} is not an r1jax checkout: install with pip install -e from a clone")
sys.path.insert(0, REPO)

# %% tags=["parameters"]
SETTING = None          # None (the README's run, ~15 min), "runlocal" (smoke, ~7 min) or "tiny" (the test)
WORKDIR = "/tmp/r1jax_quickstart"

# %%
import json

from absl import logging

from configs import r1_pipeline
from experiments.r1_pipeline import run

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

from r1jax.train.writers import MetricsWriter

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
