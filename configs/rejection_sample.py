"""Rejection sampling from an exported RL checkpoint: K samples per problem, keep the correct, formatted ones.

    python -m experiments.rejection_sample --config=configs/rejection_sample.py \
        --config.model=runs/r1/r1_zero/model --config.tokenizer=runs/r1/tokenizer.model --workdir=runs/rs
    python -m experiments.rejection_sample --config=configs/rejection_sample.py:runlocal ...   # a small run
    python -m experiments.rejection_sample --config=configs/rejection_sample.py:gsm8k \
        --config.model=runs/grpo_qwen/model --workdir=runs/rs_qwen        # a released model's GSM8K traces

The traces go to WORKDIR/traces.jsonl (traces.jsonl.progress.json and traces.jsonl.stats.json beside it).

The defaults match configs/r1_zero.py (2-digit addition, the compact template, 24 prompt tokens and 40
new tokens), whose RL policy is the model this stage is meant to read. The problems are the train split:
the traces become SFT data, so the test split stays held out for evaluation.

`gsm8k` is sized for a Hugging Face model (or a GRPO run from one, configs/grpo_gsm8k.py): the GSM8K train
split in the model's chat template with the \\boxed{} instruction (chat_boxed), 8 samples per problem at
temperature 0.6 with up to 2048 new tokens, kept when the boxed answer is right (the accuracy reward; no
format reward, which scores the compact template's tags), bf16 compute, a mesh over every device.
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal", "gsm8k"), "configs/rejection_sample.py")
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  # Inputs (required unless marked optional).
  c.model = ""                                           # the model to sample from: export, hf:DIR, orbax:DIR
  c.tokenizer = ""                                       # optional: empty = the one that comes with the model

  # How the models are loaded: compute dtype, parameter dtype, rematerialisation ("" = as stored), e.g.
  # --config.load.dtype=bfloat16 for a Hugging Face model.
  c.load = dict(dtype="", param_dtype="", remat="")
  c.seed = 0                                             # which problems are drawn
  c.task = dict(name="arithmetic", digits=2, ops="+")   # r1jax.data.tasks.get(name, **rest)
  c.split = "train"
  c.num_problems = 16 if runlocal else 2000
  c.template = "compact"                                 # "Q: {question}\nA: <think>"

  # r1jax.stages.rejection.RejectionConfig. `template` is a reference to c.template: overriding either
  # changes both, so the prompts sampled and the prompts written for SFT cannot disagree.
  c.rejection = dict(
      num_samples=4 if runlocal else 16, batch_size=8 if runlocal else 64, max_prompt_len=24,
      max_new_tokens=40, temperature=1.0, top_k=0, top_p=1.0, template=c.get_ref("template"),
      reward_weights=(("accuracy", 1.0), ("format", 1.0)), reward_options=(),
      min_rewards=(("accuracy", 1.0), ("format", 1.0)), min_total=float("-inf"),
      max_per_prompt=1 if runlocal else 2, prefer="shortest", seed=0,
      target_kept=0)                  # > 0: num_problems is a pool, sampled in order until this many traces are kept

  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  if arg == "gsm8k":
    c.load.update(dtype="bfloat16", param_dtype="bfloat16", remat="")
    c.task = dict(name="gsm8k")
    c.num_problems = 7473                                # the whole train split
    c.template = "chat_boxed"
    c.rejection.update(num_samples=8, batch_size=64, max_prompt_len=256, max_new_tokens=2048, temperature=0.6,
                       reward_weights=(("accuracy", 1.0),), min_rewards=(("accuracy", 1.0),), max_per_prompt=2)
    c.mesh.update(data=-1)
  return c
