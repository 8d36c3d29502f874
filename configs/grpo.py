"""GRPO from an exported model on a task's train split (experiments/grpo.py): the RL stage on its own.

    python -m experiments.grpo --config=configs/grpo.py --config.init=runs/r1/pretrain/model \
        --config.tokenizer=runs/r1/tokenizer.model --workdir=runs/grpo

Defaults match configs/r1_zero.py's RL stage (R1-Zero: accuracy + format rewards, DAPO token-mean loss
with clip-higher and dynamic sampling). Add ("language_consistency", w) to `rl.reward_weights` for R1's
round-2 reward.
"""
import ml_collections

from configs import r1_zero
from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal",), "configs/grpo.py")
  runlocal = arg == "runlocal"
  base = r1_zero.get_config(arg)
  c = ml_collections.ConfigDict()
  # Inputs (required unless marked optional).
  c.init = ""                                   # the model to start from (and the reference policy): an
                                                # export, hf:DIR or orbax:DIR
  c.tokenizer = ""                              # optional: empty = the one that comes with the model
  c.export_hf = False                           # also write the policy as a Hugging Face directory, WORKDIR/hf

  # How the models are loaded: compute dtype, parameter dtype, rematerialisation ("" = as stored), e.g.
  # --config.load.dtype=bfloat16 for a Hugging Face model.
  c.load = dict(dtype="", param_dtype="", remat="")
  c.seed = 0
  c.task = base.task.to_dict()                  # r1jax.data.tasks.get(name, **rest)
  c.num_train_problems = base.num_train_problems
  c.num_eval_problems = 40 if runlocal else 200  # held out: evaluated every rl.eval_every steps and at the end
  c.rl = base.rl.to_dict()                      # r1jax.stages.grpo.RLStageConfig
  # LoRA: rank > 0 trains low-rank adapters on the attention/MLP projections of a frozen base (also the
  # reference policy); the exported model has them merged in.
  c.rl.lora = dict(rank=0, alpha=16.0, targets=("attention", "mlp"))
  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  return c
