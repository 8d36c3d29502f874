"""GRPO on GSM8K from a released Hugging Face model, evaluated on GSM8K test and MATH-500.

    python -m experiments.grpo --config=configs/grpo_gsm8k.py:qwen2.5-0.5b-instruct \
        --config.init=hf:/ckpt/Qwen2.5-0.5B-Instruct --workdir=runs/grpo_gsm8k_qwen05

R1-Zero-style RL with a rule reward on a real model: the question in the model's own chat template with
"Please reason step by step, and put your final answer within \\boxed{}." (template chat_boxed), the
accuracy reward on the last \\boxed{} after </think>, DAPO's token-mean loss with clip-higher and dynamic
sampling, a small KL to the initial model. Held-out GSM8K test is evaluated every `rl.eval_every` steps;
when the policy is exported, the source model and the policy are evaluated side by side on GSM8K test and
MATH-500 (pass@1 greedy and sampled, pass@k, maj@k; WORKDIR/eval_gsm8k, WORKDIR/eval_math500).

The argument names a preset (the model it was sized for; pass its directory as config.init; none is
qwen2.5-0.5b-instruct):

  qwen2.5-0.5b-instruct   Qwen/Qwen2.5-0.5B-Instruct
  qwen2.5-1.5b-instruct   Qwen/Qwen2.5-1.5B-Instruct
  r1-distill-qwen-1.5b    deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (long reasoning: 4k new tokens)
  qwen3-0.6b              Qwen/Qwen3-0.6B (thinking mode)
  qwen3-30b-a3b           Qwen/Qwen3-30B-A3B (MoE: experts split over the mesh's expert axis)
  tiny                    a tiny random checkpoint on a CPU (r1jax.testing.hf_checkpoints): the tests

Real-run defaults: bf16 compute with float32 parameters (config.load), rematerialised layers, 256 prompt
tokens, 1-4k new tokens, minibatches over the rollout with gradient accumulation (rl.grpo.grad_accum_steps
microbatches per minibatch update), and a mesh over every device (data = -1; the MoE
preset splits experts 8 ways). Any field can be overridden, e.g. --config.rl.batch_size=64.
"""
import ml_collections

from configs import grpo
from configs._hf_presets import set_load
from r1jax.config_utils import config_argument

PRESETS = {
    # name: (max_new_tokens, batch_size, group_size, learning_rate, minibatches, grad_accum_steps, mesh)
    "qwen2.5-0.5b-instruct": (1024, 32, 8, 1e-6, 4, 2, dict(data=-1)),
    "qwen2.5-1.5b-instruct": (1024, 32, 8, 1e-6, 4, 4, dict(data=-1)),
    "r1-distill-qwen-1.5b": (4096, 16, 8, 1e-6, 8, 2, dict(data=-1)),
    "qwen3-0.6b": (2048, 32, 8, 1e-6, 8, 2, dict(data=-1)),
    "qwen3-30b-a3b": (2048, 32, 8, 5e-7, 8, 4, dict(data=-1, expert=8)),
    "tiny": (8, 2, 2, 1e-4, 1, 2, dict()),
}


def get_config(arg: str | None = None):
  arg = config_argument(arg, tuple(PRESETS), "configs/grpo_gsm8k.py") or "qwen2.5-0.5b-instruct"
  new_tokens, batch, group, lr, minibatches, accum, mesh = PRESETS[arg]
  tiny = arg == "tiny"
  c = grpo.get_config()
  c.preset = arg
  c.task = ml_collections.ConfigDict(dict(name="gsm8k"))
  c.num_train_problems = 8 if tiny else 7473          # the whole train split
  c.num_eval_problems = 0 if tiny else 500            # GSM8K test, during training
  set_load(c, tiny)
  steps = 2 if tiny else 500
  c.rl.update(
      num_steps=steps, batch_size=batch, group_size=group, max_prompt_len=160 if tiny else 256,
      max_new_tokens=new_tokens, template="chat_boxed", reward_weights=(("accuracy", 1.0),),
      dynamic_sampling=True, max_refills=2, eval_every=0 if tiny else 50, log_every=1,
      checkpoint_every=1 if tiny else 25, keep=2)
  c.rl.grpo.update(epsilon_low=0.2, epsilon_high=0.28, beta=0.001, aggregation="token_mean",
                   num_minibatches=minibatches, grad_accum_steps=accum, temperature=1.0)
  c.rl.optim.update(learning_rate=lr, warmup_steps=0 if tiny else 10, total_steps=steps, schedule="constant",
                    clip_norm=1.0, weight_decay=0.0)
  c.rl.eval.update(num_examples=4 if tiny else 500, batch_size=4 if tiny else 64, max_prompt_len=c.rl.max_prompt_len,
                   max_new_tokens=new_tokens, num_samples=2 if tiny else 4, temperature=0.6 if not tiny else 1.0)
  c.mesh.update(mesh)
  c.export_hf = not tiny
  # After the run: the source model and the policy on each of these test sets (name:split, comma-separated).
  c.final_eval = dict(tasks="gsm8k:test,math500:test", num_problems=4 if tiny else 500,
                      max_prompt_len=160 if tiny else 512, max_new_tokens=new_tokens, num_samples=2 if tiny else 8,
                      batch_size=4 if tiny else 64, temperature=1.0 if tiny else 0.6)
  return c
