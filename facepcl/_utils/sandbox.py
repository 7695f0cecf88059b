"""Run one untrusted-input function in a child process, under a wall-clock and a memory bound.

Some reads cannot be bounded from inside: ``torch.load(weights_only=True)``
never executes pickled code, but a 200-byte pickle can still make it hash a
tuple nested 60 levels deep (2**60 steps, in C, deaf to Ctrl-C) or allocate
without limit. :func:`run_isolated` runs such a read in a child process with
an address-space limit (``RLIMIT_AS``, Linux) and stops it when a deadline
passes or the caller is interrupted, so the caller always gets an answer or
a clear error, and Ctrl-C always works. A CPU-time limit (``RLIMIT_CPU``)
a little past the deadline stops a child whose parent was killed.

Children are forked from a ``forkserver`` that has imported torch once, so a
call costs milliseconds, not an interpreter start (``spawn`` where
``forkserver`` does not exist). The caller's main script is not imported
in the child, so scripts need no ``if __name__ == "__main__":`` guard. The
function and its arguments must be picklable (module-level); it returns a
small picklable result and writes anything large to files.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any

#: Seconds a child may take to start (import torch) before the run counts as failed.
START_TIMEOUT = 300.0
_POLL = 0.2  # seconds between checks, so that Ctrl-C is handled promptly
_MAIN_LOCK = threading.Lock()
_MEMORY_MARKERS = ("can't allocate memory", "not enough memory", "out of memory", "std::bad_alloc")


class ChildFailure(Exception):
    """The function failed in the child.

    Attributes:
        kind: "timeout" (the deadline passed; the child was killed), "memory"
            (it needed more than the memory limit), "crashed" (the child died
            without an answer) or "error" (it raised).
        detail: The child's exception as ``Type: message``, or what happened.
        types: Names of the exception's classes (its MRO), for "error" and "memory".
    """

    def __init__(self, kind: str, detail: str, types: tuple[str, ...] = ()) -> None:
        super().__init__(detail)
        self.kind, self.detail, self.types = kind, detail, tuple(types)


def _context() -> Any:
    methods = multiprocessing.get_all_start_methods()
    if "forkserver" in methods:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["torch"])  # imported once by the server, shared by every child
        return ctx
    return multiprocessing.get_context("spawn")


def _address_space() -> int | None:
    """This process's virtual memory size in bytes (Linux), else None."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _limit_memory(budget: int | None) -> None:
    """Cap the address space at what the process maps now plus ``budget`` bytes (where the OS allows it)."""
    if budget is None:
        return
    try:
        import resource
    except ImportError:  # Windows
        return
    now = _address_space()
    if now is None:
        return
    limit = now + int(budget)
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):
        return


def _limit_cpu(seconds: float) -> None:
    """Cap CPU time a little past ``seconds``: a child orphaned by a killed parent still stops (POSIX)."""
    try:
        import resource
    except ImportError:  # Windows
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + seconds) + 10
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard != resource.RLIM_INFINITY and hard < soft + 5:
            return
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 5))
    except (ValueError, OSError):
        return


def _child(conn: Any, func: Callable[..., Any], args: tuple, memory_limit: int | None, timeout: float) -> None:
    try:
        import torch

        torch.set_num_threads(1)
        _limit_memory(memory_limit)
        _limit_cpu(timeout)
        conn.send(("ready", None))
        conn.send(("done", func(*args)))
    except BaseException as e:  # everything goes back to the parent, as text
        types = tuple(c.__name__ for c in type(e).__mro__)
        message = f"{type(e).__name__}: {e}"
        memory = isinstance(e, MemoryError) or any(m in str(e) for m in _MEMORY_MARKERS)
        with contextlib.suppress(BaseException):  # the pipe may be gone, or sending may need memory
            conn.send(("memory" if memory else "error", (message[:4000], types)))
    finally:
        conn.close()


def run_isolated(func: Callable[..., Any], args: tuple, *, timeout: float, memory_limit: int | None) -> Any:
    """``func(*args)`` in a child process, killed after ``timeout`` seconds or on Ctrl-C.

    Args:
        func: A module-level function (it is pickled to the child).
        args: Its picklable arguments.
        timeout: Seconds ``func`` may run, counted from when the child is ready.
        memory_limit: Bytes of address space the child may add to what it maps
            when ready (enforced on Linux); None: no limit.

    Returns:
        What ``func`` returned.

    Raises:
        ChildFailure: ``func`` raised, ran out of time or memory, or the child died.
        KeyboardInterrupt: The caller was interrupted; the child is killed first.
    """
    ctx = _context()
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, func, args, memory_limit, float(timeout)), daemon=True)
    try:
        with _MAIN_LOCK:
            # multiprocessing would import the caller's main script in the child (re-running an unguarded
            # script); the child needs nothing from it, so it is hidden while the child is prepared.
            main = sys.modules["__main__"]
            sys.modules["__main__"] = types.ModuleType("__main__")
            try:
                proc.start()
            finally:
                sys.modules["__main__"] = main
        child.close()
        for phase, limit in (("start", START_TIMEOUT), ("finish", float(timeout))):
            status, value = _receive(parent, proc, limit, phase)
            if status == "done":
                return value
            if status != "ready":
                raise ChildFailure(status, value[0], tuple(value[1]))
        raise ChildFailure("crashed", "the child process answered out of order")
    finally:
        parent.close()
        if proc.is_alive():
            proc.kill()
        if proc.pid is not None:
            proc.join()


def _receive(conn: Any, proc: Any, limit: float, phase: str) -> tuple[str, Any]:
    """The child's next message, waiting at most ``limit`` seconds in short slices (Ctrl-C stays prompt)."""
    deadline = time.monotonic() + limit
    while not conn.poll(max(0.0, min(_POLL, deadline - time.monotonic()))):
        if time.monotonic() >= deadline:
            raise ChildFailure("timeout", f"did not {phase} within {limit:g} s, and was stopped")
    try:
        return conn.recv()
    except EOFError:
        proc.join(5)
        raise ChildFailure("crashed", f"the child process ended without an answer (exit code {proc.exitcode})") \
            from None
