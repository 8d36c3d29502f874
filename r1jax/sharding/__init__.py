"""Sharding: device meshes, logical-axis rules tables, multi-host start-up."""
from r1jax.sharding.mesh import (batch_sharding, logical_to_sharding, make_mesh, mesh_fields, mesh_from_config,
                                  mesh_rules)
from r1jax.sharding.rules import FSDP_TP, MESH_AXES, RULES, get_rules
from r1jax.sharding import distributed
from r1jax.sharding.distributed import DistributedConfig, host_local_batch_to_global, initialize
