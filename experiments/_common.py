"""What every experiment script does first: join the multi-process JAX job, if there is one.

The settings come from the flags --coordinator_address, --num_processes and --process_id, else from the
environment (R1JAX_COORDINATOR / R1JAX_NUM_PROCESSES / R1JAX_PROCESS_ID, as `python -m
r1jax.sharding.launch` sets them; SLURM inside `srun`; the Cloud TPU metadata), else this is a single
process: see r1jax.sharding.distributed.
"""
from __future__ import annotations

from absl import flags

from r1jax.sharding import distributed


def define_distributed_flags() -> None:
  """Defined only when an experiment runs as a script, so that importing it defines no flags."""
  flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process jobs; default: "
                      "$R1JAX_COORDINATOR, SLURM or Cloud TPU detection).")
  flags.DEFINE_integer("num_processes", None, "Processes in the job (default: from the environment; 1).")
  flags.DEFINE_integer("process_id", None, "This process's index (default: from the environment).")


def initialize() -> distributed.DistributedConfig:
  """jax.distributed from the flags or the environment; nothing for a single process. Call it first."""
  f = flags.FLAGS
  return distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
