"""A small pool of math-verify worker processes with a hard deadline per call.

math-verify bounds its own time with `signal.alarm`, which works only in the main thread, and some
inputs (e.g. `10^{10^{10}}`) spend their time inside one C call that no signal interrupts. Rewards
are called from trainer threads, so the bound here is a process boundary: each check runs in a
worker process; a worker that misses the deadline is killed and replaced, and the check counts as
not equivalent.

Design choices, and why:
  * Workers are plain `subprocess.Popen([python, "-c", worker_source])`, talking JSON lines over
    pipes. Unlike multiprocessing's spawn/forkserver they never re-import the parent's `__main__`
    (a script without a main guard would run again), and unlike fork they are safe in a parent
    that already runs JAX threads.
  * The pool is lazy: nothing starts until the first check that the caller's fast path (string or
    number equality) could not decide. Then two workers start (one spare), more as concurrency
    demands, up to `num_workers`; a killed worker is replaced at once, so its replacement warms up
    while others serve.
  * A caller holds a worker exclusively from send to reply, so the deadline measures only its own
    check, never queueing behind others; a kill never hurts another caller's check.
  * Start-up (python + sympy import, ~1 s) has its own generous limit; it is not charged to the
    per-call deadline, so a cold pool never turns into a timeout loop.
  * After `os.fork()` the child forgets the parent's workers (they are the parent's to use).
  * Workers die with the process that started them, even when it is killed with SIGKILL mid-check
    (Linux's parent-death signal, plus a watchdog thread in the worker).
  * A worker that fails to start (math-verify missing, a broken install, no memory) makes the pool
    unavailable for `RETRY_UNAVAILABLE_S` (checks are False meanwhile, with a warning), then it tries
    again: one bad start never disables LaTeX grading for the rest of a run.
  * POSIX only (`select` on pipes).
"""
from __future__ import annotations

import atexit
import concurrent.futures
import json
import logging
import os
import pathlib
import select
import subprocess
import sys
import tempfile
import threading
import time

_WORKER_SOURCE = (pathlib.Path(__file__).with_name("_math_verify_worker.py")).read_text()
_MAX_REPLY_BYTES = 1 << 16

DEFAULT_TIMEOUT_S = 2.0  # Measured: the slowest of 2,500 MATH-500 checks took < 0.3 s.
DEFAULT_STARTUP_TIMEOUT_S = 60.0
DEFAULT_NUM_WORKERS = max(1, min(4, os.cpu_count() or 1))
RETRY_UNAVAILABLE_S = 60.0

_log = logging.getLogger(__name__)


_SPAWNER: tuple[int, concurrent.futures.ThreadPoolExecutor] | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> concurrent.futures.ThreadPoolExecutor:
  """The process's one worker-starting thread (a new one after os.fork: threads do not survive it)."""
  global _SPAWNER
  with _SPAWNER_LOCK:
    if _SPAWNER is None or _SPAWNER[0] != os.getpid():
      _SPAWNER = (os.getpid(), concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="r1jax-math-verify"))
    return _SPAWNER[1]


