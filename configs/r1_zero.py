"""R1-Zero on a laptop CPU: pretrain a tiny MoE on 3-digit addition, then GRPO with rule rewards only.

    python -m experiments.r1_zero --config=configs/r1_zero.py --workdir=runs/r1_zero
    python -m experiments.r1_zero --config=configs/r1_zero.py:runlocal --workdir=/tmp/r1z   # a 1-minute smoke run

The corpus (r1jax.data.corpora.addition_corpus) mixes a worked column-addition solution inside <think>
(25%), a direct answer that forgets to carry (45%) and a bare answer without tags (30%), so the base is
mediocre greedy and sampled; GRPO with accuracy + format rewards selects the worked mode.
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields
from r1jax.model import preset_fields
from r1jax.model.runtime import runtime_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal",), "configs/r1_zero.py")
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.num_seeds = 1                       # > 1: seeds seed, seed + 1, ... in WORKDIR/seed_<s>, with the seeds' table

  # Task and data.
  c.task = dict(name="arithmetic", digits=2, ops="+")   # r1jax.data.tasks.get(name, **rest)
  c.num_train_problems = 400 if runlocal else 3600      # pretraining + RL prompts (of ~3680 in the train split)
  c.num_eval_problems = 40 if runlocal else 400         # held out: the test split (~410), never trained on
  c.corpus_modes = dict(worked=0.25, direct=0.45, bare=0.30)
  c.tokenizer = dict(vocab_size=296, model_type="bpe")  # SentencePiece (256 byte-fallback pieces)
  c.template = "compact"                                 # "Q: {question}\nA: <think>"

  # Model: r1jax.model.ModelConfig fields, the `cpu_moe` preset (a tiny DeepSeek-V3-style MoE: MLA, 4 routed
  # experts top-2 + 1 shared, first layer dense); vocab_size is set from the tokenizer.
  c.model = preset_fields("cpu_moe")

  # Pretraining (r1jax.stages.lm.LMStageConfig).
  c.pretrain = dict(
      num_steps=20 if runlocal else 800, batch_size=16, seq_len=192, log_every=10 if runlocal else 25,
      checkpoint_every=100, template="compact",
      resume_override="",                  # keys allowed to differ from the checkpoint's fingerprint ("all": any)
      input_shards=0,                      # 0: one input shard per batch slice of the mesh (each process reads its own)
      lm=dict(router_bias_rate=1e-3, balance_loss_coef=0.0, grad_accum_steps=1),
      optim=dict(learning_rate=3e-3, warmup_steps=20, total_steps=20 if runlocal else 800, weight_decay=0.01,
                 end_lr_ratio=0.05),
      runtime=runtime_fields())            # r1jax.model.runtime.Runtime: MoE dispatch, capacity factor

  # GRPO (r1jax.stages.grpo.RLStageConfig).
  c.rl = dict(
      num_steps=3 if runlocal else 40, batch_size=8 if runlocal else 16, group_size=8, max_prompt_len=24,
      max_new_tokens=40,
      template="compact", reward_weights=(("accuracy", 1.0), ("format", 0.2)), dynamic_sampling=True,
      advantage_estimator="grpo",          # r1jax.rl.advantages: grpo | batch_std | dr_grpo | rloo
      max_refills=1, checkpoint_every=10, log_every=1, eval_every=0, input_shards=0, resume_override="",
      grpo=dict(epsilon_low=0.2, epsilon_high=0.28, beta=0.01, kl_estimator="k3", aggregation="token_mean",
                temperature=1.0, num_iterations=2, num_minibatches=1, grad_accum_steps=1, router_bias_rate=0.0,
                policy_loss="clip", sapo_tau_pos=1.0, sapo_tau_neg=1.05,   # policy_loss: clip/cispo/gmpo/sapo
                rollout_is="off", rollout_is_cap=2.0),   # sampler/trainer IS correction: token_tis, sequence_mis, ...
      optim=dict(learning_rate=2e-4, warmup_steps=0, total_steps=40, schedule="constant", clip_norm=1.0),
      eval=dict(num_examples=40 if runlocal else 400, batch_size=40 if runlocal else 100, max_prompt_len=24,
                max_new_tokens=40, num_samples=4, temperature=1.0),
      runtime=runtime_fields())

  # The device mesh every stage runs on (r1jax.sharding.make_mesh sizes; -1 = the remaining devices; all 1 =
  # one device, no mesh). E.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices: the batch split 2
  # ways and the routed experts 4 ways, exchanged by all-to-all.
  c.mesh = mesh_fields()

  # Evaluation of the base and the final policy (r1jax.eval.EvalConfig).
  c.eval = dict(num_examples=40 if runlocal else 400, batch_size=40 if runlocal else 100, max_prompt_len=24,
                max_new_tokens=40, num_samples=4, temperature=1.0)
  return c
