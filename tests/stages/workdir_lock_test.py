"""One run per workdir: a second run of a job in a workdir another run holds fails at once, naming the
holder; the lock dies with its process (SIGKILL leaves no stale lock)."""
import os
import signal
import subprocess
import sys

import pytest

from r1jax.stages.writers import LOCK_FILE, WorkdirLocked, workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys, time\nfrom r1jax.stages.writers import workdir_lock\n"
        "with workdir_lock(sys.argv[1]):\n  print('held', flush=True)\n  time.sleep(600)\n")


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE, text=True,
                          cwd=ROOT, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_run_is_refused_and_a_killed_holder_frees_the_workdir(tmp_path):
  workdir = tmp_path / "run"
  proc = _holder(workdir)
  try:
    with pytest.raises(WorkdirLocked, match=f"in use by another run \\(pid {proc.pid} on "):
      with workdir_lock(str(workdir)):
        pass
    # The experiment scripts take the lock before any work.
    script = subprocess.run([sys.executable, "-m", "experiments.sft", "--config=configs/sft.py",
                             f"--workdir={workdir}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert script.returncode != 0 and "is in use by another run" in script.stderr
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  with workdir_lock(str(workdir)):                        # no stale lock after SIGKILL
    assert f"pid {os.getpid()}" in (workdir / LOCK_FILE).read_text()
  with workdir_lock(str(workdir)):                        # released at the end of the block
    pass