class _Worker:
  """One worker process and the read buffer of its stdout."""

  def __init__(self):
    # -P (3.11+) keeps the working directory off sys.path: a stray math.py there must not
    # shadow the standard library; the neutral cwd covers 3.10.
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    args = ([sys.executable, *flags, "-c", _WORKER_SOURCE],)
    kw = dict(stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
              cwd=tempfile.gettempdir(), close_fds=True, start_new_session=True,
              env={**os.environ, "R1JAX_PARENT_PID": str(os.getpid())})
    # Linux sends the parent-death signal when the *thread* that started a child exits, so workers are
    # started from one thread that lives as long as the process, never from a caller's short-lived one.
    self.proc = _spawner().submit(subprocess.Popen, *args, **kw).result()
    self.ready = False
    self._buf = b""

  def wait_ready(self, timeout_s: float) -> dict | None:
    """Consumes the start-up message; None if it did not come in time."""
    if self.ready:
      return {"ready": True}
    reply = self.recv(time.monotonic() + timeout_s)
    self.ready = bool(reply and reply.get("ready"))
    return reply

  def send(self, obj: dict) -> None:
    self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
    self.proc.stdin.flush()

  def recv(self, deadline: float) -> dict | None:
    """The next JSON reply, or None on deadline, EOF or garbage."""
    fd = self.proc.stdout.fileno()
    while b"\n" not in self._buf:
      # A deadline already past still polls once: wait_ready(0) asks "has it started yet?".
      remaining = max(0.0, deadline - time.monotonic())
      readable, _, _ = select.select([fd], [], [], remaining)
      if not readable:
        return None
      chunk = os.read(fd, 4096)
      if not chunk or len(self._buf) > _MAX_REPLY_BYTES:
        return None
      self._buf += chunk
    line, self._buf = self._buf.split(b"\n", 1)
    try:
      reply = json.loads(line)
    except ValueError:
      return None
    return reply if isinstance(reply, dict) else None

  def kill(self) -> None:
    try:
      self.proc.kill()
      self.proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
      pass
    for f in (self.proc.stdin, self.proc.stdout):
      try:
        f.close()
      except OSError:
        pass


class MathVerifyPool:
  """Thread-safe pool of math-verify workers; `check` never raises and never exceeds its bound.

  A call takes at most `timeout_s` once it holds a worker, plus, on a cold pool, the worker's
  start-up (at most `startup_timeout_s`, typically ~1 s); waiting for a free worker is bounded by
  the other callers' bounds.
  """

  def __init__(self, *, num_workers: int = DEFAULT_NUM_WORKERS,
               timeout_s: float = DEFAULT_TIMEOUT_S,
               startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S):
    if num_workers < 1 or timeout_s <= 0 or startup_timeout_s <= 0:
      raise ValueError(f"bad pool settings: num_workers={num_workers}, timeout_s={timeout_s}, "
                       f"startup_timeout_s={startup_timeout_s}")
    self.num_workers = num_workers
    self.timeout_s = timeout_s
    self.startup_timeout_s = startup_timeout_s
    self._cond = threading.Condition()
    self._idle: list[_Worker] = []
    self._num_live = 0
    self._pid = os.getpid()
    self._closed = False
    self.unavailable: str | None = None  # Why math-verify could not start, while that is still believed.
    self._retry_at = 0.0                 # time.monotonic() after which a start is tried again
    self.num_timeouts = 0  # Statistics, for metrics, logs and tests.
    self.num_checks = 0

  def check(self, gold: str, pred: str, *, boxed: bool = False) -> bool:
    """Whether math-verify shows `pred` equivalent to `gold`; False on timeout or any failure."""
    for _ in range(2):  # A worker found dead on send (e.g. OOM-killed while idle) gets one retry.
      worker = self._acquire()
      if worker is None:
        return False
      healthy = False
      try:
        startup = worker.wait_ready(self.startup_timeout_s)
        if not worker.ready:
          if startup is not None and "error" in startup:
            with self._cond:
              self.unavailable = str(startup["error"])
              self._retry_at = time.monotonic() + RETRY_UNAVAILABLE_S
            _log.warning("math-verify could not start (%s); LaTeX answers are graded by string/number "
                         "equality only for the next %.0f s, then a start is tried again", self.unavailable,
                         RETRY_UNAVAILABLE_S)
          return False
        try:
          worker.send({"gold": gold, "pred": pred, "boxed": boxed,
                       "timeout": max(1, int(self.timeout_s))})
        except OSError:
          continue  # Dead worker: discarded in `finally`, retried with a fresh one.
        self.num_checks += 1
        reply = worker.recv(time.monotonic() + self.timeout_s)
        if reply is None:
          with self._cond:
            self.num_timeouts += 1
          _log.warning("math-verify check timed out after %.1f s (%d so far); counted as not equivalent",
                       self.timeout_s, self.num_timeouts)
          return False
        healthy = True
        return bool(reply.get("ok"))
      finally:
        self._release(worker, healthy)
    return False

  def close(self) -> None:
    """Kills idle workers; busy ones are killed by their callers' `check` on return."""
    with self._cond:
      idle, self._idle = self._idle, []
      self._num_live -= len(idle)
      self._closed = True
      self._cond.notify_all()
    for w in idle:
      w.kill()

  def _acquire(self) -> _Worker | None:
    with self._cond:
      if os.getpid() != self._pid:  # Forked child: the workers belong to the parent.
        self._pid, self._idle, self._num_live = os.getpid(), [], 0
      if self.unavailable is not None:
        if time.monotonic() < self._retry_at:
          return None
        self.unavailable = None          # the cool-down is over: try to start again
      if self._num_live == 0:
        for _ in range(min(2, self.num_workers)):  # The caller's worker and a warm spare.
          self._spawn_locked()
      while not self._idle and self._num_live >= self.num_workers:
        self._cond.wait()
      if self._idle:
        # Prefer a warm worker: a fresh one may still be importing sympy.
        for i, worker in enumerate(self._idle):
          if worker.ready or worker.wait_ready(0) is not None:
            return self._idle.pop(i)
        return self._idle.pop(0)
      self._num_live += 1
    try:
      return _Worker()
    except OSError as e:
      with self._cond:
        self._num_live -= 1
        self._cond.notify()
      _log.warning("cannot start a math-verify worker: %s", e)
      return None

  def _release(self, worker: _Worker, healthy: bool) -> None:
    with self._cond:
      healthy = healthy and not self._closed
    if not healthy:
      worker.kill()
    with self._cond:
      if os.getpid() != self._pid:
        return
      if healthy:
        self._idle.append(worker)
      else:
        self._num_live -= 1
        if not self._closed and self.unavailable is None:
          self._spawn_locked()  # The replacement warms up while others serve.
      self._cond.notify()

  def _spawn_locked(self) -> None:
    try:
      self._idle.append(_Worker())
      self._num_live += 1
    except OSError as e:
      _log.warning("cannot start a math-verify worker: %s", e)


