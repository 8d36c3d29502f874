"""Loaded at start-up by every Python process whose PYTHONPATH holds this directory (a test puts it there):
with R1JAX_WRITE_AUDIT=DIR set, a process of a multi-process job (R1JAX_PROCESS_ID set by the launcher) logs
every file it opens for writing, renames, replaces, truncates or removes, and every directory it creates, to
DIR/process_<id>.log (one path per line), through Python's audit hooks."""
import os
import sys

_DIR, _ID = os.environ.get("R1JAX_WRITE_AUDIT"), os.environ.get("R1JAX_PROCESS_ID")

if _DIR and _ID is not None:
  _log = open(os.path.join(_DIR, f"process_{_ID}.log"), "a", buffering=1)
  _WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

  def _record(event, path):
    if isinstance(path, (str, bytes, os.PathLike)):
      _log.write(f"{event} {os.path.abspath(os.fsdecode(path))}\n")

  def _hook(event, args):
    if event == "open":
      path, mode, flags = args
      if isinstance(path, int) or path is None:
        return
      if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (mode is None and flags & _WRITE_FLAGS):
        _record("write", path)
    elif event in ("os.rename", "os.replace"):
      _record(event, args[1])
    elif event in ("os.remove", "os.truncate", "shutil.rmtree"):
      _record(event, args[0])
    elif event == "os.mkdir" and not os.path.exists(args[0]):
      _record(event, args[0])

  sys.addaudithook(_hook)
