"""Orbax checkpoints of a training state pytree, the Grain iterator state and JSON metadata.

One checkpoint step is one directory `<directory>/<step>/` with three Orbax items:

    state/      the state pytree (params, optimizer state, router bias, step, RNG keys, ...), written
                by `ocp.args.StandardSave`: every array is stored with its sharding, and each process
                writes only the shards it owns.
    data/       the Grain iterator state, one `process_<i>-of-<n>.json` per process (each process
                reads its own shard of the data, so each has its own position).
    metadata/   a small JSON dict (config, metrics, ...).

This module knows no model classes: the state is any pytree of arrays and Python scalars.

    ckpt = CheckpointManager(workdir / "ckpt", max_to_keep=3)
    step = ckpt.latest_step()                                               # None: a fresh start
    if step is not None:
      state, metadata = ckpt.restore(step, target=abstract_state, data_iter=it)
    for step in range(...):
      ...
      ckpt.save(step, state, data_iter=it, metadata={"loss": loss})        # async
    ckpt.close()                                                            # waits for the last save

Guarantees (all from Orbax, checked by tests/checkpoint/checkpoint_test.py):
  - Atomic: a step is written to `<step>.orbax-checkpoint-tmp*` and renamed to `<step>` only once
    every item of every process is on disk. A process killed mid-save leaves a tmp directory that is
    never listed as a step; it is deleted the next time a manager opens the directory.
  - Async: `save` returns once the arrays are copied to host memory, so the caller may donate or
    overwrite them at once; the write to disk continues in a background thread.
  - Keep N: after each committed save only the newest `max_to_keep` steps are kept.

Typed PRNG keys (`jax.random.key`) are saved as they are: orbax-checkpoint >= 0.12 stores the key
data together with the key implementation and restores a typed key again (also sharded key arrays,
and impls other than threefry). No `key_data` / `wrap_key_data` round trip is needed; the test
`test_roundtrip_full_training_state` guards this should a future Orbax drop the support.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Mapping

import grain
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any

# Orbax item names of one checkpoint step.
_STATE, _DATA, _METADATA = "state", "data", "metadata"


def _json_default(x):
  """Lets metadata hold numpy / jax scalars and small arrays (metrics usually are)."""
  if isinstance(x, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(x).tolist()
  raise TypeError(f"checkpoint metadata must be JSON-serializable; got {type(x).__name__}: {x!r}")


@jax.jit
def _all_finite(leaves):
  return [jnp.all(jnp.isfinite(x)) for x in leaves]


def nonfinite_leaves(tree: PyTree) -> list[str]:
  """Key paths of the floating-point leaves of `tree` that hold a NaN or an infinity (one compiled pass)."""
  pairs = [(jax.tree_util.keystr(path), x) for path, x in jax.tree_util.tree_leaves_with_path(tree)
           if hasattr(x, "dtype") and hasattr(x, "shape") and jnp.issubdtype(x.dtype, jnp.inexact)]
  if not pairs:
    return []
  flags = jax.device_get(_all_finite([x for _, x in pairs]))
  return [name for (name, _), ok in zip(pairs, flags) if not bool(ok)]


def check_finite(tree: PyTree, what: str) -> None:
  """Raises FloatingPointError naming the non-finite leaves, so that no NaN is ever saved."""
  bad = nonfinite_leaves(tree)
  if bad:
    raise FloatingPointError(f"{what}: {len(bad)} array(s) hold NaN or inf, e.g. {bad[:5]}; not saved "
                             "(the last good checkpoint stays the newest)")


def _as_restore_target(x):
  """Concrete arrays stand for their own shape, dtype and sharding; everything else passes as is."""
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x


class CheckpointManager:
  """Saves and restores numbered checkpoint steps in one directory (a thin `ocp.CheckpointManager`).

  Every process of a multi-host job must create the manager and call `save` / `restore` with the
  same steps: Orbax coordinates the processes (only the primary renames the tmp directory).
  """

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3,
               save_interval_steps: int = 1, async_save: bool = True):
    """Opens (and creates) a checkpoint directory.

    Args:
      directory: the checkpoint root, local or any path `etils.epath` understands (gs://...).
      max_to_keep: keep only the newest N committed steps; None keeps all.
      save_interval_steps: `save(step)` writes only when step % interval == 0 (and always for the
        first save of the manager, and with force=True).
      async_save: write in a background thread (`save` returns after the device->host copy).
    """
    self._directory = os.fspath(directory)
    if "://" not in self._directory:   # Orbax/TensorStore need absolute local paths
      self._directory = os.path.abspath(self._directory)
    options = ocp.CheckpointManagerOptions(
        save_interval_steps=save_interval_steps,
        # `max_to_keep` is deprecated in favour of a preservation policy in orbax 0.12.
        preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
        enable_async_checkpointing=async_save,
        # Remove what a killed save left behind. Tmp directories are never listed as steps in any
        # case; this only reclaims their disk space.
        cleanup_tmp_directories=True,
        create=True,
    )
    self._manager = ocp.CheckpointManager(self._directory, options=options)

  @property
  def directory(self) -> str:
    return self._directory

  def all_steps(self) -> list[int]:
    """Steps in the directory, ascending. Includes a save still in flight in this process."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    """The newest step (see `all_steps`), or None if there is none."""
    return self._manager.latest_step()

  def reload(self) -> None:
    """Re-reads the step list from disk, e.g. in an evaluator that watches a trainer's directory."""
    self._manager.reload()

  def save(self, step: int, state: PyTree, *, data_iter: Any = None,
           metadata: Mapping[str, Any] | None = None, force: bool = False) -> bool:
    """Starts saving `state` (and the data position and metadata) as checkpoint `step`.

    Every floating-point array is checked finite first: a state holding NaN or inf raises
    FloatingPointError and nothing is written.

    The iterator state and the metadata are captured before this returns, so the caller may advance
    the iterator and mutate `metadata` right away.

    Args:
      step: the step number (the directory name); must not exist yet.
      state: any pytree of jax/numpy arrays, Python scalars and typed PRNG keys.
      data_iter: a Grain `DatasetIterator` / `DataLoaderIterator` whose position to save.
      metadata: a JSON-serializable dict (numpy / jax scalars are converted).
      force: save even if `step` is not a multiple of `save_interval_steps`.

    Returns:
      True if a save was started, False if `save_interval_steps` skipped this step.
    """
    if not self._manager.should_save(step) and not force:
      return False
    check_finite(state, f"checkpoint step {step} in {self._directory}")
    # Serialize now: validates early (not in the background thread) and snapshots the values.
    metadata_json = json.loads(json.dumps(dict(metadata or {}), default=_json_default))
    items = {_STATE: ocp.args.StandardSave(state), _METADATA: ocp.args.JsonSave(metadata_json)}
    if data_iter is not None:
      # Grain's handler calls get_state() synchronously inside save(), before it returns.
      items[_DATA] = grain.checkpoint.CheckpointSave(data_iter)
    return self._manager.save(step, args=ocp.args.Composite(**items), force=force)

  def restore(self, step: int | None = None, *, target: PyTree = None,
              data_iter: Any = None) -> tuple[PyTree, dict]:
    """Restores checkpoint `step` (default: the latest).

    Args:
      step: the step to restore; None for the latest one.
      target: the pytree to restore into, with leaves that are arrays or `jax.ShapeDtypeStruct`s:
        each saved array is read into the target's dtype and sharding (shapes must match), so a
        checkpoint saved on one mesh can be restored onto another mesh shape or device count.
        A target also gives back the saved container types (e.g. optax NamedTuples). None restores
        plain dicts/lists with the saved shardings, which needs the same device topology.
      data_iter: a Grain iterator built like the saved one; its position is restored in place.

    Returns:
      (state, metadata): the state pytree and the JSON metadata dict ({} if none was given).

    Raises:
      FileNotFoundError: there is no such step; the message names the directory and the steps.
      ValueError: `data_iter` was given but the checkpoint holds no iterator state.
    """
    # Restoring while this process still writes a step would race with the commit.
    self._manager.wait_until_finished()
    steps = self.all_steps()
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint to restore in {self._directory}: it holds no "
                                f"committed step")
    elif step not in steps:
      raise FileNotFoundError(f"no checkpoint for step {step} in {self._directory}; available "
                              f"steps: {steps}")
    if target is None:
      state_args = ocp.args.StandardRestore()
    else:
      state_args = ocp.args.StandardRestore(jax.tree.map(_as_restore_target, target))
    items = {_STATE: state_args, _METADATA: ocp.args.JsonRestore()}
    if data_iter is not None:
      items[_DATA] = grain.checkpoint.CheckpointRestore(data_iter)
    try:
      restored = self._manager.restore(step, args=ocp.args.Composite(**items))
    except KeyError as e:
      if data_iter is not None and _DATA in str(e):
        raise ValueError(f"checkpoint step {step} in {self._directory} holds no data-iterator "
                         f"state (it was saved without data_iter)") from e
      raise
    return restored[_STATE], dict(restored[_METADATA] or {})

  def read_metadata(self, step: int) -> dict:
    """The JSON metadata of checkpoint `step` alone (no array is read)."""
    self._manager.wait_until_finished()
    restored = self._manager.restore(step, args=ocp.args.Composite(**{_METADATA: ocp.args.JsonRestore()}))
    return dict(restored[_METADATA] or {})

  def restore_latest(self, *, target: PyTree = None, data_iter_for: Callable[[int], Any] | None = None
                     ) -> tuple[int, PyTree, dict] | None:
    """Restores the newest step that can be read; None when the directory holds no step.

    A committed step can still be damaged afterwards (a disk that filled up or failed, files removed by
    hand). When the newest step cannot be restored and an older one can, the older one is restored and
    each unreadable newer step is moved aside to `<step>.unreadable-<unix time>` (kept for inspection,
    never listed as a step, so the resumed run can save that step number again), with a warning. When no
    step restores, nothing is moved and the newest step's error is raised: a target that fits none of
    them (another model config, say) is a caller's error, not damage.

    Args:
      target: as in `restore`.
      data_iter_for: step -> the Grain iterator to restore in place for that step (or None).

    Returns:
      (step, state, metadata) of the step restored, or None.
    """
    self._manager.wait_until_finished()
    steps = sorted(self.all_steps(), reverse=True)
    failed: list[tuple[int, BaseException]] = []
    for step in steps:
      try:
        state, metadata = self.restore(step, target=target,
                                       data_iter=data_iter_for(step) if data_iter_for else None)
      except Exception as e:        # what a damaged step raises varies: KeyError, ValueError, OSError, ...
        failed.append((step, e))
        continue
      if failed:
        self._move_aside([s for s, _ in failed], restored=step, errors=[e for _, e in failed])
      return step, state, metadata
    if failed:
      raise failed[0][1]
    return None

  def _move_aside(self, steps: list[int], *, restored: int, errors: list[BaseException]) -> None:
    stamp = int(time.time())
    if jax.process_index() == 0:
      for step, err in zip(steps, errors):
        src = os.path.join(self._directory, str(step))
        dst = f"{src}.unreadable-{stamp}"
        os.replace(src, dst)
        print(f"warning: checkpoint step {step} in {self._directory} cannot be restored "
              f"({type(err).__name__}: {str(err)[:300]}); moved it to {dst} and resumed from step {restored}",
              file=sys.stderr, flush=True)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(f"checkpoint move aside {self._directory}")
    self._manager.reload()

  def wait(self) -> None:
    """Blocks until every save started so far is committed (and old steps are pruned)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for outstanding saves and releases Orbax's threads."""
    self._manager.close()

  def __enter__(self) -> "CheckpointManager":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
