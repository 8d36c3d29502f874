"""SFT on JSONL traces ({"prompt", "completion"} per line, e.g. from experiments/rejection_sample.py).

    python -m experiments.sft --config=configs/sft.py --data=runs/r1/rs_cold/traces.jsonl \
        --tokenizer=runs/r1/tokenizer.model --init=runs/r1/pretrain/model --workdir=runs/sft

Completion-only loss on packed rows (prompts are context, never targets); the router bias is frozen, as
for fine-tuning. Without --init a model is trained from scratch with `model` (vocab from the tokenizer).
"""
import ml_collections


def get_config(arg: str | None = None):
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  c.model = dict(   # used only without --init: configs/r1_zero.py's MoE
      hidden_size=128, intermediate_size=384, num_hidden_layers=3, num_attention_heads=4,
      max_position_embeddings=256, n_routed_experts=4, n_shared_experts=1, moe_intermediate_size=96,
      num_experts_per_tok=2, n_group=1, topk_group=1, routed_scaling_factor=1.0, first_k_dense_replace=1,
      attention="mla", q_lora_rank=None, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=16,
      v_head_dim=32, moe_impl="sorted", initializer_range=0.02)
  steps = 10 if runlocal else 150
  c.sft = dict(
      num_steps=steps, batch_size=16, seq_len=192, log_every=min(25, steps), checkpoint_every=50,
      template="compact", lm=dict(router_bias_rate=0.0, balance_loss_coef=0.0),
      optim=dict(learning_rate=1e-3, warmup_steps=min(20, steps // 4), total_steps=steps, weight_decay=0.01,
                 end_lr_ratio=0.05))
  return c
