"""Shared by standalone_test.py and the multi-process worker _jobs_worker.py: the tiny inputs of the
standalone jobs (a tokenizer, traces, an exported teacher) and a run of every job on one mesh."""
import json

import jax

from configs import distill as distill_config
from configs import sft as sft_config
from r1jax.checkpoint import save_model
from r1jax.data import SentencePieceTokenizer, tasks
from r1jax.model import init_variables
from r1jax.sharding import distributed
from r1jax.stages import standalone
from r1jax.testing import tiny_model_config


def make_setup(root):
  """(tokenizer path, traces path, exported teacher dir) in `root`; in a multi-process job process 0
  writes the files and every process takes part in the teacher's export."""
  exs = list(tasks.get("arithmetic", digits=2, ops="+").examples("train", seed=0, num=64))
  traces = [{"prompt": f"Q: {ex['question']}\nA: <think>", "completion": f"ones {ex['answer']}</think><answer>"
             f"{ex['answer']}</answer>", "reward": 2.0, "task": "arithmetic"} for ex in exs]
  tok_path, data = str(root / "tokenizer.model"), root / "traces.jsonl"
  if distributed.is_writer():
    tok = SentencePieceTokenizer.train([t["prompt"] + t["completion"] for t in traces], vocab_size=300,
                                       hard_vocab_limit=False)
    tok.save(tok_path)
    data.write_text("".join(json.dumps(t) + "\n" for t in traces))
  distributed.barrier("setup written")
  cfg = tiny_model_config(vocab_size=SentencePieceTokenizer.load(tok_path).vocab_size)
  teacher = save_model(root / "teacher", cfg, init_variables(cfg, jax.random.key(0)))
  return tok_path, str(data), teacher


def small(c, section):
  c[section].update(num_steps=3, batch_size=2, seq_len=64, log_every=1, checkpoint_every=2)
  c[section].optim.update(total_steps=3, warmup_steps=0)
  return c


def jobs_on(mesh, setup, root, input_shards=0):
  """SFT from the exported teacher, distillation with token-level KD, GRPO, rejection sampling and
  evaluation, each a standalone job with config.mesh = `mesh` (and the training jobs' input_shards);
  returns what each one wrote."""
  from configs import evaluate as evaluate_config
  from configs import grpo as grpo_config
  from configs import rejection_sample as rejection_config
  from r1jax.stages import evaluate
  tok_path, data, teacher = setup
  out = {}
  c = small(sft_config.get_config("runlocal"), "sft")
  c.data, c.tokenizer, c.init = data, tok_path, teacher
  c.sft.input_shards = input_shards
  c.mesh.update(mesh)
  out["sft"] = standalone.run_sft(c, str(root / "sft"))
  c = small(distill_config.get_config("runlocal"), "distill")
  c.student.update(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
  c.data, c.tokenizer, c.teacher = data, tok_path, teacher
  c.distill.input_shards = input_shards
  c.mesh.update(mesh)
  out["distill"] = standalone.run_distill(c, str(root / "distill"))
  c = grpo_config.get_config("runlocal")
  c.num_train_problems, c.num_eval_problems = 16, 0
  c.rl.update(num_steps=2, batch_size=2, group_size=4, max_new_tokens=6, checkpoint_every=1,
              input_shards=input_shards)
  c.init, c.tokenizer = out["sft"], tok_path
  c.mesh.update(mesh)
  out["grpo"] = standalone.run_grpo(c, str(root / "grpo"))
  c = rejection_config.get_config("runlocal")
  c.num_problems = 8
  c.rejection.update(num_samples=2, batch_size=4, max_new_tokens=8, min_rewards=(), max_per_prompt=2)
  c.model, c.tokenizer = out["sft"], tok_path
  c.mesh.update(mesh)
  standalone.run_rejection_sample(c, str(root / "rs"))
  out["traces"] = [json.loads(l) for l in open(root / "rs" / "traces.jsonl")]
  c = evaluate_config.get_config("runlocal")
  c.num_problems = 8
  c.eval.update(batch_size=4, max_new_tokens=8, num_samples=2)
  c.models, c.tokenizer = f"sft={out['sft']},grpo={out['grpo']}", tok_path
  c.mesh.update(mesh)
  out["eval"] = evaluate.run_from_config(c, str(root / "eval"))
  return out


