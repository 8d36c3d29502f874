"""Evaluates exported models side by side on a held-out split: pass@1 (greedy, sampled), pass@k, maj@k.

    reports = run(c, {"base": "runs/r1/pretrain/model", "r1_zero": "runs/r1/r1_zero/model"},
                  "runs/r1/tokenizer.model", "runs/r1/eval")   # c: configs/evaluate.py's get_config()

Models are exports (`r1jax.checkpoint.save_model`), Hugging Face directories (hf:DIR) or Orbax conversions
(orbax:DIR), see r1jax.stages.models; each is evaluated with the tokenizer given, or, with none, the one that
came with it (so models with different tokenizers can share a table). Writes to the output directory:
<name>.json per model (a cache: a rerun skips models already evaluated with the same settings and the
same weights and tokenizer, named by content, not path, so a killed run resumes and a retrained model is
evaluated again), results.json (every report), results.md (the table) and results.png (a bar chart of
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

from r1jax.config_utils import ConfigFieldError, build
from r1jax.data import check_template
from r1jax.data.jsonl import write_json
from r1jax.data import tasks
from r1jax.eval import EvalConfig, evaluate
from r1jax.eval.report import eval_columns, eval_table, is_percent, plot_bars
from r1jax.sharding import distributed
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import models as model_sources
from r1jax.stages.fingerprint import tokenizer_digest

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


MODELS = "name=DIR,name=hf:DIR,...: the models to evaluate (exports, hf:DIR, orbax:DIR), in table order"
TOKENIZER = "the tokenizer the models use (a SentencePiece .model file or a directory with tokenizer.json); " \
            "empty: each model's own"


def config_inputs(c) -> tuple[dict[str, str], str]:
  """(models, tokenizer path) from the fields c.models ("name=DIR,...") and c.tokenizer, checked before any
  work: an empty field, a malformed entry or a path that does not exist fails naming the field."""
  if not isinstance(c.models, str):
    raise ConfigFieldError(f"config.models={c.models!r}: must be a string ({MODELS})")
  models = parse_models(c.models)
  if not models:
    raise ConfigFieldError(f"config.models is required: {MODELS} (set --config.models=base=DIR1,r1=DIR2)")
  for name, ref in models.items():                   # every path exists, then each is a model
    if not os.path.exists(model_sources.split_ref(ref)[1]):
      raise FileNotFoundError(f"config.models: model {name!r}: {ref!r} does not exist")
  settings = model_sources.load_settings(c)
  sources = {name: model_sources.parse(ref, f"config.models: model {name!r}", settings) for name, ref in models.items()}
  tokenizer = str(c.get("tokenizer", "") or "").strip()
  if tokenizer and not os.path.exists(tokenizer):
    raise FileNotFoundError(f"config.tokenizer={tokenizer!r} does not exist ({TOKENIZER})")
  for name, source in sources.items():
    if not tokenizer and source.tokenizer_path() is None:
      raise ConfigFieldError(f"config.tokenizer is empty and model {name!r} ({source.ref}) carries no tokenizer: "
                             f"{TOKENIZER} (set --config.tokenizer=PATH)")
  return models, tokenizer


def validate_config(c):
  """(EvalConfig, task) of the config's evaluation fields (eval, template, task, split)."""
  ec = build(EvalConfig, c.eval, "config.eval")
  check_template(c.template)
  task = tasks.from_config(c.task)
  if c.split not in task.splits:
    raise ValueError(f"config.split={c.split!r}: task {c.task.name!r} has splits {list(task.splits)}")
  return ec, task


def validate(c, models: dict[str, str], tokenizer_path: str):
  """Checks everything a run needs before any model is loaded or compiled.

  Returns (EvalConfig, task). Raises ConfigFieldError for a bad config field, ValueError for a bad
  model name or an unknown task, FileNotFoundError naming the model that is not a finished export, Hugging
  Face or Orbax directory, or the missing tokenizer (tokenizer_path "" = each model's own).
  """
  ec, task = validate_config(c)
  if not models:
    raise ValueError("no models to evaluate")
  for name, path in models.items():
    if not _NAME.fullmatch(name) or name in _RESERVED:
      raise ValueError(f"model name {name!r}: use letters, digits and _.+- (it names {name}.json), "
                       f"not {sorted(_RESERVED)}")
    source = model_sources.parse(path, f"model {name!r}")
    if not tokenizer_path and source.tokenizer_path() is None:
      raise ConfigFieldError(f"model {name!r} ({source.ref}) carries no tokenizer and none is given "
                             "(set --config.tokenizer=PATH)")
  if tokenizer_path and not os.path.exists(tokenizer_path):
    raise FileNotFoundError(f"tokenizer {tokenizer_path} does not exist")
  return ec, task


def _setup(c, ec: EvalConfig, model: str, tokenizer: str) -> dict:
  """What a cached report depends on: the model's weights and the tokenizer (their identities: see
  r1jax.stages.models.ModelSource.identity and r1jax.stages.fingerprint.tokenizer_digest) and the evaluation
  settings; a changed setup is re-evaluated."""
  setup = {"model": model, "tokenizer": tokenizer,
           "task": c.task.to_dict(), "split": c.split, "num_problems": c.num_problems, "seed": c.seed,
           "template": c.template, "eval": dataclasses.asdict(ec)}
  settings = model_sources.load_settings(c)
  return {**setup, "load": dict(settings)} if settings else setup


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
  """Evaluates each model (name -> export dir, hf:DIR or orbax:DIR) on c's split with the tokenizer at
  tokenizer_path ("": each model's own), on `mesh` (None: one device); returns name -> report."""
  ec, task = validate(c, models, tokenizer_path)                      # fail fast, before any work
  settings = model_sources.load_settings(c)
  sources = {name: model_sources.parse(ref, f"model {name!r}", settings) for name, ref in models.items()}
  tok_paths = {name: tokenizer_path or s.tokenizer_path() for name, s in sources.items()}
  toks = {p: model_sources.load_tokenizer(p) for p in set(tok_paths.values())}
  for name, source in sources.items():                                # still cheap: config JSON only
    model_sources.check_vocab(toks[tok_paths[name]], source.config(), f"{name} ({source.ref})", tok_paths[name])
  if distributed.is_writer():
    os.makedirs(out_dir, exist_ok=True)
  examples = list(task.examples(c.split, seed=c.seed, num=c.num_problems))

  reports = {}
  for name, source in sources.items():
    cache = os.path.join(out_dir, f"{name}.json")
    setup = _setup(c, ec, source.identity(), tokenizer_digest(toks[tok_paths[name]]))
    report = _read_cache(cache, setup)
    if report is None:
      cfg, variables, metadata = source.load(mesh=mesh)
      report = evaluate(cfg, variables, toks[tok_paths[name]], examples, ec, template=c.template, mesh=mesh)
      report.update(eval_setup=setup, model_ref=source.ref, model_metadata=metadata)
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

