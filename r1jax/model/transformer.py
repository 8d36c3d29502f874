"""The decoder: embeddings -> N x (attention, dense MLP or MoE) -> norm -> logits, used functionally.

    variables = init_variables(cfg, jax.random.key(0))
    logits = forward(cfg, variables, tokens, attention_mask=None, positions=None)   # f32[B, T, V]

`variables` is the flax variables dict: {"params": trainable arrays, "router_bias": MoE selection biases}
("router_bias" exists only for MoE models with use_routing_bias). Train with gradients of
variables["params"]; move variables["router_bias"] with `update_router_bias`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from r1jax.model.attention import GQA, MLA
from r1jax.model.config import ModelConfig
from r1jax.model.layers import MLP, RMSNorm, constrain, param
from r1jax.model.moe import MoE
from r1jax.model.runtime import DEFAULT, Runtime
from r1jax.sharding.mesh import logical_to_sharding, mesh_rules


class ModelOutput(NamedTuple):
  logits: jax.Array        # f32[B, T, V] (or [B, num_logits, V])
  aux: dict                # per MoE layer: expert_counts f32[L, E], balance_loss f32[L], dropped_fraction f32[L]
  cache: Any               # the updated cache, or None


class DecoderLayer(nn.Module):
  cfg: ModelConfig
  moe: bool
  runtime: Runtime = DEFAULT

  @nn.compact
  def __call__(self, x, positions, mask_b1ts, token_mask, cache, cache_index):
    cfg, rt = self.cfg, self.runtime
    attn = MLA(cfg, runtime=rt, name="self_attn") if cfg.attention == "mla" else GQA(cfg, name="self_attn")
    h, new_cache = attn(
        RMSNorm(cfg, name="input_layernorm")(x), positions, mask_b1ts, cache, cache_index)
    x = constrain(x + h, ("batch", "seq", "act_embed"))
    y = RMSNorm(cfg, name="post_attention_layernorm")(x)
    if self.moe:
      y, aux = MoE(cfg, rt, name="mlp")(y, token_mask)
    else:
      y, aux = MLP(cfg, cfg.intermediate_size, rt, name="mlp")(y), None
    return constrain(x + y, ("batch", "seq", "act_embed")), aux, new_cache


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Transformer(nn.Module):
  cfg: ModelConfig
  runtime: Runtime = DEFAULT

  @nn.compact
  def __call__(self, tokens_bt, positions_bt, mask_b1ts, token_mask_bt, cache=None, num_logits=0):
    cfg, dt = self.cfg, self.cfg.jnp_dtype
    embed = param(self, "embed_tokens", (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"), cfg)
    x = constrain(jnp.take(embed, tokens_bt, axis=0).astype(dt), ("batch", "seq", "act_embed"))

    layer_cls = DecoderLayer
    if cfg.remat != "none" and cache is None:
      layer_cls = nn.remat(DecoderLayer, policy=_REMAT_POLICIES[cfg.remat], prevent_cse=True)
    auxes, new_layers = [], []
    index = None if cache is None else cache["index"]
    for i in range(cfg.num_hidden_layers):
      layer_cache = None if cache is None else cache["layers"][i]
      x, aux, new_layer_cache = layer_cls(cfg, cfg.is_moe_layer(i), self.runtime, name=f"layers_{i}")(
          x, positions_bt, mask_b1ts, token_mask_bt, layer_cache, index)
      new_layers.append(new_layer_cache)
      if aux is not None:
        auxes.append(aux)

    if num_logits:  # only the last positions need logits (prefill, decode, completion log-probs)
      x = x[:, -num_logits:]
    x = RMSNorm(cfg, name="norm")(x)
    if cfg.tie_word_embeddings:
      logits = jnp.einsum("BTD,VD->BTV", x, embed.astype(dt), preferred_element_type=jnp.float32)
    else:
      head = param(self, "lm_head", (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"), cfg).astype(dt)
      logits = jnp.einsum("BTD,DV->BTV", x, head, preferred_element_type=jnp.float32)
    aux = jax.tree.map(lambda *xs: jnp.stack(xs), *auxes) if auxes else {}
    return logits.astype(jnp.float32), aux, new_layers


# -------------------------------------------------------------------------------------------- masks
def default_positions(attention_mask_bt: jax.Array) -> jax.Array:
  """Running count of real tokens (0 for the first real token; left padding gets 0)."""
  return jnp.maximum(jnp.cumsum(attention_mask_bt.astype(jnp.int32), axis=-1) - 1, 0)


def attention_mask_b1ts(token_mask_bt: jax.Array, segment_ids_bt: jax.Array | None = None) -> jax.Array:
  """Causal, key-padding and (for packed sequences) same-segment mask, bool[B, 1, T, T]."""
  t = token_mask_bt.shape[1]
  mask = jnp.tril(jnp.ones((t, t), bool))[None] & (token_mask_bt[:, None, :] > 0)
  if segment_ids_bt is not None:
    mask = mask & (segment_ids_bt[:, :, None] == segment_ids_bt[:, None, :])
  return mask[:, None]


# -------------------------------------------------------------------------------------------- API
def _check_tokens(cfg: ModelConfig, tokens) -> None:
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [batch, time], got shape {tokens.shape}")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise ValueError(f"tokens must be integers, got {tokens.dtype}")


def apply_model(cfg: ModelConfig, variables, tokens, *, attention_mask=None, positions=None, segment_ids=None,
                cache=None, last_only: bool = False, num_logits: int = 0,
                runtime: Runtime | None = None) -> ModelOutput:
  """Runs the decoder and returns logits, MoE statistics and (when given a cache) the updated cache.

  Args:
    cfg: the architecture.
    variables: variables from `init_variables` (or r1jax.hf.load).
    tokens: int[B, T].
    attention_mask: int/bool[B, T], 1 = real token (left or right padding); None = all real.
    positions: int[B, T]; None = running count of real tokens (with a cache: continues from the cache).
    segment_ids: int[B, T] for packed sequences: tokens attend only within their segment (no cache).
    cache: from `init_cache` / a previous call. New keys are written at cache["index"]; queries attend to
      every valid cached slot up to their own.
    last_only: compute logits for the last position only (prefill / decode); same as num_logits=1.
    num_logits: if > 0, compute logits for the last `num_logits` positions only (e.g. a completion).
    runtime: how to compute it (r1jax.model.runtime); None = the default (sorted dropless MoE, XLA).
  """
  _check_tokens(cfg, tokens)
  runtime = DEFAULT if runtime is None else runtime.validate_for(cfg)
  b, t = tokens.shape
  token_mask = jnp.ones((b, t), jnp.int32) if attention_mask is None else attention_mask.astype(jnp.int32)
  if cache is None:
    if positions is None:
      positions = default_positions(token_mask)
    mask = attention_mask_b1ts(token_mask, segment_ids)
  else:
    if segment_ids is not None:
      raise ValueError("segment_ids (packing) cannot be combined with a KV cache")
    index = cache["index"]
    key_mask = jax.lax.dynamic_update_slice(cache["key_mask"], token_mask > 0, (0, index))
    if positions is None:
      seen = jnp.sum(cache["key_mask"], axis=-1, dtype=jnp.int32)[:, None]
      positions = seen + jnp.maximum(jnp.cumsum(token_mask, axis=-1) - 1, 0)
    slots = jnp.arange(key_mask.shape[1])
    causal = slots[None, :] <= (index + jnp.arange(t))[:, None]                # [T, L]
    mask = (causal[None] & key_mask[:, None, :])[:, None]
  num_logits = 1 if last_only else num_logits
  logits, aux, layers = Transformer(cfg, runtime).apply(variables, tokens, positions, mask, token_mask, cache,
                                                        num_logits)
  new_cache = None
  if cache is not None:
    new_cache = {"layers": layers, "key_mask": key_mask, "index": cache["index"] + t}
  return ModelOutput(logits, aux, new_cache)


def forward(cfg: ModelConfig, variables, tokens, attention_mask=None, positions=None, *, segment_ids=None,
            runtime: Runtime | None = None):
  """Logits f32[B, T, V] of the decoder (see apply_model for the arguments)."""
  return apply_model(cfg, variables, tokens, attention_mask=attention_mask, positions=positions,
                     segment_ids=segment_ids, runtime=runtime).logits


def _init_boxed(cfg: ModelConfig, key):
  tokens = jnp.zeros((1, 4), jnp.int32)
  mask = jnp.ones((1, 4), jnp.int32)
  return Transformer(cfg).init(key, tokens, default_positions(mask), attention_mask_b1ts(mask), mask)


def param_specs(cfg: ModelConfig):
  """Logical PartitionSpecs of the variables (same tree as init_variables)."""
  return nn.get_partition_spec(jax.eval_shape(lambda k: _init_boxed(cfg, k), jax.random.key(0)))


def param_shardings(cfg: ModelConfig, mesh, rules="fsdp_tp"):
  """NamedShardings of the variables on `mesh` under the rules table."""
  return logical_to_sharding(param_specs(cfg), mesh, rules)


def place_variables(cfg: ModelConfig, variables, mesh, rules="fsdp_tp"):
  """`variables` (host or device arrays, e.g. a loaded checkpoint) in their shardings on `mesh`; as they
  are when mesh is None."""
  if mesh is None:
    return variables
  return jax.device_put(variables, param_shardings(cfg, mesh, rules))


def abstract_variables(cfg: ModelConfig, variables=None, mesh=None, rules="fsdp_tp"):
  """jax.ShapeDtypeStructs of `place_variables(cfg, variables, mesh)` (variables=None: of
  `init_variables(cfg, key, mesh=mesh)`) with the shardings they would have, computing nothing."""
  if variables is None:
    variables = jax.eval_shape(lambda: nn.meta.unbox(_init_boxed(cfg, jax.random.key(0))))
  if mesh is not None:
    shardings = param_shardings(cfg, mesh, rules)
  else:
    default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda x: x.sharding if isinstance(x, jax.Array) else default, variables)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), variables, shardings)


def init_variables(cfg: ModelConfig, key, *, mesh=None, rules="fsdp_tp"):
  """Random variables {"params": ..., ["router_bias": ...]} as plain arrays.

  With a mesh, each array is created directly in its sharding (experts split on `expert`, ...).
  """
  init = lambda k: nn.meta.unbox(_init_boxed(cfg, k))
  if mesh is None:
    return jax.jit(init)(key)
  with mesh_rules(mesh, rules):
    return jax.jit(init, out_shardings=param_shardings(cfg, mesh, rules))(key)


def token_logprobs(logits_btv: jax.Array, targets_bt: jax.Array, temperature: float = 1.0) -> jax.Array:
  """log_softmax(logits / temperature)[target] in float32: f32[B, T].

  The one expression both the sampler and the GRPO update use, so that the old-policy log-probs the
  sampler returns and the ones the update recomputes agree to float rounding.
  """
  logits = logits_btv.astype(jnp.float32) / temperature
  picked = jnp.take_along_axis(logits, targets_bt[..., None].astype(jnp.int32), axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_logprobs(cfg: ModelConfig, variables, tokens_bt, attention_mask_bt, num_completion: int,
                      temperature: float = 1.0, runtime: Runtime | None = None):
  """Log-probs of the last `num_completion` tokens of each row given everything before them.

  Args:
    tokens_bt: int[B, P + N] prompt (left-padded) followed by the completion (right-padded).
    attention_mask_bt: [B, P + N], 1 for real tokens.
    num_completion: N.

  Returns:
    (logp f32[B, N], aux) where aux holds the MoE statistics of the forward pass.
  """
  out = apply_model(cfg, variables, tokens_bt[:, :-1], attention_mask=attention_mask_bt[:, :-1],
                    num_logits=num_completion, runtime=runtime)
  return token_logprobs(out.logits, tokens_bt[:, -num_completion:], temperature), out.aux
