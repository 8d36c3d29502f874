"""Worker process for LaTeX answer equivalence with math-verify (see _math_verify_pool).

The pool starts this file's source with `python -c`, so it imports only the standard library and
math_verify (never r1jax, never jax). Protocol: one JSON object per line on stdin and stdout.

    worker -> pool, once:  {"ready": true}   or   {"ready": false, "error": "..."}
    pool -> worker:        {"gold": "...", "pred": "...", "boxed": bool, "timeout": int}
    worker -> pool:        {"ok": bool}

`check` is also imported in-process by tests (from the main thread, where math-verify's own
signal-based timeouts work).
"""
import functools
import json
import signal
import sys

# sympy can be asked for 10**(10**10); a cap on the address space turns that into a MemoryError
# instead of swapping the host. 2 GiB is ~10x what sympy + antlr need here (measured ~200 MB).
_MEMORY_LIMIT_BYTES = 2 << 30


@functools.lru_cache(maxsize=4096)
def _parse_gold(gold, timeout):
  import math_verify  # pylint: disable=g-import-not-at-top
  return math_verify.parse("\\boxed{" + gold + "}", parsing_timeout=timeout)


def _pred_variants(pred, boxed):
  """How to read the prediction: its LaTeX needs delimiters for math-verify to see it."""
  if boxed:
    return ("\\boxed{" + pred + "}",)
  if "$" in pred or "\\(" in pred or "\\[" in pred:
    return (pred,)
  # Bare LaTeX such as "\frac{1}{2}" is invisible to math-verify without delimiters, but bare
  # prose ("the answer is 2") turns into a product of symbols inside them: try both.
  return ("$" + pred + "$", pred)


def check(gold, pred, boxed=False, timeout=1):
  """Whether `pred` is mathematically equivalent to `gold` according to math-verify.

  Args:
    gold: gold answer, LaTeX without delimiters (MATH's `answer` field).
    pred: predicted answer text.
    boxed: whether `pred` is the content of a \\boxed{} (then it is LaTeX without delimiters).
    timeout: math-verify's own per-step limit in seconds (main thread only; the pool's deadline is
      the real bound, this one just spares a worker restart on slow-but-finite inputs).

  Returns:
    True when equivalent; False otherwise, including on any error.
  """
  import math_verify  # pylint: disable=g-import-not-at-top
  try:
    gold_parsed = _parse_gold(gold, timeout)
    if not gold_parsed:
      return False
    for variant in _pred_variants(pred, boxed):
      pred_parsed = math_verify.parse(variant, parsing_timeout=timeout)
      if pred_parsed and math_verify.verify(gold_parsed, pred_parsed, timeout_seconds=timeout):
        return True
  except Exception:  # pylint: disable=broad-except
    # MemoryError, RecursionError, sympy errors: all mean "not shown equivalent".
    return False
  return False


def _limit_memory():
  try:
    import resource  # pylint: disable=g-import-not-at-top
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _MEMORY_LIMIT_BYTES
    if hard != resource.RLIM_INFINITY:
      limit = min(hard, limit)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
  except (ImportError, ValueError, OSError):
    pass  # Not POSIX, or not allowed: the pool's deadline still bounds the time.


def _die_with_parent():
  """Ends this worker when the process that started it dies, even by SIGKILL and even while a check is
  stuck in one long C call: Linux's parent-death signal, and a watchdog thread wherever that is missing.
  (A closed stdin alone is noticed only between checks.)"""
  import os  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  parent = int(os.environ.get("R1JAX_PARENT_PID", "0")) or os.getppid()
  if sys.platform.startswith("linux"):
    try:
      import ctypes  # pylint: disable=g-import-not-at-top
      ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
      pass
  if os.getppid() != parent:       # the parent died before the signal was armed
    os._exit(0)

  def watch():
    while os.getppid() == parent:
      time.sleep(0.5)
    os._exit(0)

  threading.Thread(target=watch, daemon=True).start()


def main():
  """Serves requests until stdin closes (the pool, or its process, went away) or the parent dies."""
  _die_with_parent()
  out = sys.stdout.buffer
  sys.stdout = sys.stderr  # Stray prints from libraries must not corrupt the protocol.
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it kills us.
  _limit_memory()

  def send(obj):
    out.write(json.dumps(obj).encode() + b"\n")
    out.flush()

  try:
    import math_verify  # pylint: disable=g-import-not-at-top,unused-import
    check("1", "1")  # Warm up antlr and sympy so the first real request meets its deadline.
  except Exception as e:  # pylint: disable=broad-except
    send({"ready": False, "error": f"{type(e).__name__}: {e}"})
    return
  send({"ready": True})
  for line in sys.stdin.buffer:
    try:
      req = json.loads(line)
      ok = check(req["gold"], req["pred"], bool(req.get("boxed")), int(req.get("timeout", 1)))
    except Exception:  # pylint: disable=broad-except
      ok = False
    send({"ok": bool(ok)})


if __name__ == "__main__":
  main()
