"""Runtime: the execution choices apart from the architecture, validated on construction and per model."""
import json

import jax
import numpy as np
import pytest

from r1jax.kernels import cpu as cpu_kernels
from r1jax.model import ModelConfig, Runtime, forward, init_variables
from r1jax.model.config import ConfigError, LEGACY_RUNTIME_FIELDS

BAD = [
    # (Runtime fields, field named in the error, a fragment of the reason)
    (dict(moe_impl="megablox"), "moe_impl", "sorted"),
    (dict(moe_impl="cpu_kernel"), "moe_impl", "one of"),
    (dict(attention_impl="flash"), "attention_impl", "one of"),
    (dict(capacity_factor=-1.0), "capacity_factor", ">= 0"),
    (dict(moe_impl="ragged", capacity_factor=1.25), "capacity_factor", "only"),
    (dict(moe_block_size=-8), "moe_block_size", ">= 0"),
    (dict(moe_impl="kernel"), "moe_impl", "needs `kernels`"),
    (dict(mlp_impl="kernel"), "mlp_impl", "needs `kernels`"),
]


@pytest.mark.parametrize("fields,field,reason", BAD, ids=[b[1] + "-" + str(i) for i, b in enumerate(BAD)])
def test_bad_runtime_names_the_field(fields, field, reason):
  with pytest.raises(ValueError, match=f"Runtime.{field}=.*{reason}"):
    Runtime(**fields)


@pytest.mark.parametrize("field,dtype", [("moe_impl", "bfloat16"), ("attention_impl", "bfloat16"),
                                         ("mlp_impl", "bfloat16")])
def test_kernels_refuse_a_non_float32_model(field, dtype):
  rt = Runtime(**{field: "kernel"}, kernels=cpu_kernels)
  rt.validate_for(ModelConfig.preset("tiny"))                     # float32: fine
  with pytest.raises(ValueError, match=f"Runtime.{field}='kernel'.*float32 only"):
    rt.validate_for(ModelConfig.preset("tiny", dtype=dtype))
  with pytest.raises(ValueError, match="float32 only"):           # apply_model checks before tracing
    forward(ModelConfig.preset("tiny", param_dtype=dtype), {}, np.zeros((1, 2), np.int32), runtime=rt)


def test_runtime_is_hashable_and_replaces():
  rt = Runtime(moe_impl="sorted", capacity_factor=1.25)
  assert hash(rt) == hash(Runtime(capacity_factor=1.25)) and rt.replace(capacity_factor=0.0) == Runtime()
  assert not rt.uses_kernels and Runtime(attention_impl="kernel", kernels=cpu_kernels).uses_kernels


def test_model_config_has_no_execution_fields():
  assert not set(LEGACY_RUNTIME_FIELDS) & set(ModelConfig().to_dict())
  with pytest.raises(TypeError):
    ModelConfig.preset("tiny", moe_impl="dense")


def test_an_old_exported_config_still_loads(tmp_path):
  """Model directories written when ModelConfig held the execution fields load without them."""
  old = {**ModelConfig.preset("tiny").to_dict(), "moe_impl": "sorted", "capacity_factor": 0.0,
         "moe_block_size": 0, "attention_impl": "xla", "mlp_impl": "xla"}
  assert ModelConfig.from_dict(json.loads(json.dumps(old))) == ModelConfig.preset("tiny")
  with pytest.raises(ConfigError, match="no fields.*'hiden_size'"):
    ModelConfig.from_dict({**ModelConfig.preset("tiny").to_dict(), "hiden_size": 3})


def test_the_runtime_changes_speed_not_the_function():
  cfg = ModelConfig.preset("tiny")
  variables = init_variables(cfg, jax.random.key(0))
  tok = np.arange(12, dtype=np.int32).reshape(2, 6) % cfg.vocab_size
  ref = np.asarray(forward(cfg, variables, tok))
  np.testing.assert_array_equal(ref, np.asarray(forward(cfg, variables, tok, runtime=Runtime())))
  for rt in (Runtime(moe_impl="dense"), Runtime(moe_impl="ragged"), Runtime(moe_block_size=8),
             Runtime(capacity_factor=4.0)):
    np.testing.assert_allclose(np.asarray(forward(cfg, variables, tok, runtime=rt)), ref, rtol=2e-5, atol=2e-5)
