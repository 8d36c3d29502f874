"""math-verify workers die with their parent even mid-check, a failed start is retried after a cool-down,
rollouts are scored concurrently in order, and deadline hits are counted for the metrics."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from r1jax.rewards import _math_verify_pool
from r1jax.sampling import rollout as rollout_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().split(")")[-1].split()[0] != "Z"      # a zombie nobody reaped is dead
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_a_worker_stuck_in_a_c_call_dies_when_its_parent_is_killed():
  # The worker's check spins inside one C call that holds the GIL (no Python-level watchdog can run):
  # only the parent-death signal can end it.
  parent = textwrap.dedent("""
      import sys, time
      from r1jax.rewards import _math_verify_pool as p
      p._WORKER_SOURCE = p._WORKER_SOURCE.replace(
          "def check(gold, pred, boxed=False, timeout=1):",
          "def check(gold, pred, boxed=False, timeout=1):\\n  if pred == 'spin':\\n"
          "    return sum(range(10**14))\\n  return _real_check(gold, pred, boxed, timeout)\\n\\n"
          "def _real_check(gold, pred, boxed=False, timeout=1):", 1)
      w = p._Worker()
      assert w.wait_ready(120) is not None and w.ready
      w.send({"gold": "1", "pred": "spin"})
      print(w.proc.pid, flush=True)
      time.sleep(600)
  """)
  proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True, cwd=ROOT)
  worker = int(proc.stdout.readline())
  time.sleep(0.5)
  assert _alive(worker)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  deadline = time.time() + 10
  while _alive(worker) and time.time() < deadline:
    time.sleep(0.1)
  if _alive(worker):
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the math-verify worker outlived its parent")


def test_a_failed_start_is_retried_after_the_cool_down(monkeypatch):
  real = _math_verify_pool._WORKER_SOURCE
  monkeypatch.setattr(_math_verify_pool, "_WORKER_SOURCE",
                      "import json; print(json.dumps({'ready': False, 'error': 'flaky start'}))")
  pool = _math_verify_pool.MathVerifyPool(num_workers=1)
  try:
    assert not pool.check("1", "1") and pool.unavailable == "flaky start"
    assert not pool.check("1", "1")                          # within the cool-down: no new start
    monkeypatch.setattr(_math_verify_pool, "_WORKER_SOURCE", real)
    pool._retry_at = time.monotonic()                        # the cool-down is over
    assert pool.check("\\frac{1}{2}", "\\sqrt{1/4}", boxed=True) and pool.unavailable is None
  finally:
    pool.close()


def test_deadline_hits_are_counted_process_wide():
  before = _math_verify_pool.num_timeouts()
  pool = _math_verify_pool.get_pool()
  old = pool.timeout_s
  pool.timeout_s = 0.5
  try:
    assert pool.check("1", "1", boxed=True)
    assert not pool.check("1", "(" * 37 + "1" + ")" * 37, boxed=True)     # several seconds of sympy
  finally:
    pool.timeout_s = old
  assert _math_verify_pool.num_timeouts() == before + 1


def test_rollouts_are_scored_concurrently_and_in_order(monkeypatch):
  threads = set()

  def slow_combine(text, example, weights, options=None, extra=None):
    threads.add(threading.current_thread().name)
    time.sleep(0.2)
    return float(example["i"]), {"accuracy": float(example["i"])}

  monkeypatch.setattr(rollout_lib, "combine", slow_combine)
  scorer = rollout_lib.RewardScorer(weights={"accuracy": 1.0})
  start = time.monotonic()
  out = scorer([f"t{i}" for i in range(8)], [{"i": i} for i in range(8)])
  elapsed = time.monotonic() - start
  assert [total for total, _ in out] == list(range(8))
  assert len(threads) >= 2 and elapsed < 8 * 0.2 * 0.75
