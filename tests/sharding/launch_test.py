"""The local launcher (python -m r1jax.sharding.launch): the environment of each process, failure handling.

The main job itself as 2 processes x 4 fake CPU devices is checked against 1 process with 8 devices in
tests/stages/r1_zero_test.py, beside the one-device run it is compared with.
"""
import sys
import time

import pytest

from r1jax.sharding import launch


def test_process_env_names_the_coordinator_and_sets_the_device_count():
  env = launch.process_env({"XLA_FLAGS": "--xla_foo=1 --xla_force_host_platform_device_count=8", "A": "b"},
                           process_id=1, num_processes=2, coordinator="127.0.0.1:1234", devices_per_process=4)
  assert env["R1JAX_COORDINATOR"] == "127.0.0.1:1234" and env["R1JAX_NUM_PROCESSES"] == "2"
  assert env["R1JAX_PROCESS_ID"] == "1" and env["A"] == "b"
  assert env["XLA_FLAGS"] == "--xla_foo=1 --xla_force_host_platform_device_count=4"
  assert "XLA_FLAGS" not in launch.process_env({}, process_id=0, num_processes=1, coordinator="h:1",
                                               devices_per_process=None)


def test_a_failing_process_stops_the_others_and_sets_the_status(tmp_path):
  script = ("import os, sys, time\n"
            "i = int(os.environ['R1JAX_PROCESS_ID'])\n"
            "print('hello from', i, 'of', os.environ['R1JAX_NUM_PROCESSES'], flush=True)\n"
            "sys.exit(3) if i == 1 else time.sleep(120)\n")
  out = tmp_path / "out.txt"
  t0 = time.time()
  with open(out, "w") as f:
    rc = launch.launch([sys.executable, "-c", script], 3, out=f)
  assert rc == 3 and time.time() - t0 < 60                  # process 0 and 2 were stopped, not waited for
  text = out.read_text()
  for i in range(3):
    assert f"[{i}] hello from {i} of 3" in text
  assert "[launch] process 1 exited with status 3" in text
  with pytest.raises(ValueError, match="num_processes must be >= 1"):
    launch.launch(["true"], 0)
