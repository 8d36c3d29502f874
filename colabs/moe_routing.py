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
# # MoE routing: expert load with and without the balancing bias
#
# DeepSeek-V3 routes every token to the top-k of its routed experts. Left alone, a router tends to
# collapse: a few experts get most tokens, the rest get too few to learn, and under expert parallelism
# the busiest device sets the step time. DeepSeek-V3 balances the load **without an auxiliary loss**
# (Sec. 2.1.2 of the V3 report):
#
# * each expert $i$ has a bias $b_i$ that is added to its affinity score $s_i$ **only to choose** the
#   top-k experts: $\text{chosen} = \text{topk}_i(s_i + b_i)$;
# * the gating weights that mix the chosen experts' outputs come from the **unbiased** $s_i$, so the
#   bias never changes what an expert contributes, only whether it is picked;
# * after each step, $b_i \leftarrow b_i + \gamma \cdot \text{sign}(\overline{\text{load}} -
#   \text{load}_i)$: overloaded experts are pushed down, underloaded ones up. No gradient flows through
#   the bias (in r1jax it lives in the `router_bias` collection, outside `params`, so the optimizer
#   and weight decay never touch it; `r1jax.model.moe.update_router_bias` moves it).
#
# This notebook trains a small DeepSeek-V3-style MoE with the bias on and the balance loss off
# (`LMConfig(router_bias_rate=1e-3, balance_loss_coef=0.0)`), exports it as a real checkpoint, and then
# measures, on held-out text, how many tokens each expert of each layer receives **with the learned
# bias** and **with the bias zeroed**. The router's weights learned to rely on the bias, so removing it
# shows the imbalance the bias is correcting.
#
# Runs top to bottom on a CPU runtime (a few minutes with the default setting).

# %% [markdown]
# ## Setup
#
# Run locally where r1jax is installed (`pip install -e ".[notebooks]"` in a checkout), the notebook
# needs no setup: leave `R1JAX_SOURCE` empty. On a fresh hosted runtime (Colab) set `R1JAX_SOURCE` to
# where r1jax comes from: the git URL of an r1jax repository (cloned once into `./<repository name>`,
# `/content/r1jax` on Colab), or the path of a checkout on this machine (a folder uploaded to `/content`,
# or on a mounted Drive). The cell after the parameters then pip-installs it with its notebook extras.

# %% tags=["parameters"]
R1JAX_SOURCE = ""    # a git URL or the path of an r1jax checkout; needed where r1jax is not installed
PIP_ARGS = []        # extra `pip install` arguments, e.g. ["--no-index", "--find-links", "/content/wheels"]
STEPS = 300          # pretraining steps of the small MoE
TINY = False         # a seconds-long smoke setting (what the notebook test runs)
BIAS_RATE = 1e-3     # gamma, the bias update speed (DeepSeek-V3 pretraining: 1e-3)
SEED = 0
WORKDIR = "/tmp/r1jax_moe_routing"   # checkpoints, the exported model, the figure and a JSON summary

# %% tags=["install"]
# Installs r1jax where this kernel cannot import it (a fresh runtime), or from R1JAX_SOURCE when that is
# set and r1jax is not imported yet (a restarted runtime installs the source again). It is a plain, not
# an editable, `pip install <checkout>[notebooks]` into this interpreter: an editable install is only
# importable after the interpreter restarts, a plain one right away.
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

import r1jax

print(f"r1jax {r1jax.__version__} from {os.path.dirname(r1jax.__file__)}")

# %%
import json
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from absl import logging

from r1jax.checkpoint import is_model, load_model, save_model
from r1jax.data import SentencePieceTokenizer, get_template, tasks
from r1jax.data.corpora import addition_corpus
from r1jax.model import ModelConfig
from r1jax.model.transformer import apply_model
from r1jax.stages.lm import LMStageConfig, run_lm_stage
from r1jax.train.lm import LMConfig
from r1jax.train.optim import OptimConfig

logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
os.makedirs(WORKDIR, exist_ok=True)
print("jax", jax.__version__, "on", jax.devices()[0].platform)

# %% [markdown]
# ## Data: 2-digit addition with worked solutions
#
# The same synthetic corpus as the R1-Zero experiment (`configs/r1_zero.py`): each training problem
# gets a completion that is either a worked column addition inside `<think>`, a direct answer, or a
# bare answer. The test split (problems never trained on) is the held-out text the loads are measured
# on.

# %%
task = tasks.get("arithmetic", digits=2, ops="+")
template = get_template("compact")
num_train, num_heldout = (200, 64) if TINY else (3000, 400)
train = list(task.examples("train", seed=SEED, num=num_train))
heldout = list(task.examples("test", seed=SEED, num=num_heldout))
corpus = addition_corpus(train, template, seed=SEED)
heldout_text = [r["prompt"] + r["completion"] for r in addition_corpus(heldout, template, seed=SEED + 1)]
print(f"{len(corpus)} training records, {len(heldout_text)} held-out texts; e.g.\n{heldout_text[0]}")

