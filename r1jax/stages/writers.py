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


class MetricsWriter:
  """Appends {"step": s, ...} records to `path` (JSON lines) and, with `tensorboard=True`, to TensorBoard
  event files in the same directory. `truncate_after(step)` on resume drops JSONL records of steps that a
  killed run logged after its last checkpoint, so the log stays one trajectory. In a multi-process job only
  process 0 writes (and prints); the others return the same records."""

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

  def truncate_after(self, step: int) -> None:
    if not self.writes or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      keep = [line for line in f if line.strip() and json.loads(line).get("step", -1) <= step]
    with open(self.path + ".tmp", "w") as f:
      f.writelines(keep)
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
      recs = [json.loads(line) for line in f if line.strip()]
    return [r for r in recs if kind is None or r.get("kind") == kind]


class Preempted(SystemExit):
  """Raised by a stage once its SIGTERM/SIGINT checkpoint is committed, so that no caller goes on with a
  half-trained model. It is a SystemExit with status 0: uncaught, the process ends cleanly, and rerunning
  the same command resumes from that checkpoint."""

  def __init__(self, stage: str, step: int):
    super().__init__(0)
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


@contextlib.contextmanager
def finish_saves(ckpt):
  """Waits for in-flight checkpoint saves and closes the manager when the block exits, however it exits."""
  try:
    yield
  finally:
    # Also on an exception (e.g. a NaN step): the last good checkpoint still in flight gets committed.
    ckpt.wait()
    ckpt.close()