_POOL: MathVerifyPool | None = None
_POOL_LOCK = threading.Lock()
_settings = {"num_workers": DEFAULT_NUM_WORKERS, "timeout_s": DEFAULT_TIMEOUT_S,
             "startup_timeout_s": DEFAULT_STARTUP_TIMEOUT_S}


def get_pool() -> MathVerifyPool:
  """The process-wide pool, created on first use."""
  global _POOL
  with _POOL_LOCK:
    if _POOL is None:
      _POOL = MathVerifyPool(**_settings)
    return _POOL


def num_timeouts() -> int:
  """Checks that the process-wide pool cut off at its deadline so far (0 before the first check)."""
  return _POOL.num_timeouts if _POOL is not None else 0


def num_workers() -> int:
  """How many checks the process-wide pool runs at once (its setting; no worker is started by asking)."""
  return int(_settings["num_workers"])


def configure(*, num_workers: int | None = None, timeout_s: float | None = None,
              startup_timeout_s: float | None = None) -> None:
  """Changes the settings of the process-wide pool; idle workers of the old pool are stopped.

  Args:
    num_workers: most worker processes at once (default min(4, cpu count)).
    timeout_s: hard deadline of one equivalence check, in seconds (default 2.0).
    startup_timeout_s: limit on a worker's start-up (python + sympy import), in seconds.
  """
  global _POOL
  new = dict(_settings)
  for key, value in (("num_workers", num_workers), ("timeout_s", timeout_s),
                     ("startup_timeout_s", startup_timeout_s)):
    if value is not None:
      new[key] = value
  MathVerifyPool(**new)  # Validates before anything changes.
  with _POOL_LOCK:
    _settings.update(new)
    old, _POOL = _POOL, None
  if old is not None:
    old.close()


@atexit.register
def _shutdown() -> None:
  if _POOL is not None:
    _POOL.close()
