"""Distil a dense student from a teacher's traces (sequence level, as R1's distilled models) plus, optionally,
token-level KD against the teacher's top-k log-probs on the same traces.

    python -m experiments.distill --config=configs/distill.py --config.data=runs/r1/rs_r1/traces.jsonl \
        --config.tokenizer=runs/r1/tokenizer.model --config.teacher=runs/r1/sft_r1/model \
        [--config.student_init=runs/r1/student_pretrain/model] --workdir=runs/distill

The student is a Qwen2-style dense model (GQA, qkv bias, tied embeddings); it shares the teacher's
tokenizer. `distill.distill.top_k=0` turns token-level KD off (pure SFT on the traces).
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields
from r1jax.model import preset_fields
from r1jax.model.runtime import runtime_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal",), "configs/distill.py")
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  # Inputs (required unless marked optional).
  c.data = ""                              # comma-separated JSONL trace files (the teacher's)
  c.teacher = ""                           # the teacher: an export, hf:DIR or orbax:DIR
  c.tokenizer = ""                         # optional: the tokenizer teacher and student share (empty: the teacher's)
  c.student_init = ""                      # optional: a student to start from (empty: `student` from scratch)
  c.export_hf = False                      # also write the student as a Hugging Face directory, WORKDIR/hf

  # How the models are loaded: compute dtype, parameter dtype, rematerialisation ("" = as stored), e.g.
  # --config.load.dtype=bfloat16 for a Hugging Face model.
  c.load = dict(dtype="", param_dtype="", remat="")
  c.student = preset_fields("cpu_qwen2")   # used only without `student_init`
  steps = 10 if runlocal else 150
  c.distill = dict(
      num_steps=steps, batch_size=16, seq_len=192, log_every=min(25, steps), checkpoint_every=50,
      template="compact", input_shards=0,   # 0: one input shard per batch slice of the mesh
      resume_override="",                   # keys allowed to differ from the checkpoint's fingerprint ("all": any)
      lm=dict(router_bias_rate=0.0, balance_loss_coef=0.0, grad_accum_steps=1),
      optim=dict(learning_rate=1e-3, warmup_steps=min(20, steps // 4), total_steps=steps, weight_decay=0.01,
                 end_lr_ratio=0.05),
      distill=dict(top_k=8, kd_weight=0.5, temperature=1.0),
      runtime=runtime_fields())          # r1jax.model.runtime.Runtime: MoE dispatch, capacity factor
  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  return c
