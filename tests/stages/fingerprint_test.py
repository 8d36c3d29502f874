"""Fingerprints: saved work (checkpoints, exports, traces, tokenizers) knows the config and the inputs that
made it; resuming or reusing it under others is refused naming the keys; the pipeline reruns a stale stage
and what depends on it; a resumed stage restores without building a second state."""
import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from r1jax.checkpoint import CheckpointManager, load_metadata
from r1jax.model import ModelConfig
from r1jax.model.transformer import abstract_variables, init_variables, place_variables
from r1jax.sharding.mesh import mesh_from_config
from r1jax.stages import exported, lm, pipeline
from r1jax.stages import fingerprint as fp
from r1jax.stages.fingerprint import FingerprintMismatch
from r1jax.testing import FakeTokenizer
from r1jax.train.lora import LoraConfig
from r1jax.train.optim import OptimConfig, make_optimizer
from r1jax.train.state import abstract_train_state, create_train_state

CFG = ModelConfig.preset("tiny")
TOK = FakeTokenizer(vocab_size=64)
TEXTS = [{"prompt": f"Q: {a}+{b}\nA: ", "completion": str(a + b)} for a in range(10) for b in range(10)]


def _sc(num_steps=2, **kw):
  kw = {"optim": lm.OptimConfig(learning_rate=1e-3, total_steps=10), **kw}
  return lm.LMStageConfig(num_steps=num_steps, batch_size=2, seq_len=32, log_every=1, checkpoint_every=2, **kw)


# ------------------------------------------------------------------------------------------ the library
def test_fingerprint_is_flat_and_check_names_each_changed_key():
  a = fp.fingerprint({"model": {"layers": 2}, "": {"seed": 0, "optim": {"lr": 1e-3}, "log_every": 5}},
                     {"data": "sha256:x", "teacher": None}, exclude=("log_every",))
  assert a == {"model.layers": 2, "seed": 0, "optim.lr": 1e-3, "input.data": "sha256:x"}
  b = {**a, "seed": 1, "optim.lr": 2e-3, "input.data": "sha256:y"}
  fp.check(a, dict(a), where="w", path="/p")                          # the same: passes
  with pytest.raises(FingerprintMismatch, match=r"^w was made under another config or from other inputs: "
                     r'input.data: "sha256:x" -> "sha256:y"; optim.lr: 0.001 -> 0.002; seed: 0 -> 1\. ') as e:
    fp.check(a, b, where="w", path="/p")
  assert e.value.path == "/p" and [c[0] for c in e.value.changes] == ["input.data", "optim.lr", "seed"]
  # the override names keys or prefixes; "all" allows everything
  with pytest.raises(FingerprintMismatch, match=r"other inputs: input.data: .*\. $|other inputs: input.data"):
    fp.check(a, b, where="w", path="/p", override="optim, seed")
  fp.check(a, b, where="w", path="/p", override="optim,seed,input.data")
  fp.check(a, b, where="w", path="/p", override="all")
  fp.check(None, b, where="w", path="/p")                             # older work: not checkable, passes
  assert fp.records_digest([{"a": 1, "b": 2}]) == fp.records_digest([{"b": 2, "a": 1}])   # key order ignored
  assert fp.records_digest(["x", "y"]) != fp.records_digest(["y", "x"])                   # record order is not
  assert fp.tokenizer_digest(FakeTokenizer(64)) == fp.tokenizer_digest(FakeTokenizer(64)) != \
      fp.tokenizer_digest(FakeTokenizer(65))


