"""The generic jitted update shared by the LM/SFT step and the GRPO step.

    update = make_update(model_cfg, tx, loss_fn, router_bias_rate=1e-3)
    state, metrics = update(state, batch)

`loss_fn(variables, batch) -> (loss, (metrics, aux))` is the only thing a trainer supplies. The update
takes gradients of the trainable params only, applies the optimizer, then moves the MoE router bias with
the auxiliary-loss-free rule from the expert loads of this batch (no gradient, no weight decay).
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from r1jax.model.config import ModelConfig
from r1jax.model.moe import update_router_bias
from r1jax.sharding.mesh import mesh_rules
from r1jax.train.state import TrainState, state_shardings, variables_of


class NonFiniteError(FloatingPointError):
  """A loss or gradient became NaN/inf."""


def update_router_biases(cfg: ModelConfig, router_bias: dict, counts_le: jax.Array, rate: float) -> dict:
  """Applies update_router_bias to each MoE layer's bias with that layer's expert counts [L_moe, E]."""
  if not router_bias or rate == 0:
    return router_bias
  moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
  new = jax.tree.map(lambda x: x, router_bias)
  for j, i in enumerate(moe_layers):
    b = new[f"layers_{i}"]["mlp"]["e_score_correction_bias"]
    new[f"layers_{i}"]["mlp"]["e_score_correction_bias"] = update_router_bias(b, counts_le[j], rate)
  return new


def expert_balance_metrics(counts_le: jax.Array) -> dict:
  """maxvio = max_e load_e / mean load - 1 (DeepSeek-V3's balance metric), averaged and worst over layers."""
  if counts_le is None or counts_le.size == 0:
    return {}
  maxvio = counts_le.max(-1) / jnp.maximum(counts_le.mean(-1), 1e-9) - 1.0
  return {"expert_maxvio_mean": maxvio.mean(), "expert_maxvio_max": maxvio.max()}


def make_update(cfg: ModelConfig, tx: optax.GradientTransformation, loss_fn: Callable, *,
                router_bias_rate: float = 0.0, mesh=None, rules="fsdp_tp", donate: bool = True):
  """Builds the jitted `update(state, batch) -> (state, metrics)`.

  Args:
    cfg: model architecture (for the router-bias layout).
    tx: optax transformation.
    loss_fn: (variables, batch) -> (scalar loss, (metrics dict, aux dict with "expert_counts" [L, E])).
    router_bias_rate: gamma of the aux-loss-free balancing update (0 = frozen bias, as for fine-tuning).
    mesh: when given, the step is traced under the mesh's logical rules; the state keeps its shardings.
    donate: donate the input state's buffers (in-place update; halves peak memory).
  """

  def step(state: TrainState, batch):
    def objective(params):                  # under LoRA, params are the adapters and the base is frozen
      return loss_fn(variables_of(state.model_params(params), state.router_bias), batch)

    (loss, (metrics, aux)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    counts = aux.get("expert_counts") if aux else None
    router_bias = state.router_bias
    if counts is not None:
      router_bias = update_router_biases(cfg, state.router_bias, counts, router_bias_rate)
    metrics = dict(metrics)
    metrics.update(loss=loss, grad_norm=optax.tree.norm(grads), **expert_balance_metrics(counts))
    new_state = state.replace(step=state.step + 1, params=params, router_bias=router_bias, opt_state=opt_state)
    return new_state, metrics

  jitted = {}

  def update(state: TrainState, batch):
    key = jax.tree.structure(batch)
    if key not in jitted:
      shardings = state_shardings(state) if mesh is not None else None
      jitted[key] = jax.jit(step, donate_argnums=(0,) if donate else (),
                            out_shardings=(shardings, None) if shardings is not None else None)
    with mesh_rules(mesh, rules):
      return jitted[key](state, batch)

  return update


def check_finite(metrics: dict, step: int, keys=("loss", "grad_norm")) -> None:
  """Raises NonFiniteError naming the step if a loss or the gradient norm is NaN/inf (host-side)."""
  for k in keys:
    if k in metrics:
      v = float(jax.device_get(metrics[k]))
      if not jnp.isfinite(v):
        raise NonFiniteError(f"non-finite {k}={v} at step {step}; the last good checkpoint is kept")
