"""Run bookkeeping shared by every stage: JSONL metrics, a console progress line, preemption signals."""
from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from typing import Any, Mapping

import jax
import numpy as np


def _scalar(v: Any):
  try:
    f = float(np.asarray(v))
  except (TypeError, ValueError):
    return v
  return f if math.isfinite(f) else str(f)


class MetricsLogError(ValueError):
  """A metrics log line that is not JSON and is not a torn last line (the file was changed by hand)."""


def _parse_lines(path: str, lines: list[str]) -> list[tuple[str, dict]]:
  out = []
  for i, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      out.append((line, json.loads(line)))
    except json.JSONDecodeError as e:
      raise MetricsLogError(f"{path}:{i}: malformed JSON in the metrics log ({e.msg}); fix or delete the "
                            "line") from None
  return out


class MetricsWriter:
  """Appends {"step": s, ...} records to `path` (JSON lines) and, with `tensorboard=True`, to TensorBoard
  event files in the same directory. `truncate_after(step)` on resume drops JSONL records of steps that a
  killed run logged after its last checkpoint (all of them, step 0 aside, when it never checkpointed), so
  the log stays one trajectory. A line left half-written by a kill or a full disk (the file does not end in
  a newline) is dropped with a warning when the writer opens the log, before anything is appended to it.
  In a multi-process job only process 0 writes (and prints); the others return the same records."""

  def __init__(self, path: str, *, echo_every: int = 0, total_steps: int | None = None, name: str = "",
               tensorboard: bool = False):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    self.path, self.echo_every, self.total, self.name = path, echo_every, total_steps, name
    self.writes = jax.process_index() == 0
    self._tb = None
    if tensorboard and self.writes:
      from tensorboardX import SummaryWriter   # pure Python; no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(os.path.dirname(path) or ".", "tensorboard"), flush_secs=10)
    self._t0, self._s0 = time.time(), None   # rate counts from construction (compilation included)
    if self.writes:
      self._drop_torn_tail()

  def _drop_torn_tail(self) -> None:
    """Cuts the file after its last newline: every complete record is kept, a torn last line is not."""
    if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
      return
    with open(self.path, "rb") as f:
      f.seek(-1, os.SEEK_END)
      if f.read(1) == b"\n":                # the usual case: one byte read, however long the log
        return
      f.seek(0)
      data = f.read()
    keep, line = data.rfind(b"\n") + 1, data.count(b"\n") + 1
    print(f"warning: {self.path}:{line}: dropping a torn last line ({len(data) - keep} bytes; "
          "the run that wrote it was killed mid-write)", file=sys.stderr, flush=True)
    with open(self.path, "r+b") as f:
      f.truncate(keep)
      f.flush()
      os.fsync(f.fileno())

  def truncate_after(self, step: int | None) -> None:
    """Keeps the records of steps <= `step` (None: a run that never checkpointed, step 0 records only)."""
    if not self.writes or not os.path.exists(self.path):
      return
    step = 0 if step is None else step
    with open(self.path) as f:
      recs = _parse_lines(self.path, f.readlines())
    keep = [line if line.endswith("\n") else line + "\n" for line, rec in recs if rec.get("step", -1) <= step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(keep)
      f.flush()
      os.fsync(f.fileno())
    os.replace(self.path + ".tmp", self.path)

  def write(self, step: int, metrics: Mapping[str, Any], *, kind: str = "train") -> dict:
    rec = {"step": int(step), "kind": kind, **{k: _scalar(v) for k, v in metrics.items()}}
    if not self.writes:
      return rec
    with open(self.path, "a") as f:
      f.write(json.dumps(rec) + "\n")
    if self._tb is not None:
      for k, v in rec.items():
        if k != "step" and isinstance(v, float):
          self._tb.add_scalar(f"{kind}/{k}", v, int(step))
      self._tb.flush()
    if kind == "train" and self.echo_every and (step % self.echo_every == 0 or step == self.total):
      self._progress(step, rec)
    return rec

  def _progress(self, step: int, rec: Mapping[str, Any]) -> None:
    if self._s0 is None:
      self._s0 = step - 1
    rate = (step - self._s0) / (time.time() - self._t0)
    eta = (self.total - step) / rate if self.total and rate > 0 else float("nan")
    bar = ""
    if self.total:
      done = int(30 * step / self.total)
      bar = "[" + "#" * done + "." * (30 - done) + f"] {step}/{self.total}"
    keys = [k for k in ("loss", "reward", "accuracy", "format", "length", "kl") if k in rec]
    shown = " ".join(f"{k}={rec[k]:.4g}" for k in keys if isinstance(rec[k], float))
    print(f"{self.name} {bar} {rate:.2f} it/s eta {eta:.0f}s {shown}", file=sys.stderr, flush=True)

  def read(self, kind: str | None = None) -> list[dict]:
    if not os.path.exists(self.path):
      return []
    with open(self.path) as f:
      lines = f.readlines()
    if lines and not lines[-1].endswith("\n"):
      lines = lines[:-1]                     # torn by a kill mid-write (a writer drops it on open)
    recs = [rec for _, rec in _parse_lines(self.path, lines)]
    return [r for r in recs if kind is None or r.get("kind") == kind]


# The exit status of a stage stopped by SIGTERM/SIGINT after saving its checkpoint: EX_TEMPFAIL ("try
# again"), not 0, so `train && publish` does not publish an unfinished run, while a scheduler or a retry
# loop can tell a preemption (rerun the same command: it resumes) from a crash.
PREEMPTED_EXIT_CODE = 75


class Preempted(SystemExit):
  """Raised by a stage once its SIGTERM/SIGINT checkpoint is committed, so that no caller goes on with a
  half-trained model. It is a SystemExit with status PREEMPTED_EXIT_CODE (75): uncaught, the process ends
  without a traceback and with that status, and rerunning the same command resumes from the checkpoint."""

  def __init__(self, stage: str, step: int):
    super().__init__(PREEMPTED_EXIT_CODE)
    self.stage, self.step = stage, step

  def __str__(self) -> str:
    return f"{self.stage} stage preempted at step {self.step}: checkpoint saved; rerun the same command to resume"


class Preemption:
  """Catches SIGTERM/SIGINT while active: `requested` turns True and the loop saves and exits cleanly."""

  def __init__(self):
    self.requested = False
    self._old = {}

  def _handler(self, signum, frame):
    del frame
    self.requested = True
    print(f"signal {signum}: saving a checkpoint and stopping", file=sys.stderr, flush=True)

  def exit_if_requested(self, stage: str, step: int) -> None:
    """After the loop (and its final save): raises Preempted if a signal asked the stage to stop."""
    if self.requested:
      err = Preempted(stage, step)
      print(err, file=sys.stderr, flush=True)
      raise err

  @contextlib.contextmanager
  def active(self):
    import threading
    if threading.current_thread() is not threading.main_thread():
      yield self
      return
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._old[sig] = signal.signal(sig, self._handler)
    try:
      yield self
    finally:
      for sig, old in self._old.items():
        signal.signal(sig, old)


class WorkdirLocked(RuntimeError):
  """Another run holds the workdir."""


LOCK_FILE = ".r1jax.lock"


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds an exclusive lock on `workdir` for the block: a second run of a job in the same workdir fails at
  once (WorkdirLocked, naming the holder) instead of writing the same checkpoints and files. The lock is
  the kernel's (flock on WORKDIR/.r1jax.lock), so a run killed with SIGKILL leaves no stale lock. In a
  multi-process job process 0 holds it for the whole job."""
  import fcntl
  if jax.process_index() != 0:
    yield
    return
  created = not os.path.exists(workdir)
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILE)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "unknown"
      raise WorkdirLocked(f"{os.path.abspath(workdir)} is in use by another run ({holder}); two runs in one "
                          "workdir would overwrite each other's checkpoints: wait for it, stop it, or choose "
                          "another --workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename} since "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode(), 0)
    yield
  finally:
    # A run that made the workdir and wrote nothing (its config failed validation, say) leaves none behind.
    if created and os.listdir(workdir) == [LOCK_FILE]:
      os.unlink(path)
      os.rmdir(workdir)
    os.close(fd)                                       # releases the lock


@contextlib.contextmanager
def finish_saves(ckpt):
  """Waits for in-flight checkpoint saves and closes the manager when the block exits, however it exits."""
  try:
    yield
  finally:
    # Also on an exception (e.g. a NaN step): the last good checkpoint still in flight gets committed.
    ckpt.wait()
    ckpt.close()

