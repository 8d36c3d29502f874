"""Helpers that tests, colabs and benchmarks share: tiny configs and a fake tokenizer."""
from r1jax.testing.fake_tokenizer import FakeTokenizer


def tiny_model_config(**overrides):
  """The `tiny` preset (2 layers, d=32, 4 experts top-2, vocab 64, every DeepSeek-V3 feature on)."""
  from r1jax.model import ModelConfig
  return ModelConfig.preset("tiny", **overrides)
