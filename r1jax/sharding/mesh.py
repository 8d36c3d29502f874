"""Device meshes with the four r1jax axes (data, fsdp, expert, tensor)."""
from __future__ import annotations

import contextlib
import math
from typing import Mapping, Sequence

import flax.linen as nn
import jax
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from r1jax.sharding.rules import MESH_AXES, get_rules


def make_mesh(shape: Mapping[str, int] | Sequence[int] | None = None, *, devices=None) -> jax.sharding.Mesh:
  """Builds a mesh over axes ("data", "fsdp", "expert", "tensor").

  Args:
    shape: sizes per axis, as a dict (missing axes are 1) or a 4-tuple in MESH_AXES order. One size may
      be -1: it absorbs the remaining devices. None puts every device on `data`.
    devices: devices to use (default: all of jax.devices()).

  Returns:
    A Mesh whose axes are of type Auto: linen's logical constraints act as GSPMD hints there (with the
    default Explicit axes, linen's init fails).
  """
  devices = list(jax.devices() if devices is None else devices)
  if shape is None:
    shape = {"data": -1}
  if isinstance(shape, Mapping):
    unknown = set(shape) - set(MESH_AXES)
    if unknown:
      raise ValueError(f"mesh shape has unknown axes {sorted(unknown)}; axes are {MESH_AXES}")
    sizes = [int(shape.get(a, 1)) for a in MESH_AXES]
  else:
    sizes = [int(s) for s in shape]
    if len(sizes) != len(MESH_AXES):
      raise ValueError(f"mesh shape {tuple(shape)} must have {len(MESH_AXES)} entries {MESH_AXES}")
  if sizes.count(-1) > 1:
    raise ValueError(f"mesh shape {sizes}: at most one axis may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"mesh shape {sizes}: {len(devices)} devices are not divisible by {known}")
    sizes[sizes.index(-1)] = len(devices) // known
  if math.prod(sizes) != len(devices):
    raise ValueError(f"mesh shape {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
                     f"have {len(devices)}")
  return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


@contextlib.contextmanager
def mesh_rules(mesh: jax.sharding.Mesh | None, rules="fsdp_tp"):
  """Context in which the model's logical constraints bind to `mesh` with `rules`.

  With mesh=None this is a no-op, so the same code runs unsharded on one device.
  """
  if mesh is None:
    yield
    return
  table = get_rules(rules) if isinstance(rules, str) else rules
  with jax.set_mesh(mesh), nn.logical_axis_rules(table):
    yield


def logical_to_sharding(logical_specs, mesh: jax.sharding.Mesh, rules="fsdp_tp"):
  """Maps a pytree of logical PartitionSpecs to NamedShardings on `mesh`."""
  table = get_rules(rules) if isinstance(rules, str) else rules
  return nn.logical_to_mesh_sharding(logical_specs, mesh, table)


def batch_sharding(mesh: jax.sharding.Mesh, ndim: int = 2, rules="fsdp_tp") -> NamedSharding:
  """Sharding of a [batch, ...] array: batch over the data axes, the rest replicated."""
  table = dict(get_rules(rules) if isinstance(rules, str) else rules)
  return NamedSharding(mesh, P(table["batch"], *([None] * (ndim - 1))))


def mesh_fields() -> dict:
  """A config's `mesh` section: the size of each axis; all 1 (the default) is one device, no mesh."""
  return {a: 1 for a in MESH_AXES}


def mesh_from_config(section) -> jax.sharding.Mesh | None:
  """The mesh a config's `mesh` section asks for ({data, fsdp, expert, tensor}: sizes, one may be -1 for
  the remaining devices), or None when every size is 1 (one device, no mesh: the plain single-device path).
  A section that cannot be built over jax.devices() fails naming the sizes and the device count."""
  section = section.to_dict() if hasattr(section, "to_dict") else section
  sizes = dict(section or {})
  unknown = set(sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"config.mesh: unknown axes {sorted(unknown)}; axes are {MESH_AXES}")
  for a, s in sizes.items():
    if not isinstance(s, int) or isinstance(s, bool) or (s < 1 and s != -1):
      raise ValueError(f"config.mesh.{a}={s!r}: must be a positive integer or -1 (the remaining devices)")
  if all(s == 1 for s in sizes.values()):
    return None
  try:
    return make_mesh(sizes)
  except ValueError as e:
    raise ValueError(f"config.mesh: {e}") from e