# ------------------------------------------------------------------------------------------ resume checks
def test_lm_resume_refuses_another_config_data_or_init_naming_the_keys(tmp_path):
  w = str(tmp_path)
  lm.run_lm_stage(CFG, _sc(2), examples=TEXTS, tokenizer=TOK, workdir=w, verbose=False)
  run = lambda sc, **kw: lm.run_lm_stage(CFG, sc, **{"examples": TEXTS, "tokenizer": TOK, "workdir": w,
                                                     "verbose": False, **kw})
  with pytest.raises(FingerprintMismatch, match=r"checkpoint step 2 in .*checkpoints was made under another config"
                                                r" .*: optim.learning_rate: 0.001 -> 0.002; seed: 0 -> 1\. .*resume_override"):
    run(_sc(2, seed=1, optim=lm.OptimConfig(learning_rate=2e-3, total_steps=10)))
  with pytest.raises(FingerprintMismatch, match=r": input.data: \"sha256:"):
    run(_sc(2), examples=TEXTS[::-1])
  with pytest.raises(FingerprintMismatch, match=r": input.init: \"random\" -> \"sha256:"):
    run(_sc(2), initial_variables=init_variables(CFG, jax.random.key(5)))
  with pytest.raises(FingerprintMismatch, match=r": input.tokenizer: "):
    run(_sc(2), tokenizer=FakeTokenizer(vocab_size=65))
  # a model config change is named before any array is read (not an Orbax shape error)
  with pytest.raises(FingerprintMismatch, match=r": model.intermediate_size: 64 -> 96"):
    lm.run_lm_stage(CFG.replace(intermediate_size=96), _sc(2), examples=TEXTS, tokenizer=TOK, workdir=w,
                    verbose=False)
  # lowering num_steps below the checkpoint would call a 2-step run a 1-step one
  with pytest.raises(FingerprintMismatch, match=r"step 2 .* lies past num_steps=1"):
    run(_sc(1))
  # what only changes reporting and saving is not part of it; raising num_steps continues the run
  run(dataclasses.replace(_sc(4), log_every=2, checkpoint_every=4, keep=3))
  # the explicit override goes on (and the next checkpoint records the new fingerprint)
  run(_sc(5, seed=1, resume_override="seed"))
  ckpt = CheckpointManager(os.path.join(w, "checkpoints"))
  assert ckpt.latest_step() == 5 and ckpt.read_metadata(5)["fingerprint"]["seed"] == 1


def test_grpo_resume_refuses_another_group_size(tmp_path):
  from tests.stages import _grpo_setup as g
  g.run(str(tmp_path), 1)
  with pytest.raises(FingerprintMismatch, match=r": group_size: 4 -> 2\. "):
    g.run(str(tmp_path), 2, group_size=2)
  with pytest.raises(FingerprintMismatch, match=r": grpo.beta: 0.04 -> 0.0; seed: 0 -> 3\. "):
    g.run(str(tmp_path), 2, seed=3, grpo=dict(beta=0.0, num_iterations=2, num_minibatches=2, temperature=1.0))
  g.run(str(tmp_path), 2, eval_every=1, log_every=2)                  # reporting only: resumes


# ------------------------------------------------------------------------------------------ restore in place
@pytest.mark.parametrize("mesh_sizes", [None, {"data": 2, "expert": 4}])
@pytest.mark.parametrize("rank", [0, 2])
def test_abstract_train_state_is_the_state_create_train_state_builds(mesh_sizes, rank):
  mesh = mesh_from_config(mesh_sizes)
  tx = make_optimizer(OptimConfig())
  init = init_variables(CFG, jax.random.key(0))
  lc = LoraConfig(rank=rank)
  for given in (init, None):
    variables = place_variables(CFG, given, mesh) if given is not None else init_variables(CFG, jax.random.key(0),
                                                                                            mesh=mesh)
    concrete = create_train_state(variables, tx, lora_config=lc, key=jax.random.key(1))
    abstract = abstract_train_state(abstract_variables(CFG, given, mesh), tx, lora_config=lc)
    pa, pc = jax.tree_util.tree_leaves_with_path(abstract), jax.tree_util.tree_leaves_with_path(concrete)
    assert [p for p, _ in pa] == [p for p, _ in pc] and abstract.lora_scale == concrete.lora_scale
    for (path, a), (_, c) in zip(pa, pc):
      assert isinstance(a, jax.ShapeDtypeStruct), path
      assert (a.shape, a.dtype, a.sharding) == (c.shape, c.dtype, c.sharding), jax.tree_util.keystr(path)


