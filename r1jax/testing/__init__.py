"""Helpers that tests, colabs and benchmarks share: tiny configs, a fake tokenizer, CPU meshes."""
from r1jax.testing.fake_tokenizer import FakeTokenizer


def tiny_model_config(**overrides):
  """The `tiny` preset (2 layers, d=32, 4 experts top-2, vocab 64, every DeepSeek-V3 feature on)."""
  from r1jax.model import ModelConfig
  return ModelConfig.preset("tiny", **overrides)


def cpu_mesh(shape=None):
  """A mesh over the (fake) CPU devices; see r1jax.sharding.make_mesh."""
  from r1jax.sharding import make_mesh
  return make_mesh(shape)
