"""Logical axis names -> mesh axes: one table per sharding strategy.

Every parameter and the main activations of the model carry *logical* axis names (`embed`, `expert`,
`mlp`, ...). A rules table maps each name to a mesh axis (or a tuple of axes, or None for replicated).
Changing strategy means picking another table, never editing a layer.

Logical names used by r1jax.model:
  batch        leading batch/sequence dimension of activations
  seq          time dimension of activations (never sharded here)
  act_embed    model width of activations (replicated: the batch already uses data/fsdp)
  embed        model width of weights (FSDP shards it)
  vocab        vocabulary rows/columns
  heads        attention heads (q heads; MLA heads)
  kv_heads     GQA key/value heads
  head_dim     per-head width
  q_lora       MLA query latent rank
  kv_lora      MLA KV latent rank (+ shared rope key)
  mlp          dense SwiGLU hidden width
  expert       routed-expert index
  expert_mlp   routed-expert hidden width
  norm         norm scales and small vectors (replicated)
"""
from __future__ import annotations

MESH_AXES = ("data", "fsdp", "expert", "tensor")

# Data parallel over (data, fsdp), weights' embed dim sharded on fsdp, experts split on `expert`,
# Megatron-style tensor parallel on `tensor`. With fsdp=tensor=1 this is plain DP x EP.
FSDP_TP = (
    ("batch", ("data", "fsdp")),
    ("seq", None),
    ("act_embed", None),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("q_lora", None),
    ("kv_lora", None),
    ("mlp", "tensor"),
    ("expert", "expert"),
    ("expert_mlp", "tensor"),
    ("norm", None),
)

RULES = {"fsdp_tp": FSDP_TP}
DEFAULT_RULES = "fsdp_tp"


def get_rules(name: str):
  """Returns the rules table called `name` (see RULES)."""
  if name not in RULES:
    raise ValueError(f"unknown sharding rules {name!r}; known: {sorted(RULES)}")
  return RULES[name]
