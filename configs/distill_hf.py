"""Distillation of a Hugging Face student from a Hugging Face teacher's reasoning traces, as R1's distilled
models were made (sequence level), optionally with token-level KD against the teacher's top-k log-probs.

    python -m experiments.distill --config=configs/distill_hf.py:qwen2.5-1.5b \
        --config.teacher=hf:/ckpt/DeepSeek-R1-Distill-Qwen-7B --config.student_init=hf:/ckpt/Qwen2.5-1.5B \
        --config.data=runs/rs_teacher/traces.jsonl --workdir=runs/distill_qwen15

The student starts from `student_init` and must share the teacher's vocabulary (checked before any work);
the tokenizer is the teacher's unless config.tokenizer names one. The argument names a preset sized for the
student (none is qwen2.5-1.5b): qwen2.5-0.5b, qwen2.5-1.5b, qwen3-0.6b, or tiny (the tests' random
checkpoints). Token-level KD is off by default (distill.distill.top_k=0: SFT on the traces, R1's recipe);
top_k=8 adds it where teacher and student tokenize alike.
"""
from configs import distill
from configs._hf_presets import set_lm_section, set_load
from r1jax.config_utils import config_argument

PRESETS = {
    # name: (seq_len, batch_size, learning_rate, grad_accum_steps, mesh)
    "qwen2.5-0.5b": (4096, 16, 1e-5, 4, dict(data=-1)),
    "qwen2.5-1.5b": (4096, 16, 1e-5, 4, dict(data=-1)),
    "qwen3-0.6b": (4096, 16, 1e-5, 4, dict(data=-1)),
    "tiny": (192, 2, 1e-4, 2, dict()),
}


def get_config(arg: str | None = None):
  arg = config_argument(arg, tuple(PRESETS), "configs/distill_hf.py") or "qwen2.5-1.5b"
  seq_len, batch, lr, accum, mesh = PRESETS[arg]
  tiny = arg == "tiny"
  c = distill.get_config()
  c.preset = arg
  set_load(c, tiny)
  set_lm_section(c.distill, tiny=tiny, steps=2 if tiny else 2000, seq_len=seq_len, batch_size=batch,
                 learning_rate=lr, grad_accum_steps=accum)
  c.distill.distill.update(top_k=0)
  c.mesh.update(mesh)
  c.export_hf = True
  return c
