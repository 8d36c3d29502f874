"""One process of the multi-process standalone-jobs test (standalone_test.py), run as a script:

    python tests/stages/_jobs_worker.py ROOT

Joins the job from the R1JAX_* variables (none: a single process), writes the tiny inputs into ROOT and
runs every standalone job on the mesh {data: 2, expert: 4} into ROOT/run (see _jobs.jobs_on). Each
process appends the input shards it reads (r1jax.data.pipeline.ShardedBatches) to ROOT/shards-<process>.jsonl.
"""
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from r1jax.sharding import distributed  # noqa: E402


def main():
  distributed.initialize(timeout_s=120)
  import jax
  import _jobs  # noqa: E402  (after start-up: it builds nothing at import, but keep JAX untouched before)
  from r1jax.data.pipeline import ShardedBatches
  root = pathlib.Path(sys.argv[1])
  real_init = ShardedBatches.__init__

  def recording_init(self, make, shards, shard_count):
    real_init(self, make, shards, shard_count)
    with open(root / f"shards-{jax.process_index()}.jsonl", "a") as f:
      f.write(json.dumps({"shards": list(self.shards), "count": self.shard_count}) + "\n")
  ShardedBatches.__init__ = recording_init
  _jobs.jobs_on({"data": 2, "expert": 4}, _jobs.make_setup(root), root / "run")
  print("DONE", flush=True)


if __name__ == "__main__":
  main()
