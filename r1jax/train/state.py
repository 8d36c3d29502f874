"""TrainState: the small pytree every trainer updates (params, router bias, optimizer state, step).

With LoRA (r1jax.train.lora) `params` are the adapters and `frozen` the base parameters: the model's
variables are then the merged W + scale * A @ B, and only the adapters have gradients and optimizer state."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from r1jax.train import lora


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32[]
  params: Any                # trainable parameters (model variables["params"], or the LoRA adapters)
  router_bias: Any           # MoE selection biases (variables["router_bias"]); {} for dense models
  opt_state: Any
  frozen: Any = None         # with LoRA: the base model's params, never updated; None otherwise
  lora_scale: float = flax.struct.field(pytree_node=False, default=0.0)   # alpha / rank

  def model_params(self, params=None):
    """The model's params for trainable `params` (default: the state's): merged with the base under LoRA."""
    params = self.params if params is None else params
    return params if self.frozen is None else lora.merge(self.frozen, params, self.lora_scale)

  def variables(self) -> dict:
    """The model variables accepted by r1jax.model.forward (LoRA adapters merged into the base)."""
    if self.frozen is None:
      return variables_of(self.params, self.router_bias)
    return variables_of(_merge_jit(self.frozen, self.params, self.lora_scale), self.router_bias)

  def base_variables(self) -> dict:
    """The frozen base's variables under LoRA (the GRPO reference policy, without a second copy)."""
    if self.frozen is None:
      raise ValueError("base_variables: this state trains every parameter (no LoRA base)")
    return variables_of(self.frozen, self.router_bias)


_merge_jit = jax.jit(lora.merge, static_argnums=2)


def variables_of(params, router_bias) -> dict:
  return {"params": params, "router_bias": router_bias} if router_bias else {"params": params}


def create_train_state(variables: dict, tx: optax.GradientTransformation, *, lora_config=None,
                       key: jax.Array | None = None) -> TrainState:
  """Wraps model variables (from init_variables or r1jax.hf.load) with a fresh optimizer state.

  Run under jit with sharded params, the optimizer moments inherit the parameters' shardings. With an
  enabled `lora_config` (r1jax.train.lora.LoraConfig) the variables' params become the frozen base and fresh
  adapters (from `key`, replicated over the base's mesh) are what trains.
  """
  # A copy: the update donates the state's buffers, which must not delete the caller's variables.
  variables = jax.tree.map(jnp.copy, variables)
  params = variables["params"]
  mesh = _mesh_of(params)
  frozen, scale = None, 0.0
  if lora_config is not None and lora_config.enabled:
    frozen, scale = params, lora_config.scale
    params = lora.init_adapters(frozen, lora_config, jax.random.key(0) if key is None else key)
    if mesh is not None:
      params = jax.device_put(params, NamedSharding(mesh, P()))
  if mesh is None:
    opt_state = jax.jit(tx.init)(params)
  else:
    # Optimizer moments take their parameter's sharding; counts and other scalars are replicated.
    shapes = jax.eval_shape(tx.init, params)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    replicated = NamedSharding(mesh, P())
    out = optax.tree_map_params(tx, lambda _, s: s, shapes, param_shardings,
                                transform_non_params=lambda _: replicated)
    opt_state = jax.jit(tx.init, out_shardings=out)(params)
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     router_bias=variables.get("router_bias", {}), opt_state=opt_state, frozen=frozen,
                     lora_scale=scale)
  if mesh is not None:  # the step counter goes on the same mesh, replicated
    state = jax.tree.map(lambda x: x if isinstance(getattr(x, "sharding", None), NamedSharding)
                         else jax.device_put(x, NamedSharding(mesh, P())), state)
  return state


def abstract_train_state(variables: dict, tx: optax.GradientTransformation, *, lora_config=None) -> TrainState:
  """What `create_train_state(variables, tx, lora_config=...)` returns, as jax.ShapeDtypeStructs carrying the
  shardings its arrays would have, computing and allocating nothing: the target a resumed run restores its
  checkpoint into, so that no fresh state is built only to be overwritten.

  `variables`: arrays or ShapeDtypeStructs with shardings (r1jax.model.transformer.abstract_variables)."""
  enabled = lora_config is not None and lora_config.enabled
  shapes = jax.eval_shape(lambda v: create_train_state(v, tx, lora_config=lora_config, key=jax.random.key(0)),
                          variables)
  mesh = _mesh_of(variables)
  if mesh is not None:
    replicated = NamedSharding(mesh, P())
  else:
    devices = {d for x in jax.tree.leaves(variables) for d in x.sharding.device_set}
    replicated = jax.sharding.SingleDeviceSharding(devices.pop() if len(devices) == 1 else jax.devices()[0])
  var_sh = jax.tree.map(lambda x: x.sharding, variables)
  params_sh = jax.tree.map(lambda _: replicated, shapes.params) if enabled else var_sh["params"]
  opt_sh = optax.tree_map_params(tx, lambda _, s: s, shapes.opt_state, params_sh,
                                 transform_non_params=lambda _: replicated)
  shardings = TrainState(step=replicated, params=params_sh, router_bias=var_sh.get("router_bias", {}),
                         opt_state=opt_sh, frozen=var_sh["params"] if enabled else None,
                         lora_scale=shapes.lora_scale)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)


def _mesh_of(tree):
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
      return sharding.mesh
  return None


def state_shardings(state: TrainState):
  """The shardings the state's arrays live in (used to pin a step's in/out shardings)."""
  return jax.tree.map(lambda x: x.sharding, state)
