"""One process of the 2-process jax.distributed test in distributed_test.py (run as a script).

The parent sets XLA_FLAGS (2 CPU devices), R1JAX_COORDINATOR, R1JAX_NUM_PROCESSES and
R1JAX_PROCESS_ID, so `initialize()` is autodetected from the environment; argv[1] is a checkpoint
directory both processes share. Prints one line "RESULT <json>" for the parent to check.
"""
import json
import sys

import jax
import jax.numpy as jnp
import grain
import numpy as np

from r1jax.checkpoint import CheckpointManager
from r1jax.sharding import distributed
from r1jax.sharding.mesh import make_mesh


def main():
  # Importing jax is fine; computing anything (even jax.devices()) must wait until this returns.
  cfg = distributed.initialize(timeout_s=60)
  pid = jax.process_index()
  result = {"source": cfg.source, "process_id": pid, "num_processes": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count()}
  sum_fn = jax.jit(jnp.sum)
  for name, shape in (("data4", {"data": 4}), ("data2_expert2", {"data": 2, "expert": 2})):
    mesh = make_mesh(shape)
    # Process p loads 2 rows of its own: 100*p + [[0, 1, 2], [3, 4, 5]].
    local = 100 * pid + np.arange(6, dtype=np.float32).reshape(2, 3)
    batch = distributed.host_local_batch_to_global({"x": local, "note": f"p{pid}"}, mesh)
    result[name] = {"shape": list(batch["x"].shape), "sum": float(sum_fn(batch["x"])),
                    "note": batch["note"]}

  # Multi-host checkpoint: one global array (each process writes its shards) and one data position
  # per process (each process reads its own shard of the data, so positions differ).
  it = iter(grain.MapDataset.range(10).to_iter_dataset())
  for _ in range(1 + pid):
    next(it)
  ckpt = CheckpointManager(sys.argv[1])
  ckpt.save(1, {"x": batch["x"]}, data_iter=it)
  ckpt.wait()
  fresh = iter(grain.MapDataset.range(10).to_iter_dataset())
  restored, _ = ckpt.restore(target={"x": batch["x"]}, data_iter=fresh)
  ckpt.close()
  result["ckpt"] = {"sum": float(sum_fn(restored["x"])), "next": next(fresh)}
  print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
