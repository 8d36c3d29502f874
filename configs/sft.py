"""SFT on JSONL traces ({"prompt", "completion"} per line, e.g. from experiments/rejection_sample.py).

    python -m experiments.sft --config=configs/sft.py --config.data=runs/r1/rs_cold/traces.jsonl \
        --config.tokenizer=runs/r1/tokenizer.model --config.init=runs/r1/pretrain/model --workdir=runs/sft

Completion-only loss on packed rows (prompts are context, never targets); the router bias is frozen, as
for fine-tuning. Without `init` a model is trained from scratch with `model` (vocab from the tokenizer).
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields
from r1jax.model import preset_fields
from r1jax.model.runtime import runtime_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal",), "configs/sft.py")
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  # Inputs (required unless marked optional).
  c.data = ""                          # comma-separated JSONL trace files
  c.init = ""                          # optional: the model to fine-tune: an export, hf:DIR or orbax:DIR (empty:
                                       # `model` from scratch)
  c.tokenizer = ""                     # optional with `init`: its own; else a SentencePiece .model file or a
                                       # directory with tokenizer.json
  c.export_hf = False                  # also write the result as a Hugging Face directory, WORKDIR/hf

  # How the models are loaded: compute dtype, parameter dtype, rematerialisation ("" = as stored), e.g.
  # --config.load.dtype=bfloat16 for a Hugging Face model.
  c.load = dict(dtype="", param_dtype="", remat="")
  c.model = preset_fields("cpu_moe")   # used only without `init`
  steps = 10 if runlocal else 150
  c.sft = dict(
      num_steps=steps, batch_size=16, seq_len=192, log_every=min(25, steps), checkpoint_every=50,
      template="compact", input_shards=0,   # 0: one input shard per batch slice of the mesh
      resume_override="",                   # keys allowed to differ from the checkpoint's fingerprint ("all": any)
      lm=dict(router_bias_rate=0.0, balance_loss_coef=0.0, grad_accum_steps=1),
      optim=dict(learning_rate=1e-3, warmup_steps=min(20, steps // 4), total_steps=steps, weight_decay=0.01,
                 end_lr_ratio=0.05),
      runtime=runtime_fields(),          # r1jax.model.runtime.Runtime: MoE dispatch, capacity factor
      # rank > 0: low-rank adapters on the attention/MLP projections of a frozen `init`, exported merged
      lora=dict(rank=0, alpha=16.0, targets=("attention", "mlp")))
  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  return c