# %% [markdown]
# ## A real checkpoint
#
# If `R1JAX_MODEL_DIR` names a model exported by the pipeline (`r1jax.checkpoint.save_model`), the
# notebook analyses that model; its tokenizer is looked up as `tokenizer.model` in that directory or
# the two above it. Otherwise it pretrains a small MoE with r1jax's LM stage into `WORKDIR/pretrain`
# (resumable: rerunning continues from the last checkpoint), and exports the result to `WORKDIR/model`.
# Either way the model is then read back with `load_model`, the path every later stage uses.


# %%
def find_tokenizer(model_dir):
  d = os.path.abspath(model_dir)
  for _ in range(3):
    path = os.path.join(d, "tokenizer.model")
    if os.path.exists(path):
      return path
    d = os.path.dirname(d)
  raise FileNotFoundError(f"no tokenizer.model in {model_dir} or the two directories above it")


def train_and_export(model_dir):
  tok_path = os.path.join(WORKDIR, "tokenizer.model")
  if os.path.exists(tok_path):                 # a resumed run must keep its vocabulary
    tok = SentencePieceTokenizer.load(tok_path)
  else:
    tok = SentencePieceTokenizer.train([r["prompt"] + r["completion"] for r in corpus], vocab_size=296)
    tok.save(tok_path)
  if TINY:
    size = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                n_routed_experts=4, moe_intermediate_size=32, kv_lora_rank=16, qk_nope_head_dim=8,
                qk_rope_head_dim=8, v_head_dim=8)
  else:
    size = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
                n_routed_experts=8, moe_intermediate_size=64, kv_lora_rank=32, qk_nope_head_dim=16,
                qk_rope_head_dim=16, v_head_dim=32)
  cfg = ModelConfig(vocab_size=tok.vocab_size, max_position_embeddings=256, n_shared_experts=1,
                    num_experts_per_tok=2, n_group=1, topk_group=1, routed_scaling_factor=1.0,
                    first_k_dense_replace=1, attention="mla", q_lora_rank=None,
                    initializer_range=0.02, **size)
  stage = LMStageConfig(
      num_steps=STEPS, batch_size=8 if TINY else 16, seq_len=96 if TINY else 192, seed=SEED,
      log_every=max(1, STEPS // 10), checkpoint_every=max(1, STEPS // 2),
      lm=LMConfig(router_bias_rate=BIAS_RATE, balance_loss_coef=0.0),
      optim=OptimConfig(learning_rate=3e-3, warmup_steps=min(20, STEPS // 4), total_steps=STEPS,
                        weight_decay=0.01, end_lr_ratio=0.05))
  variables = run_lm_stage(cfg, stage, examples=[{"prompt": r["prompt"], "completion": r["completion"]}
                                                 for r in corpus],
                           tokenizer=tok, workdir=os.path.join(WORKDIR, "pretrain"))
  save_model(model_dir, cfg, variables, metadata={"stage": "moe_routing_pretrain", "steps": STEPS,
                                                  "router_bias_rate": BIAS_RATE})
  tok.save(os.path.join(model_dir, "tokenizer.model"))


model_dir = os.environ.get("R1JAX_MODEL_DIR") or os.path.join(WORKDIR, "model")
if not is_model(model_dir):
  if os.environ.get("R1JAX_MODEL_DIR"):
    raise FileNotFoundError(f"R1JAX_MODEL_DIR={model_dir} is not an exported r1jax model")
  train_and_export(model_dir)
cfg, variables, metadata = load_model(model_dir, ModelConfig)
tok = SentencePieceTokenizer.load(find_tokenizer(model_dir))
moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
print(f"model {model_dir}: {metadata}")
print(f"{cfg.num_hidden_layers} layers, MoE layers {moe_layers}, {cfg.n_routed_experts} routed experts "
      f"(top-{cfg.num_experts_per_tok}), routing bias: {cfg.use_routing_bias}")
assert cfg.is_moe and moe_layers, "the expert-load analysis needs an MoE model"

# %% [markdown]
# The learned biases, one row per MoE layer. They started at zero and moved by $\pm\gamma$ per step.

# %%
if cfg.use_routing_bias:
  learned_bias = np.stack([np.asarray(variables["router_bias"][f"layers_{i}"]["mlp"]["e_score_correction_bias"])
                           for i in moe_layers])
  np.set_printoptions(precision=3, suppress=True)
  print(learned_bias)
else:
  print("this model routes without a bias (e.g. Qwen3-MoE): both heatmaps below are the same")

# %% [markdown]
# ## Expert load on held-out text
#
# `apply_model` returns, besides the logits, per-MoE-layer statistics in `aux`;
# `aux["expert_counts"]` is `[layers, experts]`: how many (real, unpadded) tokens picked each expert.
# One forward pass with the learned bias, one with every bias set to zero.


# %%
def batch_of(texts):
  ids = [[tok.bos_id] + tok.encode(t) + [tok.eos_id] for t in texts]
  n = min(max(map(len, ids)), cfg.max_position_embeddings)
  tokens = np.full((len(ids), n), tok.pad_id, np.int32)
  mask = np.zeros((len(ids), n), np.int32)
  for r, x in enumerate(ids):
    x = x[:n]
    tokens[r, :len(x)] = x
    mask[r, :len(x)] = 1
  return jnp.asarray(tokens), jnp.asarray(mask)


@jax.jit
def expert_counts(variables, tokens, mask):
  return apply_model(cfg, variables, tokens, attention_mask=mask).aux["expert_counts"]


def max_vio(c):
  """Per layer: the busiest expert's load over the mean load, minus 1 (see below)."""
  return c.max(-1) / c.mean(-1) - 1.0


tokens, mask = batch_of(heldout_text)
no_bias = {**variables, "router_bias": jax.tree.map(jnp.zeros_like, variables["router_bias"])} \
    if "router_bias" in variables else variables
counts = {"bias zeroed": np.asarray(expert_counts(no_bias, tokens, mask)),
          "learned bias": np.asarray(expert_counts(variables, tokens, mask))}
share = {k: c / c.sum(-1, keepdims=True) for k, c in counts.items()}
print(f"{int(mask.sum())} held-out tokens x top-{cfg.num_experts_per_tok} = "
      f"{int(counts['learned bias'][0].sum())} expert assignments per layer")

# %% [markdown]
# ## Heatmaps: share of each layer's assignments per expert
#
# A balanced layer is a flat row at $1/E$. The colour scale is shared by both panels.

# %%
vmax = max(s.max() for s in share.values())
fig, axes = plt.subplots(1, 2, figsize=(2.2 + 1.1 * cfg.n_routed_experts, 1.2 + 0.6 * len(moe_layers)),
                         sharey=True, constrained_layout=True)
for ax, (name, s) in zip(axes, share.items()):
  im = ax.imshow(s, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
  for (r, e), v in np.ndenumerate(s):
    ax.text(e, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="w" if v < 0.6 * vmax else "k")
  ax.set_title(f"{name}: mean MaxVio {np.mean(max_vio(s)):.2f}")
  ax.set_xlabel("routed expert")
  ax.set_xticks(range(s.shape[1]))
axes[0].set_yticks(range(len(moe_layers)), [f"layer {i}" for i in moe_layers])
fig.colorbar(im, ax=axes, label=f"load share (balanced = 1/{cfg.n_routed_experts})")
fig_path = os.path.join(WORKDIR, "expert_load.png")
fig.savefig(fig_path, dpi=120)
plt.show()
print("saved", fig_path)

# %% [markdown]
# ## MaxVio per layer
#
# DeepSeek's balance metric (Wang et al., 2024, "Auxiliary-Loss-Free Load Balancing Strategy for
# Mixture-of-Experts"): $\text{MaxVio} = \max_i \text{load}_i / \overline{\text{load}} - 1$, the relative
# overload of the busiest expert; 0 is perfectly balanced, $E - 1$ is total collapse onto one expert
# (with top-k routing at most $E/k - 1$).

# %%
summary = {"layers": moe_layers, "num_experts": cfg.n_routed_experts,
           "maxvio_bias_zeroed": max_vio(counts["bias zeroed"]).tolist(),
           "maxvio_learned_bias": max_vio(counts["learned bias"]).tolist()}
print(f"{'layer':>6} {'MaxVio, bias zeroed':>20} {'MaxVio, learned bias':>21}")
for i, before, after in zip(moe_layers, summary["maxvio_bias_zeroed"], summary["maxvio_learned_bias"]):
  print(f"{i:>6} {before:>20.3f} {after:>21.3f}")
print(f"{'mean':>6} {np.mean(summary['maxvio_bias_zeroed']):>20.3f} "
      f"{np.mean(summary['maxvio_learned_bias']):>21.3f}")
with open(os.path.join(WORKDIR, "expert_load.json"), "w") as f:
  json.dump(summary, f, indent=1)

# %% [markdown]
# With the learned bias the loads are much closer to uniform; with it zeroed, the router's own
# preferences show. A bias moves by at most $\gamma$ per step, so a layer whose router strongly prefers
# a few experts can still be catching up when training stops (more `STEPS`, or a larger `BIAS_RATE`,
# flattens it further). The bias is cheap (one number per expert, no gradient, no loss term competing
# with the LM objective), which is why DeepSeek-V3 uses it instead of a large auxiliary balance loss and
# keeps only a tiny sequence-wise one (`LMConfig.balance_loss_coef`, 1e-4 by default in r1jax).
