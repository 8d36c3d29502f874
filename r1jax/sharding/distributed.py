"""Multi-host start-up (`jax.distributed`) and per-process input batches.

Call `initialize()` first thing in an experiment's `main`, before any JAX computation (even
`jax.devices()`): afterwards `jax.devices()` lists the devices of every process, a mesh spans all
hosts, and each process reads only the input shards its devices hold (`input_shards`, one shard per
batch slice of the mesh by default: `default_input_shards`) and assembles the global batch with
`global_batch` (or, for rows it loaded any other way, `host_local_batch_to_global`).

    from r1jax.sharding import distributed
    distributed.initialize()                       # no-op on a laptop; autodetected under srun / TPU
    mesh = make_mesh({"data": -1})
    batch = distributed.host_local_batch_to_global(next(it), mesh)

Where the settings come from, field by field (coordinator address, number of processes, process id,
local device ids), first match wins:
  1. the explicit arguments of `initialize`;
  2. environment variables: R1JAX_COORDINATOR (else JAX_COORDINATOR_ADDRESS) as "host:port",
     R1JAX_NUM_PROCESSES, R1JAX_PROCESS_ID, R1JAX_LOCAL_DEVICE_IDS (else JAX_LOCAL_DEVICE_IDS) as
     "0,1,...";
  3. SLURM, inside an `srun` step (SLURM_PROCID and SLURM_NTASKS set): the process count is
     SLURM_NTASKS, the id SLURM_PROCID, the coordinator the first host of SLURM_STEP_NODELIST (else
     SLURM_JOB_NODELIST) on port R1JAX_COORDINATOR_PORT / JAX_COORDINATOR_PORT, else a port derived
     from SLURM_JOB_ID as JAX does (so all tasks agree and concurrent jobs on a node differ). With
     several tasks per node each task gets the one device SLURM_LOCALID (one process per GPU).
If the number of processes is still unknown after that:
  4. on a Cloud TPU VM: `jax.distributed.initialize()` with whatever is known; JAX asks the TPU
     metadata server for the rest (the documented way to start a TPU pod slice);
  5. otherwise this is a single process and nothing is done.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import pickle
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from r1jax.sharding.mesh import batch_sharding

# Used when SLURM gives no job id to derive a port from (JAX picks from the same range).
_DEFAULT_PORT = 61440
# Environment variables that JAX's own Cloud TPU detection uses for multi-host GKE slices.
_TPU_HOSTS_VARS = ("TPU_PROCESS_ADDRESSES", "TPU_WORKER_HOSTNAMES")


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
  """How this process joins the job.

  Attributes:
    source: where the settings came from: "single" (one process, nothing to start), "explicit"
      (arguments / R1JAX_* variables), "slurm" or "tpu" (left to JAX's TPU detection).
    coordinator_address: "host:port" of process 0's coordinator; None for "single" (and for "tpu"
      until JAX fills it in).
    num_processes: number of processes (None for "tpu" until initialized).
    process_id: this process's index in [0, num_processes) (None for "tpu" until initialized).
    local_device_ids: the local devices this process may use; None means all.
  """
  source: str
  coordinator_address: str | None = None
  num_processes: int | None = 1
  process_id: int | None = 0
  local_device_ids: tuple[int, ...] | None = None


# ------------------------------------------------------------------------------------------------
# SLURM nodelists.
# ------------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[str]:
  """Splits on commas outside brackets: "a[1,2],b" -> ["a[1,2]", "b"]."""
  parts, depth, start = [], 0, 0
  for i, ch in enumerate(text):
    if ch == "[":
      depth += 1
    elif ch == "]":
      depth -= 1
      if depth < 0:
        raise ValueError(f"unbalanced ']' in SLURM nodelist {text!r}")
    elif ch == "," and depth == 0:
      parts.append(text[start:i])
      start = i + 1
  if depth:
    raise ValueError(f"unbalanced '[' in SLURM nodelist {text!r}")
  parts.append(text[start:])
  return [p for p in parts if p]


def _expand_range_list(ranges: str, nodelist: str) -> list[str]:
  """"01-03,07" -> ["01", "02", "03", "07"], keeping the zero padding of each range's start."""
  out = []
  for item in ranges.split(","):
    m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
    if not m:
      raise ValueError(f"bad range {item!r} in SLURM nodelist {nodelist!r}")
    lo, hi = m.group(1), m.group(2) or m.group(1)
    if int(hi) < int(lo):
      raise ValueError(f"descending range {item!r} in SLURM nodelist {nodelist!r}")
    out.extend(str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1))
  return out


