"""One process of the multi-process GRPO update test in distributed_update_test.py (run as a script).

    python tests/rl/_distributed_update_worker.py OUT.npz

The parent sets XLA_FLAGS (the local CPU device count) and, for a multi-process run, R1JAX_COORDINATOR,
R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID; without them this is the 1-process reference. Either way the
mesh is {"data": 2, "expert": 2} over the 4 global devices, each process feeds only the batch rows its
own devices hold, and two GRPO updates run. Process 0 writes the final params (gathered to host, keys
"params/<path>") and the per-step losses to OUT.npz.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from r1jax.model import ModelConfig, init_params, sequence_logprobs
from r1jax.rl import GRPOConfig, group_advantages, make_grpo_update
from r1jax.sharding import batch_sharding, distributed, make_mesh
from r1jax.train import OptimConfig, create_train_state, make_optimizer

CFG = ModelConfig.preset("tiny")
RL = GRPOConfig(beta=0.04, router_bias_rate=0.01, epsilon_high=0.28)
TX = make_optimizer(OptimConfig(learning_rate=1e-2, warmup_steps=1, total_steps=10))
P, N, B, G = 6, 5, 2, 4          # prompt and completion lengths, prompts, group size: S = 8 sequences
STEPS = 2


def global_batch() -> dict:
  """The whole rollout as numpy, identical in every process (seeded); old_logp from the initial policy.

  The log-probs come from an unsharded forward on this process's first device, which is the same
  program with the same inputs in every run, so the multi-process and 1-process batches agree bitwise.
  """
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
  variables = init_params(CFG, jax.random.key(0))
  logp_fn = jax.jit(lambda v, t, m: sequence_logprobs(CFG, v, t, m, N)[0])
  logp = logp_fn(variables, jnp.asarray(tokens), jnp.asarray(mask))
  logp = np.asarray(logp)
  return {"tokens": tokens, "attention_mask": mask, "completion_mask": comp, "old_logp": logp,
          "ref_logp": logp - 0.01 + 0.02 * rng.standard_normal(logp.shape).astype(np.float32),
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

  full = global_batch()
  rows = local_rows(mesh, B * G)
  assert len(rows) == B * G // jax.process_count()
  batch = distributed.host_local_batch_to_global({k: v[rows] for k, v in full.items()}, mesh)
  assert batch["tokens"].shape == (B * G, P + N)

  state = create_train_state(init_params(CFG, jax.random.key(0), mesh=mesh), TX)
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

  host = multihost_utils.process_allgather((state.params, state.router_bias), tiled=True)
  if jax.process_index() == 0:
    flat = {"params/" + jax.tree_util.keystr(path): np.asarray(x)
            for path, x in jax.tree_util.tree_flatten_with_path(host)[0]}
    np.savez(out_path, losses=np.asarray(losses), step=int(np.asarray(state.step.addressable_data(0))),
             **flat)
  print(f"DONE process {jax.process_index()} of {jax.process_count()} losses {losses}", flush=True)


if __name__ == "__main__":
  main()
