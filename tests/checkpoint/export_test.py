import os

import jax
import numpy as np
import pytest

from r1jax.checkpoint import is_model, load_model, save_model
from r1jax.model import ModelConfig, forward, init_variables


def test_export_round_trip_gives_same_logits(tmp_path):
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  path = save_model(tmp_path / "m", cfg, variables, metadata={"stage": "sft", "step": 3})
  assert is_model(path) and not os.path.exists(path + ".tmp")
  cfg2, variables2, meta = load_model(path, ModelConfig)
  assert cfg2 == cfg and meta == {"stage": "sft", "step": 3}
  tokens = np.arange(12).reshape(2, 6) % cfg.vocab_size
  np.testing.assert_array_equal(forward(cfg, variables, tokens), forward(cfg2, variables2, tokens))
  with pytest.raises(FileExistsError):
    save_model(path, cfg, variables)


def test_half_written_export_is_not_a_model(tmp_path):
  (tmp_path / "m.tmp").mkdir()
  assert not is_model(tmp_path / "m") and not is_model(tmp_path / "m.tmp")
  with pytest.raises(FileNotFoundError, match="not an exported r1jax model"):
    load_model(tmp_path / "m", ModelConfig)
  cfg = ModelConfig.preset("tiny")
  save_model(tmp_path / "m", cfg, init_variables(cfg, jax.random.key(1)))   # a stale .tmp is cleared
  assert is_model(tmp_path / "m")
