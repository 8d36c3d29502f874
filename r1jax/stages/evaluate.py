"""Evaluates exported models side by side on a held-out split: pass@1 (greedy, sampled), pass@k, maj@k.

    reports = run(c, {"base": "runs/r1/pretrain/model", "r1_zero": "runs/r1/r1_zero/model"},
                  "runs/r1/tokenizer.model", "runs/r1/eval")   # c: configs/evaluate.py's get_config()

Models are directories written by `r1jax.checkpoint.save_model`. Writes to the output directory:
<name>.json per model (a cache: a rerun skips models already evaluated with the same settings, so a
killed run resumes), results.json (every report), results.md (the table) and results.png (a bar chart of
the rates). The R1 pipeline calls `run`; the command line, `python -m experiments.evaluate`, calls
`run_from_config`, which reads the models and the tokenizer from the config's `models` and `tokenizer`
fields.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re

from absl import logging

from r1jax.checkpoint import is_model, load_config, load_model
from r1jax.config_utils import ConfigFieldError, build, input_path
from r1jax.data import SentencePieceTokenizer, get_template
from r1jax.data.jsonl import write_json
from r1jax.data import tasks
from r1jax.eval import EvalConfig, evaluate
from r1jax.eval.report import eval_columns, eval_table, is_percent, plot_bars
from r1jax.model import ModelConfig
from r1jax.sharding import distributed
from r1jax.sharding.mesh import mesh_from_config

# results.json / .md / .png live beside the per-model caches, so a model may not take these names.
_RESERVED = frozenset({"results"})
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def parse_models(spec: str) -> dict[str, str]:
  """"a=DIR1,b=DIR2" (config.models) -> {"a": "DIR1", "b": "DIR2"}, keeping the order (the table's row order)."""
  models: dict[str, str] = {}
  for item in filter(None, (s.strip() for s in spec.split(","))):
    name, sep, path = item.partition("=")
    if not sep or not name.strip() or not path.strip():
      raise ConfigFieldError(f"config.models: {item!r} is not name=DIR")
    if name.strip() in models:
      raise ConfigFieldError(f"config.models: model name {name.strip()!r} given twice")
    models[name.strip()] = path.strip()
  return models


MODELS = "name=DIR,name=DIR,...: the exported model directories to evaluate, in table order"
TOKENIZER = "the SentencePiece .model file the models were trained with"


def config_inputs(c) -> tuple[dict[str, str], str]:
  """(models, tokenizer path) from the fields c.models ("name=DIR,...") and c.tokenizer, checked before any
  work: an empty field, a malformed entry or a path that does not exist fails naming the field."""
  if not isinstance(c.models, str):
    raise ConfigFieldError(f"config.models={c.models!r}: must be a string ({MODELS})")
  models = parse_models(c.models)
  if not models:
    raise ConfigFieldError(f"config.models is required: {MODELS} (set --config.models=base=DIR1,r1=DIR2)")
  for name, path in models.items():
    if not os.path.exists(path):
      raise FileNotFoundError(f"config.models: model {name!r}: {path!r} does not exist")
  return models, input_path(c, "tokenizer", TOKENIZER)


def validate_config(c):
  """(EvalConfig, task) of the config's evaluation fields (eval, template, task, split)."""
  ec = build(EvalConfig, c.eval, "config.eval")
  get_template(c.template)
  task = tasks.get(c.task.name, **{k: v for k, v in c.task.items() if k != "name"})
  if c.split not in task.splits:
    raise ValueError(f"config.split={c.split!r}: task {c.task.name!r} has splits {list(task.splits)}")
  return ec, task


def validate(c, models: dict[str, str], tokenizer_path: str):
  """Checks everything a run needs before any model is loaded or compiled.

  Returns (EvalConfig, task). Raises ConfigFieldError for a bad config field, ValueError for a bad
  model name or an unknown task, FileNotFoundError naming the model whose directory is not a finished
  export (or a missing tokenizer).
  """
  ec, task = validate_config(c)
  if not models:
    raise ValueError("no models to evaluate")
  for name, path in models.items():
    if not _NAME.fullmatch(name) or name in _RESERVED:
      raise ValueError(f"model name {name!r}: use letters, digits and _.+- (it names {name}.json), "
                       f"not {sorted(_RESERVED)}")
    if not is_model(path):
      raise FileNotFoundError(f"model {name!r}: {path} is not an exported r1jax model "
                              "(r1jax.checkpoint.save_model writes model_config.json + variables/)")
  if not os.path.isfile(tokenizer_path):
    raise FileNotFoundError(f"tokenizer {tokenizer_path} does not exist")
  return ec, task


def _setup(c, ec: EvalConfig, model_dir: str, tokenizer_path: str) -> dict:
  """What a cached report depends on besides the model's weights; a changed setup is re-evaluated."""
  return {"model_dir": os.path.abspath(model_dir), "tokenizer": os.path.abspath(tokenizer_path),
          "task": c.task.to_dict(), "split": c.split, "num_problems": c.num_problems, "seed": c.seed,
          "template": c.template, "eval": dataclasses.asdict(ec)}


def _read_cache(path: str, setup: dict) -> dict | None:
  if not os.path.exists(path):
    return None
  with open(path) as f:
    report = json.load(f)
  if report.get("eval_setup") != json.loads(json.dumps(setup)):   # JSON round trip: tuples -> lists
    logging.warning("%s was evaluated with other settings; evaluating again", path)
    return None
  return report


def run_from_config(c, workdir: str) -> dict:
  """configs/evaluate.py's job: evaluates the models of c.models with the tokenizer c.tokenizer into workdir."""
  validate_config(c)                                                  # a bad field fails first
  mesh = mesh_from_config(c.get("mesh"))
  models, tokenizer_path = config_inputs(c)
  return run(c, models, tokenizer_path, workdir, mesh=mesh)


def run(c, models: dict[str, str], tokenizer_path: str, out_dir: str, *, mesh=None) -> dict:
  """Evaluates each model (name -> exported model dir) on c's split, on `mesh` (None: one device); returns
  name -> report."""
  ec, task = validate(c, models, tokenizer_path)                      # fail fast, before any work
  tok = SentencePieceTokenizer.load(tokenizer_path)
  for name, path in models.items():                                   # still cheap: config JSON only
    vocab = load_config(path, ModelConfig).vocab_size
    if vocab < tok.vocab_size:
      raise ValueError(f"model {name!r} ({path}) has vocab_size {vocab} < the tokenizer's {tok.vocab_size}: "
                       "was it trained with another tokenizer?")
  if distributed.is_writer():
    os.makedirs(out_dir, exist_ok=True)
  examples = list(task.examples(c.split, seed=c.seed, num=c.num_problems))

  reports = {}
  for name, path in models.items():
    cache = os.path.join(out_dir, f"{name}.json")
    setup = _setup(c, ec, path, tokenizer_path)
    report = _read_cache(cache, setup)
    if report is None:
      cfg, variables, metadata = load_model(path, ModelConfig)
      report = evaluate(cfg, variables, tok, examples, ec, template=c.template, mesh=mesh)
      report.update(eval_setup=setup, model_metadata=metadata)
      if distributed.is_writer():                                   # process 0 writes a multi-process job's files
        write_json(cache, report)
      del variables
    reports[name] = report

  if not distributed.is_writer():
    distributed.barrier(f"evaluation written {out_dir}")
    return reports
  write_json(os.path.join(out_dir, "results.json"), reports)
  first = next(iter(reports.values()))
  title = f"{c.task.name} {c.split}: {first['num_examples']} problems, k={ec.num_samples}, T={ec.temperature}"
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write(f"# Evaluation on {title}\n\n{eval_table(reports)}\n")
  rates = [col for col in eval_columns(reports) if is_percent(col)]
  plot_bars(reports, rates, os.path.join(out_dir, "results.png"), title=title)
  print(eval_table(reports))
  distributed.barrier(f"evaluation written {out_dir}")
  return reports