def test_resume_builds_no_fresh_state(tmp_path, monkeypatch):
  """A resumed stage restores into the abstract state: create_train_state (a second full state: parameters and
  optimizer moments) runs only when there is no checkpoint."""
  calls = []
  real = lm.create_train_state
  monkeypatch.setattr(lm, "create_train_state", lambda *a, **k: calls.append(1) or real(*a, **k))
  first = lm.run_lm_stage(CFG, _sc(2), examples=TEXTS, tokenizer=TOK, workdir=str(tmp_path), verbose=False)
  assert len(calls) == 1
  again = lm.run_lm_stage(CFG, _sc(2), examples=TEXTS, tokenizer=TOK, workdir=str(tmp_path), verbose=False)
  assert len(calls) == 1                                               # restored, nothing built
  jax.tree.map(np.testing.assert_array_equal, first, again)

  from r1jax.stages import grpo
  from tests.stages import _grpo_setup as g
  calls.clear()
  monkeypatch.setattr(grpo, "create_train_state", lambda *a, **k: calls.append(1) or real(*a, **k))
  g.run(str(tmp_path / "rl"), 1)
  assert len(calls) == 1
  g.run(str(tmp_path / "rl"), 2)                                       # resumes at step 1, trains one more
  assert len(calls) == 1


# ------------------------------------------------------------------------------------------ exports and pipeline
def test_a_finished_export_is_reused_only_under_its_fingerprint_and_the_pipeline_reruns_stale_stages(tmp_path):
  up, down = str(tmp_path / "up"), str(tmp_path / "down")
  stage = lambda d, data, init=None: exported.lm_stage(d, CFG, _sc(2), data, TOK, init=init)
  m_up = stage(up, TEXTS)
  m_down = stage(down, TEXTS, init=m_up)
  meta_down = load_metadata(m_down)
  assert meta_down["fingerprint"]["input.init"] == load_metadata(m_up)["weights_sha256"]
  assert stage(up, TEXTS) == m_up                                       # the same fingerprint: reused
  # Other data for the finished stage: refused (standalone jobs), naming the key ...
  with pytest.raises(FingerprintMismatch, match=r"the finished model .*up/model was made .*: input.data: "):
    stage(up, TEXTS[:50])
  # ... or, in the pipeline, moved aside and run again; its dependant then sees other initial weights.
  assert pipeline._rerun_if_stale(up, lambda: stage(up, TEXTS[:50])) == m_up
  stale = [n for n in os.listdir(tmp_path) if n.startswith("up.stale-")]
  assert len(stale) == 1 and os.path.isdir(tmp_path / stale[0] / "model")      # kept, not deleted
  assert load_metadata(m_up)["weights_sha256"] != meta_down["fingerprint"]["input.init"]
  with pytest.raises(FingerprintMismatch, match=r"down/model was made .*: input.init: "):
    stage(down, TEXTS, init=m_up)
  pipeline._rerun_if_stale(down, lambda: stage(down, TEXTS, init=m_up))
  assert load_metadata(m_down)["fingerprint"]["input.init"] == load_metadata(m_up)["weights_sha256"]
  # A mismatch about something outside the stage directory is not the stage's to move.
  with pytest.raises(FingerprintMismatch):
    pipeline._rerun_if_stale(str(tmp_path / "other"), lambda: stage(up, TEXTS))


def test_a_tokenizer_knows_what_it_was_trained_on(tmp_path):
  path = str(tmp_path / "tokenizer.model")
  texts = [f"question: what is {a} plus {b}? answer: {a + b}, the sum" for a in range(20) for b in range(20)]
  tok = exported.tokenizer(path, texts, vocab_size=296)
  assert json.loads(open(path + ".fingerprint.json").read())["vocab_size"] == 296
  assert exported.tokenizer(path, texts, vocab_size=296) == tok         # the same texts: loaded
  assert exported.tokenizer(path) == tok                               # no texts: loaded as it is
  with pytest.raises(FingerprintMismatch, match=r"the tokenizer .*tokenizer.model was made .*: input.texts: "):
    exported.tokenizer(path, texts[:100], vocab_size=296)
  with pytest.raises(FingerprintMismatch, match=r": vocab_size: 296 -> 300"):
    exported.tokenizer(path, texts, vocab_size=300)
  retrained = pipeline._rerun_if_stale(path, lambda: exported.tokenizer(path, texts[:100], vocab_size=296))
  assert retrained != tok and exported.tokenizer(path, texts[:100], vocab_size=296) == retrained
  assert len([n for n in os.listdir(tmp_path) if ".stale-" in n]) == 2          # the model and its fingerprint
