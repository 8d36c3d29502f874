"""The full DeepSeek-R1 pipeline on a laptop CPU, at toy scale (experiments/r1_pipeline.py).

    python -m experiments.r1_pipeline --config=configs/r1_pipeline.py --workdir=runs/r1
    python -m experiments.r1_pipeline --config=configs/r1_pipeline.py:runlocal --workdir=/tmp/r1   # smoke, ~7 min

pretrain MoE base -> R1-Zero (GRPO: accuracy + format) -> rejection sampling -> cold-start SFT of the base
-> RL round 2 (accuracy + format + language consistency) -> rejection sampling -> SFT of the base on those
traces (R1) -> distil a dense GQA student (Qwen2-style) on the same traces, next to the same student
pretrained on the corpus alone -> one evaluation table.

The corpus is configs/r1_zero.py's 2-digit addition corpus with language mixing: worked solutions name
their columns in words, the ones column usually in English and the tens column usually in Cyrillic
(r1jax.data.corpora), so the chains of thought R1-Zero learns to write mix scripts, as the paper reports.
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields
from r1jax.model import preset_fields
from r1jax.model.runtime import runtime_fields


def get_config(arg: str | None = None):
  # runlocal: every stage end to end at ~1/3 length (about 7 minutes on 2 cores): a smoke run, too short
  # for the base to learn the task (the default config is the shortest that shows the paper's story);
  # tiny: a plumbing test with minute models that solve nothing (the notebook and pipeline tests).
  arg = config_argument(arg, ("runlocal", "tiny"), "configs/r1_pipeline.py")
  local, tiny = arg == "runlocal", arg == "tiny"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1                       # > 1: seeds seed, seed + 1, ... in WORKDIR/seed_<s>, with the seeds' table

  # Task, corpus, tokenizer.
  c.task = dict(name="arithmetic", digits=2, ops="+")
  c.num_train_problems = 200 if tiny else 3600
  c.num_eval_problems = 20 if tiny else (100 if local else 400)
  c.corpus_modes = dict(worked=0.25, direct=0.45, bare=0.30)
  c.mixing = dict(first="latin", second="cyrillic", second_prob=(0.3, 0.7))
  c.language = "latin"                    # the target of the language-consistency reward and metric
  c.tokenizer = dict(vocab_size=320, model_type="bpe")
  c.template = "compact"

  # Models (r1jax.model presets; vocab_size is set from the tokenizer). The teacher: a tiny DeepSeek-V3-style
  # MoE (MLA, shared expert, first layer dense).
  c.model = preset_fields("cpu_moe")
  # The student: a smaller dense Qwen2-style model (GQA with qkv bias, tied embeddings).
  c.student = preset_fields("cpu_qwen2")
  if tiny:
    c.model.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2, moe_intermediate_size=32,
                   kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    c.student.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)

  def lm(steps, lr, warmup=20, bias_rate=1e-3):
    steps = 4 if tiny else (steps * 3 // 10 if local else steps)
    return dict(num_steps=steps, batch_size=16, seq_len=192, log_every=max(1, min(25, steps // 4)),
                checkpoint_every=100, template="compact", input_shards=0, resume_override="",
                lm=dict(router_bias_rate=bias_rate, balance_loss_coef=0.0, grad_accum_steps=1),
                optim=dict(learning_rate=lr, warmup_steps=min(warmup, steps // 4), total_steps=steps,
                           weight_decay=0.01, end_lr_ratio=0.05),
                runtime=runtime_fields())   # r1jax.model.runtime.Runtime: MoE dispatch, capacity factor

  def rl(steps, weights, lr=2e-4):
    steps = 2 if tiny else (steps // 4 if local else steps)
    return dict(
        num_steps=steps, batch_size=8, group_size=8, max_prompt_len=24, max_new_tokens=48,
        template="compact", reward_weights=weights,
        reward_options=(("language_consistency", (("target", c.language),)),) if any(
            n == "language_consistency" for n, _ in weights) else (),
        dynamic_sampling=True, max_refills=1, checkpoint_every=10, log_every=1, eval_every=0, input_shards=0,
        resume_override="",
        advantage_estimator="grpo",        # r1jax.rl.advantages: grpo | batch_std | dr_grpo | rloo
        grpo=dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.01, kl_estimator="k3", aggregation="token_mean",
                  temperature=1.0, num_iterations=2, num_minibatches=1, grad_accum_steps=1, router_bias_rate=0.0,
                  policy_loss="clip", sapo_tau_pos=1.0, sapo_tau_neg=1.05,   # policy_loss: clip/cispo/gmpo/sapo
                  rollout_is="off", rollout_is_cap=2.0),   # sampler/trainer IS correction: token_tis, sequence_mis, ...
        optim=dict(learning_rate=lr, warmup_steps=0, total_steps=steps, schedule="constant", clip_norm=1.0),
        runtime=runtime_fields())

  def rejection(target, k):
    # The train problems are a pool sampled in order until `target` traces are kept: R1-Zero's traces are
    # rarely single-script (a few percent pass), RL round 2's usually are, and either way SFT gets enough.
    return dict(
        num_problems=16 if tiny else c.get_ref("num_train_problems"),
        config=dict(num_samples=2 if tiny else k, batch_size=64, max_prompt_len=24, max_new_tokens=48,
                    temperature=1.0, template="compact",
                    reward_weights=(("accuracy", 1.0), ("format", 1.0), ("language_consistency", 1.0)),
                    reward_options=(("language_consistency", (("target", c.language),)),),
                    # R1 keeps correct, readable traces: mixed-language chains of thought are filtered out.
                    # (The `tiny` plumbing test keeps everything and the `runlocal` smoke run drops the
                    # accuracy requirement: their short-trained models rarely solve a problem.)
                    min_rewards=() if tiny else ((("format", 1.0), ("language_consistency", 1.0)) if local else
                                                 (("accuracy", 1.0), ("format", 1.0), ("language_consistency", 1.0))),
                    max_per_prompt=1, prefer="shortest", seed=0,
                    target_kept=0 if tiny else (target // 4 if local else target)))

  # Stages.
  c.pretrain = lm(500, 3e-3)                                            # the MoE base
  c.r1_zero = rl(30, (("accuracy", 1.0), ("format", 0.2)))              # rule rewards only
  c.rs_cold = rejection(400, 16)                                        # cold-start traces from R1-Zero
  c.sft_cold = lm(100, 1e-3, bias_rate=0.0)                             # base -> cold-start SFT
  # Round 2 starts from a model SFT made sharp: at R1-Zero's learning rate Adam's first updates (every
  # parameter moves by ~lr) crush the log-probs of tokens the SFT model relies on and the accuracy falls
  # below the cold start's; a quarter of it improves on it.
  c.rl2 = rl(20, (("accuracy", 1.0), ("format", 0.2), ("language_consistency", 0.5)), lr=5e-5)
  c.rs_r1 = rejection(1600, 4)                                          # traces from RL round 2
  c.sft_r1 = lm(200, 1e-3, bias_rate=0.0)                               # base -> R1 (stage-3 SFT)
  c.sft_r1_init = "base"                                                # "base" (as in R1) | "rl2"
  c.student_pretrain = lm(500, 3e-3, bias_rate=0.0)                     # student on the corpus alone
  c.distill = lm(400, 1e-3, bias_rate=0.0)                              # student_base + teacher traces
  c.distill.distill = dict(top_k=8, kd_weight=0.5, temperature=1.0)     # + token-level KD (top_k=0: off)
  c.distill_teacher = "r1"                                              # "r1" | "rl2"

  # Evaluation of every model on the held-out test split (experiments/evaluate.py's config).
  c.evaluate = dict(
      task=dict(c.task), split="test", num_problems=c.get_ref("num_eval_problems"), seed=0,
      template=c.get_ref("template"),
      eval=dict(num_examples=c.get_ref("num_eval_problems"), batch_size=20 if tiny else 100, max_prompt_len=24,
                max_new_tokens=48, num_samples=4, temperature=1.0, language_target=c.get_ref("language")))
  c.evaluate = ml_collections.ConfigDict(c.evaluate)
  c.evaluate.task = c.task            # one object: overriding --config.task.* changes both
  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  return c
