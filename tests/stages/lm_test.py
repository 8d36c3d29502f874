"""The LM stage: trains and checkpoints; a non-finite step raises, naming it, and keeps the last good save."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from r1jax.checkpoint import CheckpointManager
from r1jax.model import ModelConfig
from r1jax.testing import FakeTokenizer
from r1jax.train import NonFiniteError
from r1jax.stages import lm

CFG = ModelConfig.preset("tiny")
TEXTS = [{"prompt": f"Q: {a}+{b}\nA: ", "completion": str(a + b)} for a in range(10) for b in range(10)]


def _config(num_steps):
  return lm.LMStageConfig(num_steps=num_steps, batch_size=2, seq_len=32, log_every=1, checkpoint_every=2,
                          optim=lm.OptimConfig(learning_rate=1e-3, total_steps=10))


def test_stage_runs_resumes_and_finishes(tmp_path):
  tok = FakeTokenizer(vocab_size=64)
  lm.run_lm_stage(CFG, _config(2), examples=TEXTS, tokenizer=tok, workdir=str(tmp_path), verbose=False)
  variables = lm.run_lm_stage(CFG, _config(4), examples=TEXTS, tokenizer=tok, workdir=str(tmp_path),
                                 verbose=False)
  assert CheckpointManager(str(tmp_path / "checkpoints")).latest_step() == 4
  assert set(variables) == {"params", "router_bias"}


def test_non_finite_step_raises_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  real = lm.make_distill_update

  def poisoned(*args, **kwargs):
    update = real(*args, **kwargs)

    def wrapped(state, batch):
      new_state, metrics = update(state, batch)
      if int(new_state.step) == 3:           # the third update "diverges"
        metrics = {**metrics, "loss": jnp.float32(jnp.nan)}
      return new_state, metrics
    return wrapped

  monkeypatch.setattr(lm, "make_distill_update", poisoned)
  with pytest.raises(NonFiniteError, match="at step 3"):
    lm.run_lm_stage(CFG, _config(6), examples=TEXTS, tokenizer=FakeTokenizer(vocab_size=64),
                    workdir=str(tmp_path), verbose=False)
  ckpt = CheckpointManager(str(tmp_path / "checkpoints"))
  assert ckpt.all_steps() == [2]
  state, _ = ckpt.restore(2)
  assert int(np.asarray(state["step"])) == 2
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))



def test_gradient_accumulation_in_the_stage_gives_the_one_batch_run(tmp_path, monkeypatch):
  """LMStageConfig.lm.grad_accum_steps reaches the update: 2 microbatches per step train as 1 batch does."""
  from r1jax.train import distill
  seen, real = [], distill.make_update
  monkeypatch.setattr(distill, "make_update", lambda *a, **kw: seen.append(kw["accum_steps"]) or real(*a, **kw))
  tok = FakeTokenizer(vocab_size=64)
  runs = {}
  for k in (1, 2):
    sc = lm.LMStageConfig(num_steps=3, batch_size=4, seq_len=32, log_every=1, checkpoint_every=3,
                          lm=lm.LMConfig(grad_accum_steps=k, balance_loss_coef=0.0),
                          optim=lm.OptimConfig(learning_rate=1e-3, total_steps=10))
    runs[k] = lm.run_lm_stage(CFG, sc, examples=TEXTS, tokenizer=tok, workdir=str(tmp_path / str(k)),
                              verbose=False)
  assert seen == [1, 2]
  # three Adam steps: rounding differences of the summation order stay at the 1e-5 level
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5), runs[2], runs[1])
