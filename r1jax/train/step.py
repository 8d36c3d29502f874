"""The generic jitted update shared by the LM/SFT step and the GRPO step.

    update = make_update(model_cfg, tx, loss_fn, router_bias_rate=1e-3)
    state, metrics = update(state, batch)

`loss_fn(variables, batch) -> (loss, (metrics, aux))` is the only thing a trainer supplies. The update
takes gradients of the trainable params only, applies the optimizer, then moves the MoE router bias with
the auxiliary-loss-free rule from the expert loads of this batch (no gradient, no weight decay).

Gradient accumulation (`accum_steps=k`): the batch is split into k microbatches (`split`), run one after
another in a `lax.scan` (one microbatch's activations live at a time), and their gradients are combined
into the gradient of the whole batch's loss before one optimizer step. A loss that is a mean, sum / n,
over its batch (tokens or sequences) is exact only when each microbatch is weighted by its own n, not
equally: the loss_fn reports n as `aux["loss_weight"]` and the update takes
    loss = sum_i n_i loss_i / sum_i n_i,    grad = sum_i n_i grad_i / sum_i n_i,
which is the big batch's token mean however unevenly the tokens fall. The MoE expert counts are summed
(the router bias moves once, from the whole batch's loads). One term is weighted like the rest although it
is a mean over sequences: the sequence-wise MoE balance loss (balance_loss_coef > 0), exact when the loss
is a sequence mean and token-weighted across microbatches when it is a token mean.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
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


def split_rows(batch: dict, k: int) -> tuple[dict, dict]:
  """The default microbatch split: microbatch i is rows i, i + k, i + 2k, ... of every array.

  Returns (scanned, shared): `scanned` holds each array reshaped to [k, S / k, ...]. Strided rows keep each
  microbatch spread over every device of the batch axes (a device holding a contiguous block of S / D rows
  holds S / (D k) rows of each microbatch), so the split moves no data."""
  scanned = {}
  for name, x in batch.items():
    if x.shape[0] % k:
      raise ValueError(f"gradient accumulation: batch[{name!r}] has {x.shape[0]} rows, not divisible into "
                       f"{k} microbatches")
    x = jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
    scanned[name] = nn.with_logical_constraint(x, (None, "batch") + (None,) * (x.ndim - 2))
  return scanned, {}


def combine_metrics(metrics: dict, weights: jax.Array) -> dict:
  """One value per metric from the microbatches' values [k]: *_max / *_min are the max / min, num_tokens is
  the sum, anything else (means) the mean weighted like the loss."""
  total = weights.sum()
  out = {}
  for name, v in metrics.items():
    if name.endswith("_max"):
      out[name] = v.max()
    elif name.endswith("_min"):
      out[name] = v.min()
    elif name == "num_tokens":
      out[name] = v.sum()
    else:
      out[name] = jnp.where(total > 0, (weights * v).sum() / jnp.where(total > 0, total, 1.0), v.mean())
  return out


def make_update(cfg: ModelConfig, tx: optax.GradientTransformation, loss_fn: Callable, *,
                router_bias_rate: float = 0.0, mesh=None, rules="fsdp_tp", donate: bool = True,
                accum_steps: int = 1, split: Callable = split_rows):
  """Builds the jitted `update(state, batch) -> (state, metrics)`.

  Args:
    cfg: model architecture (for the router-bias layout).
    tx: optax transformation.
    loss_fn: (variables, batch) -> (scalar loss, (metrics dict, aux dict with "expert_counts" [L, E])).
    router_bias_rate: gamma of the aux-loss-free balancing update (0 = frozen bias, as for fine-tuning).
    mesh: when given, the step is traced under the mesh's logical rules; the state keeps its shardings.
    donate: donate the input state's buffers (in-place update; halves peak memory).
    accum_steps: microbatches per optimizer step (gradient accumulation, see the module docstring); the
      loss_fn must then report `aux["loss_weight"]`.
    split: (batch, k) -> (scanned, shared): the microbatches as arrays with a leading axis of k, and the
      arrays every microbatch sees whole (default `split_rows`).
  """
  if accum_steps < 1:
    raise ValueError(f"accum_steps={accum_steps!r}: must be >= 1")

  def loss_and_grads(state: TrainState, batch):
    def objective(params):                  # under LoRA, params are the adapters and the base is frozen
      return loss_fn(variables_of(state.model_params(params), state.router_bias), batch)

    (loss, (metrics, aux)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    return loss, metrics, aux or {}, grads

  def whole(state: TrainState, batch):
    loss, metrics, aux, grads = loss_and_grads(state, batch)
    return loss, metrics, aux.get("expert_counts"), grads

  def accumulated(state: TrainState, batch, grad_shardings=None):
    scanned, shared = split(batch, accum_steps)

    def body(grad_sum, micro):
      loss, metrics, aux, grads = loss_and_grads(state, {**shared, **micro})
      if "loss_weight" not in aux:
        raise ValueError("gradient accumulation needs the loss_fn to report aux['loss_weight'] (the number of "
                         "tokens or sequences its mean is over)")
      weight = aux["loss_weight"].astype(jnp.float32)
      grad_sum = jax.tree.map(lambda a, g: a + weight * g.astype(jnp.float32), grad_sum, grads)
      return grad_sum, (loss, metrics, aux.get("expert_counts"), weight)

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
    if grad_shardings is not None:        # the running sum lives where the parameters do, never replicated
      zeros = jax.lax.with_sharding_constraint(zeros, grad_shardings)
    grad_sum, (losses, metrics, counts, weights) = jax.lax.scan(body, zeros, scanned)
    total = weights.sum()
    safe = jnp.where(total > 0, total, 1.0)   # no token anywhere: every microbatch's loss and gradient are 0
    grads = jax.tree.map(lambda s, p: (s / safe).astype(p.dtype), grad_sum, state.params)
    loss = (weights * losses).sum() / safe
    return loss, combine_metrics(metrics, weights), (None if counts is None else counts.sum(0)), grads

  def step(state: TrainState, batch, grad_shardings=None):
    if accum_steps == 1:
      loss, metrics, counts, grads = whole(state, batch)
    else:
      loss, metrics, counts, grads = accumulated(state, batch, grad_shardings)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
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
      jitted[key] = jax.jit(functools.partial(step, grad_shardings=None if shardings is None else shardings.params),
                            donate_argnums=(0,) if donate else (),
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