def expand_slurm_nodelist(nodelist: str) -> list[str]:
  """Expands a SLURM hostlist expression without calling `scontrol show hostnames`.

  Args:
    nodelist: e.g. "node[01-04,07],gpu-a,rack[1-2]-n[3,5]".

  Returns:
    The host names in order, e.g. ["node01", "node02", "node03", "node04", "node07", "gpu-a",
    "rack1-n3", "rack1-n5", "rack2-n3", "rack2-n5"].
  """
  hosts = []
  for pattern in _split_top_level(nodelist.strip()):
    # Alternate literal text and bracket groups: "rack[1-2]-n[3,5]" -> "rack", "1-2", "-n", "3,5", "".
    pieces = re.split(r"\[([^\]]*)\]", pattern)
    choices = [[p] if i % 2 == 0 else _expand_range_list(p, nodelist) for i, p in enumerate(pieces)]
    hosts.extend("".join(parts) for parts in itertools.product(*choices))
  if not hosts:
    raise ValueError(f"empty SLURM nodelist {nodelist!r}")
  return hosts


def slurm_first_host(nodelist: str) -> str:
  """The first host of a SLURM nodelist ("node[01-04,07]" -> "node01"): SLURM's task 0 runs there."""
  first = _split_top_level(nodelist.strip())
  if not first:
    raise ValueError(f"empty SLURM nodelist {nodelist!r}")
  return expand_slurm_nodelist(first[0])[0]


# ------------------------------------------------------------------------------------------------
# Resolving the settings (pure: reads only the `env` mapping it is given).
# ------------------------------------------------------------------------------------------------


def _env_int(env: Mapping[str, str], name: str) -> int | None:
  value = env.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _env_ids(env: Mapping[str, str], *names: str) -> tuple[int, ...] | None:
  for name in names:
    value = env.get(name)
    if value:
      try:
        return tuple(int(v) for v in value.split(","))
      except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be comma-separated "
                         f"integers") from None
  return None


def _first(*values):
  return next((v for v in values if v is not None), None)


def _slurm_settings(env: Mapping[str, str]) -> dict[str, Any] | None:
  """Settings from an `srun` step's environment, or None outside one."""
  if "SLURM_PROCID" not in env or not ("SLURM_NTASKS" in env or "SLURM_STEP_NUM_TASKS" in env):
    return None
  num_tasks = _first(_env_int(env, "SLURM_NTASKS"), _env_int(env, "SLURM_STEP_NUM_TASKS"))
  settings = {"num_processes": num_tasks, "process_id": _env_int(env, "SLURM_PROCID"),
              "coordinator_address": None, "local_device_ids": None}
  nodelist = _first(env.get("SLURM_STEP_NODELIST"), env.get("SLURM_JOB_NODELIST"),
                    env.get("SLURM_NODELIST"))
  if nodelist:
    port = _first(_env_int(env, "R1JAX_COORDINATOR_PORT"), _env_int(env, "JAX_COORDINATOR_PORT"))
    if port is None:
      job_id = _env_int(env, "SLURM_JOB_ID")
      # As jax._src.clusters.slurm_cluster: a port in [61440, 65535] that every task computes alike.
      port = _DEFAULT_PORT if job_id is None else job_id % 2**12 + (65535 - 2**12 + 1)
    settings["coordinator_address"] = f"{slurm_first_host(nodelist)}:{port}"
  num_nodes = _first(_env_int(env, "SLURM_STEP_NUM_NODES"), _env_int(env, "SLURM_JOB_NUM_NODES"),
                     _env_int(env, "SLURM_NNODES"))
  tasks_per_node = _env_int(env, "SLURM_NTASKS_PER_NODE")
  several_per_node = (tasks_per_node or 0) > 1 or (num_nodes is not None and num_tasks is not None
                                                     and num_tasks > num_nodes)
  local_id = _env_int(env, "SLURM_LOCALID")
  # Several tasks on a node means one task per accelerator. With one task per node the task keeps
  # every local device (JAX's own SLURM detection would pin it to device SLURM_LOCALID=0).
  if several_per_node and local_id is not None:
    settings["local_device_ids"] = (local_id,)
  return settings


