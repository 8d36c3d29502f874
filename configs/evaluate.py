"""Evaluation of exported models on a held-out split: pass@1 (greedy and sampled), pass@k, maj@k, format,
language consistency, length.

    python -m experiments.evaluate --config=configs/evaluate.py --config.tokenizer=runs/r1/tokenizer.model \
        --config.models=base=runs/r1/pretrain/model,r1_zero=runs/r1/r1_zero/model --workdir=runs/r1/eval
    python -m experiments.evaluate --config=configs/evaluate.py:runlocal ...   # 40 problems, 4 samples

Every model is scored on the same problems with the same sampling seed, so rows of the table differ
only by the model.
"""
import ml_collections

from r1jax.config_utils import config_argument
from r1jax.sharding.mesh import mesh_fields


def get_config(arg: str | None = None):
  arg = config_argument(arg, ("runlocal",), "configs/evaluate.py")
  runlocal = arg == "runlocal"
  c = ml_collections.ConfigDict()
  # Inputs (required unless marked optional).
  c.models = ""                                        # name=DIR,name=hf:DIR,...: the models, in table order
  c.tokenizer = ""                                     # optional: empty = each model's own

  # How the models are loaded: compute dtype, parameter dtype, rematerialisation ("" = as stored), e.g.
  # --config.load.dtype=bfloat16 for a Hugging Face model.
  c.load = dict(dtype="", param_dtype="", remat="")
  c.seed = 0                                           # which problems are drawn (procedural tasks)

  # Held-out problems: r1jax.data.tasks.get(name, **rest).examples(split, seed=seed, num=num_problems).
  c.task = dict(name="arithmetic", digits=2, ops="+")
  c.split = "test"                                     # never trained on (tasks split by a problem hash)
  c.num_problems = 40 if runlocal else 400
  c.template = "compact"                               # must be the template the models were trained with

  # r1jax.eval.EvalConfig. Sampling follows R1's evaluation setup (temperature 0.6, k samples per
  # problem); eval.seed fixes the sampling keys, so rerunning reproduces every number.
  # num_examples follows num_problems (a reference: --config.num_problems=N changes both).
  # language_target ("latin", "english", "chinese", ...) adds the language-consistency columns; it is
  # off here because arithmetic chains of thought ("4+2=6 4+8=12") hold no words to score (0.0 by
  # definition), which would read as "never consistent".
  c.eval = dict(num_examples=c.get_ref("num_problems"), batch_size=40 if runlocal else 100, max_prompt_len=24,
                max_new_tokens=40, num_samples=4 if runlocal else 8, temperature=0.6, seed=0,
                language_target="")

  # The device mesh the job runs on (sizes of data, fsdp, expert, tensor; -1 = the remaining devices; all 1 =
  # one device, no mesh), e.g. --config.mesh.data=2 --config.mesh.expert=4 on 8 devices.
  c.mesh = mesh_fields()
  return c
