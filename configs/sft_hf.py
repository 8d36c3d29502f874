"""SFT of a Hugging Face model on reasoning traces (cold start, rejection-sampled traces, a teacher's traces).

    python -m experiments.sft --config=configs/sft_hf.py:qwen2.5-0.5b-instruct \
        --config.init=hf:/ckpt/Qwen2.5-0.5B-Instruct --config.data=runs/rs/traces.jsonl --workdir=runs/sft_qwen

The traces are JSONL {"prompt", "completion"} records as rejection sampling writes them (their prompts are
already in the model's chat template); the loss is on the completions only, each ending with the model's
end-of-turn token. The tokenizer comes with the model. The argument names a preset (none is
qwen2.5-0.5b-instruct):

  qwen2.5-0.5b-instruct, qwen2.5-1.5b-instruct, r1-distill-qwen-1.5b, qwen3-0.6b   full fine-tuning
  qwen3-30b-a3b           LoRA (rank 16) on a frozen base, experts split 8 ways over the mesh
  tiny                    a tiny random checkpoint on a CPU (r1jax.testing.hf_checkpoints): the tests

Real-run defaults: bf16 compute with float32 parameters and rematerialised layers (config.load), packed rows
of 2-4k tokens in 4 microbatches per optimizer step (sft.lm.grad_accum_steps), a mesh over every device,
the result also written as a Hugging Face directory (WORKDIR/hf).
"""
from configs import sft
from configs._hf_presets import set_lm_section, set_load
from r1jax.config_utils import config_argument

PRESETS = {
    # name: (seq_len, batch_size, learning_rate, lora rank, grad_accum_steps, mesh)
    "qwen2.5-0.5b-instruct": (2048, 32, 1e-5, 0, 4, dict(data=-1)),
    "qwen2.5-1.5b-instruct": (2048, 32, 1e-5, 0, 4, dict(data=-1)),
    "r1-distill-qwen-1.5b": (4096, 16, 1e-5, 0, 4, dict(data=-1)),
    "qwen3-0.6b": (4096, 16, 1e-5, 0, 4, dict(data=-1)),
    "qwen3-30b-a3b": (4096, 16, 1e-4, 16, 4, dict(data=-1, expert=8)),
    "tiny": (192, 2, 1e-4, 0, 2, dict()),
}


def get_config(arg: str | None = None):
  arg = config_argument(arg, tuple(PRESETS), "configs/sft_hf.py") or "qwen2.5-0.5b-instruct"
  seq_len, batch, lr, rank, accum, mesh = PRESETS[arg]
  tiny = arg == "tiny"
  c = sft.get_config()
  c.preset = arg
  set_load(c, tiny)
  set_lm_section(c.sft, tiny=tiny, steps=2 if tiny else 1000, seq_len=seq_len, batch_size=batch,
                 learning_rate=lr, grad_accum_steps=accum)
  c.sft.lora.update(rank=rank, alpha=2.0 * rank if rank else 16.0)
  c.mesh.update(mesh)
  c.export_hf = True
  return c
