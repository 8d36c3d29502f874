"""Starts N processes of one command on this machine as one multi-process JAX job (a local cluster).

    python -m r1jax.sharding.launch --num_processes=2 --devices_per_process=4 -- \
        python -m experiments.r1_zero --config=configs/r1_zero.py:runlocal --workdir=runs/r1_zero_2p

Each process gets R1JAX_COORDINATOR (127.0.0.1 and a free port), R1JAX_NUM_PROCESSES, R1JAX_PROCESS_ID
and, with --devices_per_process on the CPU, XLA_FLAGS=--xla_force_host_platform_device_count=K, which
`r1jax.sharding.distributed.initialize` (called first by every experiment) reads. Each output line is
prefixed with its process index. When one process fails the others are stopped, and the launcher exits
with the first non-zero status; SIGINT / SIGTERM are passed on to every process (a preempted job
checkpoints and resumes as a single process does).
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Sequence


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def process_env(base: dict, *, process_id: int, num_processes: int, coordinator: str,
                devices_per_process: int | None) -> dict:
  """The environment of process `process_id`."""
  env = dict(base, R1JAX_COORDINATOR=coordinator, R1JAX_NUM_PROCESSES=str(num_processes),
             R1JAX_PROCESS_ID=str(process_id))
  if devices_per_process:
    flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", "")).strip()
    env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
  return env


def _pump(stream, prefix: str, out) -> None:
  for line in iter(stream.readline, b""):
    out.write(prefix + line.decode(errors="replace"))
    out.flush()


def launch(command: Sequence[str], num_processes: int, *, devices_per_process: int | None = None,
           port: int | None = None, env: dict | None = None, out=None) -> int:
  """Runs `command` as processes 0..num_processes-1 of one job; returns the job's exit status."""
  if num_processes < 1:
    raise ValueError(f"num_processes must be >= 1, got {num_processes}")
  if not command:
    raise ValueError("no command to launch")
  out = sys.stdout if out is None else out
  coordinator = f"127.0.0.1:{port or free_port()}"
  procs, pumps = [], []
  for i in range(num_processes):
    p = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=process_env(dict(os.environ if env is None else env), process_id=i,
                                         num_processes=num_processes, coordinator=coordinator,
                                         devices_per_process=devices_per_process))
    procs.append(p)
    t = threading.Thread(target=_pump, args=(p.stdout, f"[{i}] ", out), daemon=True)
    t.start()
    pumps.append(t)

  def forward(signum, _frame):
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)

  old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  status = 0
  try:
    pending = set(range(num_processes))
    while pending:
      for i in sorted(pending):
        try:
          rc = procs[i].wait(timeout=0.2)
        except subprocess.TimeoutExpired:
          continue
        pending.discard(i)
        if rc != 0 and status == 0:
          status = rc
          out.write(f"[launch] process {i} exited with status {rc}; stopping the others\n")
          for j in pending:
            procs[j].terminate()
  finally:
    for s, h in old.items():
      signal.signal(s, h)
    for p in procs:
      if p.poll() is None:
        p.kill()
    for t in pumps:
      t.join(timeout=5)
  return status


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                   usage="python -m r1jax.sharding.launch [options] -- COMMAND ...")
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--devices_per_process", type=int, default=None,
                      help="fake CPU devices per process (XLA_FLAGS); leave out on GPU/TPU")
  parser.add_argument("--port", type=int, default=None, help="coordinator port (default: a free one)")
  parser.add_argument("command", nargs=argparse.REMAINDER)
  args = parser.parse_args(argv)
  command = args.command[1:] if args.command[:1] == ["--"] else args.command
  return launch(command, args.num_processes, devices_per_process=args.devices_per_process, port=args.port)


if __name__ == "__main__":
  sys.exit(main())
