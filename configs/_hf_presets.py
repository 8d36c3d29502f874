"""What the Hugging Face presets (grpo_gsm8k, sft_hf, distill_hf) share: how a real run loads its models, and
the schedule of a packed-rows training section."""

# bf16 compute, float32 parameters, rematerialised layers; the `tiny` test preset loads as stored.
REAL_RUN_LOAD = dict(dtype="bfloat16", param_dtype="float32", remat="full")
AS_STORED = dict(dtype="", param_dtype="", remat="")


def set_load(c, tiny: bool) -> None:
  """c.load for a real run, or as stored for the tiny test checkpoint."""
  c.load.update(AS_STORED if tiny else REAL_RUN_LOAD)


def set_lm_section(section, *, tiny: bool, steps: int, seq_len: int, batch_size: int, learning_rate: float,
                   grad_accum_steps: int) -> None:
  """An LMStageConfig section (sft or distill) of a preset: its size (batch_size rows per optimizer step, in
  grad_accum_steps microbatches), logging, checkpoints and optimizer."""
  section.update(num_steps=steps, batch_size=batch_size, seq_len=seq_len, log_every=1 if tiny else 10,
                 checkpoint_every=1 if tiny else 100)
  section.lm.grad_accum_steps = grad_accum_steps
  section.optim.update(learning_rate=learning_rate, warmup_steps=0 if tiny else 50, total_steps=steps,
                       weight_decay=0.0, end_lr_ratio=0.1)
