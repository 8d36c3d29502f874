import os

import jax
import numpy as np
import pytest

from r1jax.checkpoint import is_model, load_model, save_model, weights_digest
from r1jax.model import ModelConfig, forward, init_variables


def test_export_round_trip_gives_same_logits(tmp_path):
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  path = save_model(tmp_path / "m", cfg, variables, metadata={"stage": "sft", "step": 3})
  assert is_model(path) and not os.path.exists(path + ".tmp")
  cfg2, variables2, meta = load_model(path, ModelConfig)
  assert cfg2 == cfg and meta == {"stage": "sft", "step": 3, "weights_sha256": weights_digest(variables)}
  # The digest names the weights by content: the same for the loaded copy, another for any changed element.
  assert weights_digest(variables2) == meta["weights_sha256"]
  changed = jax.tree.map(lambda x: x, variables2)
  changed["params"]["embed_tokens"] = changed["params"]["embed_tokens"].at[0, 0].add(1e-6)
  assert weights_digest(changed) != meta["weights_sha256"]
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


def test_an_export_never_replaces_something_else(tmp_path):
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  notes = tmp_path / "m"
  notes.mkdir()
  (notes / "my_notes.txt").write_text("keep me")
  with pytest.raises(FileExistsError, match="is not an exported model .*my_notes.txt"):
    save_model(notes, cfg, variables)
  assert (notes / "my_notes.txt").read_text() == "keep me"
  (tmp_path / "f").write_text("a file")
  with pytest.raises(FileExistsError, match="holds a file"):
    save_model(tmp_path / "f", cfg, variables)
  (tmp_path / "empty").mkdir()                                   # an empty directory may be the target
  assert is_model(save_model(tmp_path / "empty", cfg, variables))


def test_non_finite_parameters_are_never_saved(tmp_path):
  from r1jax.checkpoint import CheckpointManager
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  leaves, treedef = jax.tree.flatten(variables)
  poisoned = jax.tree.unflatten(treedef, [leaves[0].at[(0,) * leaves[0].ndim].set(np.nan)] + leaves[1:])
  with pytest.raises(FloatingPointError, match=r"1 array\(s\) hold NaN or inf"):
    save_model(tmp_path / "m", cfg, poisoned)
  assert not os.path.exists(tmp_path / "m") and not os.path.exists(tmp_path / "m.tmp")
  with CheckpointManager(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, {"params": variables})
    ckpt.wait()
    with pytest.raises(FloatingPointError, match="checkpoint step 2"):
      ckpt.save(2, {"params": poisoned})
    ckpt.wait()
    assert ckpt.all_steps() == [1]
