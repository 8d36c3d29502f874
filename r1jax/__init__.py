"""r1jax: the DeepSeek-R1 recipe in JAX, from a laptop CPU to a multi-host mesh."""

__version__ = "0.1.0"