def _on_cloud_tpu(env: Mapping[str, str]) -> bool:
  """Whether this is a Cloud TPU VM (JAX's own check, made when jax is imported) or a GKE TPU pod."""
  if any(len(env.get(v, "").split(",")) > 1 for v in _TPU_HOSTS_VARS):
    return True
  try:
    from jax._src import cloud_tpu_init  # pylint: disable=g-import-not-at-top
  except ImportError:
    return False
  return bool(getattr(cloud_tpu_init, "running_in_cloud_tpu_vm", False))


def resolve_config(coordinator_address: str | None = None, num_processes: int | None = None,
                   process_id: int | None = None, local_device_ids: Sequence[int] | None = None,
                   *, env: Mapping[str, str] | None = None,
                   on_tpu: bool | None = None) -> DistributedConfig:
  """Works out how this process joins the job (see the module docstring for the precedence).

  Args:
    coordinator_address, num_processes, process_id, local_device_ids: explicit settings (None:
      look them up).
    env: the environment to read (default os.environ).
    on_tpu: whether this is a Cloud TPU VM (default: detected).

  Returns:
    The `DistributedConfig`; nothing is started.

  Raises:
    ValueError: a multi-process setting lacks the coordinator address or the process id, or an
      environment variable is malformed.
  """
  env = os.environ if env is None else env
  explicit = {
      "coordinator_address": _first(coordinator_address, env.get("R1JAX_COORDINATOR") or None,
                                    env.get("JAX_COORDINATOR_ADDRESS") or None),
      "num_processes": _first(num_processes, _env_int(env, "R1JAX_NUM_PROCESSES")),
      "process_id": _first(process_id, _env_int(env, "R1JAX_PROCESS_ID")),
      "local_device_ids": _first(None if local_device_ids is None else tuple(local_device_ids),
                                 _env_ids(env, "R1JAX_LOCAL_DEVICE_IDS", "JAX_LOCAL_DEVICE_IDS")),
  }
  source = "explicit"
  slurm = _slurm_settings(env)
  if slurm is not None:
    filled = {k: _first(v, slurm[k]) for k, v in explicit.items()}
    if filled != explicit:
      source = "slurm"
    explicit = filled
  settings = explicit

  if settings["num_processes"] is None:
    if on_tpu if on_tpu is not None else _on_cloud_tpu(env):
      return DistributedConfig("tpu", settings["coordinator_address"], None,
                               settings["process_id"], settings["local_device_ids"])
    return DistributedConfig("single", None, 1, 0, settings["local_device_ids"])
  if settings["num_processes"] < 1:
    raise ValueError(f"num_processes must be >= 1, got {settings['num_processes']}")
  if settings["num_processes"] == 1:
    return DistributedConfig("single", None, 1, 0, settings["local_device_ids"])

  missing = [f"{name} (argument or ${var})" for name, var in (
      ("coordinator_address", "R1JAX_COORDINATOR"), ("process_id", "R1JAX_PROCESS_ID"))
             if settings[name] is None]
  if missing:
    raise ValueError(f"{settings['num_processes']} processes but no {' and no '.join(missing)}")
  address = settings["coordinator_address"]
  if not re.fullmatch(r".+:\d+", address):
    raise ValueError(f"coordinator address must be 'host:port', got {address!r}")
  if not 0 <= settings["process_id"] < settings["num_processes"]:
    raise ValueError(f"process_id {settings['process_id']} is not in [0, "
                     f"{settings['num_processes']})")
  return DistributedConfig(source, address, settings["num_processes"], settings["process_id"],
                           settings["local_device_ids"])


