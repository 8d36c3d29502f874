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
