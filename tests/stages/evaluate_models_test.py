"""r1jax.stages.evaluate (behind experiments/evaluate.py): validates before any work, evaluates exported
models, caches and resumes."""
import json
import re
import shutil

import jax
import numpy as np
import pytest

from configs import evaluate as evaluate_config
from r1jax.checkpoint import save_model
from r1jax.config_utils import ConfigFieldError
from r1jax.data import SentencePieceTokenizer, tasks
from r1jax.model import init_variables
from r1jax.stages import evaluate as ev
from r1jax.stages import models as model_sources
from r1jax.testing import tiny_model_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A SentencePiece tokenizer on a few arithmetic lines and two randomly initialised tiny models."""
  root = tmp_path_factory.mktemp("eval_setup")
  lines = [f"Q: {ex['question']}\nA: <think>{ex['answer']}</think><answer>{ex['answer']}</answer>"
           for ex in tasks.get("arithmetic", digits=2, ops="+").examples("train", seed=0, num=200)]
  tok = SentencePieceTokenizer.train(lines, vocab_size=300, hard_vocab_limit=False)
  tok_path = str(root / "tokenizer.model")
  tok.save(tok_path)
  cfg = tiny_model_config(vocab_size=tok.vocab_size)
  # init_variables' tree and shapes, drawn with numpy: compiling init_variables would double the test's time.
  shapes = jax.eval_shape(lambda: init_variables(cfg, jax.random.key(0)))
  models = {}
  for i, name in enumerate(["base", "r1"]):
    rs = np.random.RandomState(i)
    variables = jax.tree.map(lambda s: rs.normal(0.0, 0.02, s.shape).astype(s.dtype), shapes)
    models[name] = save_model(root / name, cfg, variables, metadata={"stage": name})
  return models, tok_path


def _config():
  c = evaluate_config.get_config("runlocal")
  c.num_problems = 4
  c.eval.update(batch_size=4, max_new_tokens=6, num_samples=2, language_target="latin")
  return c


@pytest.mark.parametrize("arg", [None, "runlocal"])
def test_config_validates(arg, setup):
  models, tok_path = setup
  ec, task = ev.validate(evaluate_config.get_config(arg), models, tok_path)
  assert ec.num_examples == evaluate_config.get_config(arg).num_problems and task.name == "arithmetic"


def test_parse_models():
  assert ev.parse_models("a=/x/a, b=rel/b") == {"a": "/x/a", "b": "rel/b"}
  assert list(ev.parse_models("z=1,a=2")) == ["z", "a"]          # command-line order = table order
  for bad in ["a", "a=", "=d", "a=1,a=2"]:
    with pytest.raises(ConfigFieldError, match="config.models"):
      ev.parse_models(bad)


def test_run_from_config_reads_the_inputs_from_the_config(setup, tmp_path, monkeypatch):
  models, tok_path = setup
  seen = []
  monkeypatch.setattr(ev, "run", lambda *args, mesh: seen.append((args, mesh)) or "reports")
  c = _config()
  c.models, c.tokenizer = f"r1={models['r1']}, base={models['base']}", tok_path
  assert ev.run_from_config(c, str(tmp_path / "eval")) == "reports"
  assert seen == [((c, {"r1": models["r1"], "base": models["base"]}, tok_path, str(tmp_path / "eval")), None)]


def test_run_from_config_fails_first_on_a_missing_input(setup, tmp_path, monkeypatch):
  """An empty field, a malformed entry or a path that does not exist fails naming the field and the path."""
  models, tok_path = setup
  monkeypatch.setattr(ev, "run", lambda *args: pytest.fail("work started before the inputs were checked"))
  nope = str(tmp_path / "nope")
  for models_field, tokenizer, error, match in [
      ("", tok_path, ConfigFieldError, r"^config\.models is required: name=DIR.*--config\.models="),
      (f"base={models['base']}", "", ConfigFieldError, r"^config\.tokenizer is empty and model 'base' .* carries no tokenizer"),
      (f"base={models['base']},{nope}", tok_path, ConfigFieldError, r"config\.models: '.*nope' is not name=DIR"),
      (f"base={models['base']},r1={nope}", tok_path, FileNotFoundError,
       rf"config\.models: model 'r1': '{re.escape(nope)}' does not exist"),
      (f"base={models['base']}", nope, FileNotFoundError, rf"config\.tokenizer='{re.escape(nope)}' does not exist"),
  ]:
    c = _config()
    c.models, c.tokenizer = models_field, tokenizer
    with pytest.raises(error, match=match):
      ev.run_from_config(c, str(tmp_path / "eval"))
  c = _config()                                                    # a bad field fails before the inputs
  c.eval.num_samples = 0
  with pytest.raises(ConfigFieldError, match="config.eval: EvalConfig.num_samples=0"):
    ev.run_from_config(c, str(tmp_path / "eval"))
  assert not (tmp_path / "eval").exists()


def test_run_writes_results_and_resumes(setup, tmp_path, monkeypatch):
  models, tok_path = setup
  out = tmp_path / "eval"
  reports = ev.run(_config(), models, tok_path, str(out))
  assert list(reports) == ["base", "r1"]
  for rep in reports.values():
    assert rep["num_examples"] == 4 and 0.0 <= rep["pass@1_greedy"] <= 1.0
    assert {"pass@2", "maj@2", "language_greedy", "language_consistent_sampled"} <= set(rep)
  assert reports["r1"]["model_metadata"]["stage"] == "r1"
  assert reports["r1"]["eval_setup"]["model"] == reports["r1"]["model_metadata"]["weights_sha256"]
  with open(out / "results.json") as f:
    assert json.load(f) == reports
  md = (out / "results.md").read_text()
  assert "| base |" in md and "| r1 |" in md and "language_consistent_sampled" in md
  assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
  assert not list(out.glob("*.tmp"))

  # A rerun (e.g. after a kill) reads every model from its cache and computes nothing.
  def fail(*args, **kwargs):
    raise AssertionError("a cached model was evaluated again")

  monkeypatch.setattr(ev, "evaluate", fail)
  monkeypatch.setattr(model_sources.ModelSource, "load", fail)
  assert ev.run(_config(), models, tok_path, str(out)) == reports
  # The cache is keyed by the weights, not the path: a copy of the model elsewhere is the same model ...
  moved = tmp_path / "moved_r1"
  shutil.copytree(models["r1"], moved)
  assert ev.run(_config(), {**models, "r1": str(moved)}, tok_path, str(out))["r1"]["pass@1_greedy"] == \
      reports["r1"]["pass@1_greedy"]
  # ... and other weights at the same path (a stage run again) are evaluated again.
  shutil.rmtree(moved)
  cfg = model_sources.parse(models["r1"]).config()
  other = jax.tree.map(lambda s: np.full(s.shape, 0.01, s.dtype), jax.eval_shape(
      lambda: init_variables(cfg, jax.random.key(0))))
  save_model(moved, cfg, other, metadata={"stage": "r1"})
  with pytest.raises(AssertionError, match="evaluated again"):
    ev.run(_config(), {**models, "r1": str(moved)}, tok_path, str(out))
  # Other settings are not served from the cache.
  c = _config()
  c.eval.seed = 1
  with pytest.raises(AssertionError, match="evaluated again"):
    ev.run(c, models, tok_path, str(out))


def test_bad_inputs_fail_before_any_work(setup, tmp_path, monkeypatch):
  models, tok_path = setup

  def fail(*args, **kwargs):
    raise AssertionError("work started before validation")

  monkeypatch.setattr(ev, "evaluate", fail)
  monkeypatch.setattr(model_sources.ModelSource, "load", fail)
  monkeypatch.setattr(model_sources, "load_tokenizer", fail)
  out = tmp_path / "eval"
  with pytest.raises(FileNotFoundError, match=r"model 'missing'=.*nope' does not exist"):
    ev.run(_config(), {**models, "missing": str(tmp_path / "nope")}, tok_path, str(out))
  with pytest.raises(FileNotFoundError, match=r"model 'missing'=.* is not a model directory"):
    ev.run(_config(), {**models, "missing": str(tmp_path)}, tok_path, str(out))
  with pytest.raises(ValueError, match="model name 'results'"):
    ev.run(_config(), {"results": models["base"]}, tok_path, str(out))
  with pytest.raises(FileNotFoundError, match="tokenizer"):
    ev.run(_config(), models, str(tmp_path / "no.model"), str(out))
  c = _config()
  c.eval.num_samples = 0
  with pytest.raises(ConfigFieldError, match="config.eval: EvalConfig.num_samples=0"):
    ev.run(c, models, tok_path, str(out))
  c = _config()
  c.split = "validation"
  with pytest.raises(ValueError, match="config.split='validation'"):
    ev.run(c, models, tok_path, str(out))
  assert not out.exists()
