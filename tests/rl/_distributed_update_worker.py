"""One process of the multi-process GRPO update test in distributed_update_test.py (run as a script).

    python tests/rl/_distributed_update_worker.py OUT.npz

The parent sets XLA_FLAGS (the local CPU device count) and, for a multi-process run, R1JAX_COORDINATOR,
R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID; without them this is the 1-process reference. Either way the
mesh is {"data": 2, "expert": 2} over the 4 global devices, each process feeds only the batch rows its
own devices hold, and two GRPO updates run. Process 0 writes the old log-probs, the final params and
router bias (gathered to host; keys "old_logp", "params/<path>", "router_bias/<path>"), the per-step
losses and the step count to OUT.npz.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from r1jax.model import ModelConfig, init_variables
from r1jax.rl import GRPOConfig, group_advantages, make_grpo_update, make_logprob_fn
from r1jax.sharding import batch_sharding, distributed, make_mesh
from r1jax.train import OptimConfig, create_train_state, make_optimizer

CFG = ModelConfig.preset("tiny")
RL = GRPOConfig(beta=0.04, router_bias_rate=0.01, epsilon_high=0.28)
TX = make_optimizer(OptimConfig(learning_rate=1e-2, warmup_steps=1, total_steps=10))
P, N, B, G = 6, 5, 2, 4          # prompt and completion lengths, prompts, group size: S = 8 sequences
STEPS = 2


def rollout() -> dict:
  """The whole rollout as numpy, identical in every process (seeded), without the log-probs."""
  rng = np.random.default_rng(0)
  s = B * G
  tokens = rng.integers(1, CFG.vocab_size, size=(s, P + N)).astype(np.int32)
  mask = np.ones((s, P + N), np.int32)
  mask[:4, :2] = 0                                   # left-padded prompts
  comp = np.ones((s, N), np.int32)
  comp[1, 3:] = 0                                    # finished early: post-EOS tokens are masked
  comp[5, 1:] = 0
  mask[:, P:] = comp
  tokens[mask == 0] = 0
  rewards = rng.integers(0, 2, size=s).astype(np.float32)
  rewards[:G] = [1, 0, 0, 1]
  return {"tokens": tokens, "attention_mask": mask, "completion_mask": comp,
          "ref_noise": 0.02 * rng.standard_normal((s, N)).astype(np.float32),
          "advantages": np.asarray(group_advantages(jnp.asarray(rewards), G))}


def local_rows(mesh, num_rows: int) -> np.ndarray:
  """The global batch rows held by this process's devices, in order (what its data loader would read)."""
  index_map = batch_sharding(mesh, 1).addressable_devices_indices_map((num_rows,))
  rows = sorted({r for (sl,) in index_map.values() for r in range(*sl.indices(num_rows))})
  assert rows == list(range(rows[0], rows[0] + len(rows))), rows   # a contiguous block per process
  return np.asarray(rows)


def main():
  out_path = sys.argv[1]
  distributed.initialize(timeout_s=120)   # a no-op for the 1-process reference
  assert jax.device_count() == 4, jax.devices()
  mesh = make_mesh({"data": 2, "expert": 2})

  full = rollout()
  rows = local_rows(mesh, B * G)
  assert len(rows) == B * G // jax.process_count()
  batch = distributed.host_local_batch_to_global({k: v[rows] for k, v in full.items()}, mesh)
  assert batch["tokens"].shape == (B * G, P + N)

  state = create_train_state(init_variables(CFG, jax.random.key(0), mesh=mesh), TX)
  # The old policy is the initial one (ratio 1 at the first update), computed by the sharded forward.
  logp_fn = make_logprob_fn(CFG, mesh=mesh)
  old_logp = logp_fn(state.variables(), batch["tokens"], batch["attention_mask"], N)
  batch["old_logp"] = old_logp
  batch["ref_logp"] = old_logp - 0.01 + batch.pop("ref_noise")
  update = make_grpo_update(CFG, RL, TX, mesh=mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics = update(state, batch)
    losses.append(float(np.asarray(metrics["loss"].addressable_data(0))))

  # The routed experts really are split: each local device holds E/2 of them.
  gate = state.params["layers_1"]["mlp"]["gate_proj"]
  assert gate.sharding.spec[0] == "expert", gate.sharding
  assert len(gate.addressable_shards) == jax.local_device_count()
  for shard in gate.addressable_shards:
    assert shard.data.shape[0] == CFG.n_routed_experts // 2, shard.data.shape

  host = multihost_utils.process_allgather(
      {"old_logp": old_logp, "params": state.params, "router_bias": state.router_bias}, tiled=True)
  if jax.process_index() == 0:
    flat = {"/".join(str(k.key) for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(host)[0]}
    np.savez(out_path, losses=np.asarray(losses), step=int(np.asarray(state.step.addressable_data(0))),
             **flat)
  print(f"DONE process {jax.process_index()} of {jax.process_count()} losses {losses}", flush=True)


if __name__ == "__main__":
  main()
