"""A TrainState as the tree the stages checkpoint, and back.

The LM and GRPO stages both save their TrainState through `state_dict` and restore it through
`from_state_dict`, so the checkpoint layout ({"step", "params", "router_bias", "opt_state"}) is defined
once. The GRPO stage nests it under "state", beside the reference model.
"""
from __future__ import annotations

from r1jax.train.state import TrainState


def state_dict(state: TrainState) -> dict:
  """The checkpointed tree of `state`: {"step", "params", "router_bias", "opt_state"}, and "frozen" (the base)
  when it trains LoRA adapters."""
  d = {"step": state.step, "params": state.params, "router_bias": state.router_bias, "opt_state": state.opt_state}
  if state.frozen is not None:
    d["frozen"] = state.frozen
  return d


def from_state_dict(d: dict, like: TrainState | None = None) -> TrainState:
  """The TrainState of a tree written by `state_dict` (e.g. restored from a checkpoint); `like` (the state it
  was restored into) gives the LoRA scale."""
  return TrainState(step=d["step"], params=d["params"], router_bias=d["router_bias"], opt_state=d["opt_state"],
                    frozen=d.get("frozen"), lora_scale=like.lora_scale if like is not None else 0.0)