# ------------------------------------------------------------------------------------------------
# Start-up and input batches.
# ------------------------------------------------------------------------------------------------


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, local_device_ids: Sequence[int] | None = None,
               timeout_s: int = 300) -> DistributedConfig:
  """Joins this process to a multi-process JAX job, or does nothing for a single process.

  Must run before any JAX computation. Calling it again after a successful start is a no-op.

  Args:
    coordinator_address: "host:port" of process 0 (which hosts the coordinator service).
    num_processes: number of processes in the job.
    process_id: this process's index.
    local_device_ids: local devices this process uses (default all, or SLURM_LOCALID under srun
      with several tasks per node).
    timeout_s: how long to wait for every process to connect.

  Returns:
    The `DistributedConfig` used (for "tpu", with the count and id JAX found).
  """
  cfg = resolve_config(coordinator_address, num_processes, process_id, local_device_ids)
  if cfg.source == "single":
    return cfg
  if jax.distributed.is_initialized():
    logging.info("jax.distributed is already initialized; not starting it again (%s)", cfg)
  elif cfg.source == "tpu":
    jax.distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id,
                               local_device_ids=cfg.local_device_ids,
                               initialization_timeout=timeout_s)
  else:
    # Everything is resolved here, so JAX's own detection must not override it (its SLURM
    # detection would pin one-task-per-node jobs to a single device).
    jax.distributed.initialize(cfg.coordinator_address, cfg.num_processes, cfg.process_id,
                               local_device_ids=cfg.local_device_ids,
                               cluster_detection_method="deactivate",
                               initialization_timeout=timeout_s)
  if cfg.source == "tpu":
    cfg = dataclasses.replace(cfg, num_processes=jax.process_count(),
                              process_id=jax.process_index())
  logging.info("jax.distributed: process %d of %d (%s)", cfg.process_id, cfg.num_processes,
               cfg.source)
  return cfg


def host_local_batch_to_global(batch: Any, mesh: jax.sharding.Mesh, rules="fsdp_tp") -> Any:
  """Assembles every process's local batch into global arrays sharded along the batch axes.

  Each process passes the rows it loaded itself (its Grain shard); the result is one global array
  per leaf whose leading dimension is split over the mesh's batch axes (`rules["batch"]`, by default
  data and fsdp). No data crosses hosts: each process's rows go to its own devices.

  Args:
    batch: a pytree (usually a dict) of numpy arrays shaped [b, ...], b the local batch size.
      Leaves that are not arrays (e.g. the example dicts and prompt strings of `prompt_batches`)
      stay as they are: per-process host values for the reward functions.
    mesh: the global mesh (spanning all processes).
    rules: the rules table (name or table) that maps the logical `batch` axis to mesh axes.

  Returns:
    The same tree with each array leaf replaced by a global `jax.Array` of shape
    [b * (number of processes along the batch axes), ...].
  """
  def to_global(x):
    if not isinstance(x, (np.ndarray, np.generic, jax.Array)):
      return x
    if x.ndim == 0:
      raise ValueError("host_local_batch_to_global: a 0-d leaf has no batch dimension to split")
    return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim, rules), np.asarray(x))

  return jax.tree.map(to_global, batch)


def _batch_axes_size(mesh: jax.sharding.Mesh, rules) -> int:
  axes = batch_sharding(mesh, 1, rules).spec[0] or ()
  axes = (axes,) if isinstance(axes, str) else axes
  return int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64))


def default_input_shards(mesh: jax.sharding.Mesh | None, rules="fsdp_tp") -> int:
  """One input shard per batch slice of the mesh (the product of the sizes of the axes the batch is split
  over, data x fsdp by default); 1 without a mesh. The data a job reads then depends on its mesh, never on
  how many processes run it."""
  return 1 if mesh is None else _batch_axes_size(mesh, rules)


