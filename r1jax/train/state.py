"""TrainState: the small pytree every trainer updates (params, router bias, optimizer state, step)."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P


@flax.struct.dataclass
class TrainState:
  step: jax.Array            # int32[]
  params: Any                # trainable parameters (model variables["params"])
  router_bias: Any           # MoE selection biases (variables["router_bias"]); {} for dense models
  opt_state: Any

  def variables(self) -> dict:
    """The model variables accepted by r1jax.model.forward."""
    return variables_of(self.params, self.router_bias)


def variables_of(params, router_bias) -> dict:
  return {"params": params, "router_bias": router_bias} if router_bias else {"params": params}


def create_train_state(variables: dict, tx: optax.GradientTransformation) -> TrainState:
  """Wraps model variables (from init_variables or r1jax.hf.load) with a fresh optimizer state.

  Run under jit with sharded params, the optimizer moments inherit the parameters' shardings.
  """
  # A copy: the update donates the state's buffers, which must not delete the caller's variables.
  variables = jax.tree.map(jnp.copy, variables)
  params = variables["params"]
  mesh = _mesh_of(params)
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
                     router_bias=variables.get("router_bias", {}), opt_state=opt_state)
  if mesh is not None:  # the step counter goes on the same mesh, replicated
    state = jax.tree.map(lambda x: x if isinstance(getattr(x, "sharding", None), NamedSharding)
                         else jax.device_put(x, NamedSharding(mesh, P())), state)
  return state


def _mesh_of(tree):
  for leaf in jax.tree.leaves(tree):
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
      return sharding.mesh
  return None


def state_shardings(state: TrainState):
  """The shardings the state's arrays live in (used to pin a step's in/out shardings)."""
  return jax.tree.map(lambda x: x.sharding, state)