def input_shards(mesh: jax.sharding.Mesh | None, rows: int, shard_count: int, rules="fsdp_tp") -> list[int]:
  """The input shards this process reads: of `shard_count` shards, each `rows // shard_count` consecutive
  rows of a global batch of `rows`, those whose rows this process's devices hold (every shard in a
  single process, or where the batch is not split across processes).

  Raises:
    ValueError: `rows` is not a multiple of `shard_count`.
  """
  if shard_count < 1 or rows % shard_count:
    raise ValueError(f"a batch of {rows} rows does not split into {shard_count} input shards: the batch size "
                     "must be a multiple of input_shards")
  if mesh is None or jax.process_count() == 1:
    return list(range(shard_count))
  b = rows // shard_count
  need = set()
  for index in batch_sharding(mesh, 1, rules).addressable_devices_indices_map((rows,)).values():
    start, stop, _ = index[0].indices(rows)
    need.update(range(start // b, -(-stop // b)))
  return sorted(need)


def global_batch(blocks: Mapping[int, Mapping[str, Any]], shard_count: int, mesh: jax.sharding.Mesh | None,
                 rules="fsdp_tp") -> dict[str, jax.Array]:
  """The global batch from this process's input shards (`r1jax.data.pipeline.ShardedBatches`).

  Args:
    blocks: {shard index: that shard's batch}, a dict of arrays of `b` rows each; shard s holds rows
      [s*b, (s+1)*b) of the global batch. Leaves that are not numeric arrays are dropped.
    shard_count: S, so the global batch has S*b rows.
    mesh: the mesh (None: one device).
    rules: the rules table whose `batch` axes split the rows.

  Returns:
    {key: jax.Array[S*b, ...]}, split along the batch axes under a mesh. Each process supplies only the rows
    of its own devices (from its own shards), so no input data crosses processes.
  """
  if not blocks:
    raise ValueError("global_batch: this process read no input shard")
  first = blocks[min(blocks)]
  keys = [k for k, v in first.items() if isinstance(v, np.ndarray) and v.dtype != object]
  b = len(first[keys[0]]) if keys else 0
  out = {}
  for k in keys:
    if len(blocks) == shard_count:
      full = np.concatenate([np.asarray(blocks[s][k]) for s in range(shard_count)])
      out[k] = jax.device_put(full, batch_sharding(mesh, full.ndim, rules)) if mesh is not None \
          else jax.numpy.asarray(full)
      continue
    shape = (shard_count * b,) + tuple(first[k].shape[1:])

    def rows(index, k=k):
      start, stop, _ = index[0].indices(shape[0])
      parts = []
      for s in range(start // b, -(-stop // b)):
        lo, hi = max(start, s * b) - s * b, min(stop, (s + 1) * b) - s * b
        parts.append(np.asarray(blocks[s][k])[lo:hi])
      return np.concatenate(parts)[(slice(None),) + tuple(index[1:])]

    out[k] = jax.make_array_from_callback(shape, batch_sharding(mesh, len(shape), rules), rows)
  return out


# ------------------------------------------------------------------------------------------------
# Host values and files in a multi-process job.
# ------------------------------------------------------------------------------------------------


def is_writer() -> bool:
  """Whether this process writes the job's files (reports, metrics, tokenizer): process 0 only."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process reaches the barrier `name` (nothing to wait for in a single process)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def allgather_objects(value: Any) -> list:
  """`value` from every process, in process order (every process must call this). For small host values
  (a batch's prompts and example dicts); pickled, so only between the processes of one job."""
  if jax.process_count() == 1:
    return [value]
  data = np.frombuffer(pickle.dumps(value), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(np.array([data.size], np.int32))).reshape(-1)
  buf = np.zeros(int(sizes.max()), np.uint8)
  buf[:data.size] = data
  every = np.asarray(multihost_utils.process_allgather(buf))
  return [pickle.loads(every[i, :sizes[i]].tobytes()) for i in range(len(sizes))]


def to_host(x) -> np.ndarray:
  """The whole value of `x` as numpy on this host, also when it spans other processes' devices
  (gathered from them: every process must call this for the same array)."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)
