"""Keep freed memory in the process on glibc, so big training tensors are not page-faulted in every step.

A training step on the CPU allocates and frees gigabytes of activations.
By default glibc serves every block above 32 MB with a fresh ``mmap`` and
returns it to the kernel on ``free``, so each step pays for zeroing and
mapping those pages again (docs/training.md gives the share of a PCL step's
CPU time that went to the kernel). With mmap disabled and trimming off, freed
blocks go back to the heap and the next step reuses them. Results do not
change; the process keeps its peak memory until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("facepcl.train")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_done = False


def retain_freed_memory() -> bool:
    """Switch glibc's malloc to heap-only allocation without trimming (idempotent).

    Returns:
        True when applied (Linux with glibc), False elsewhere.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # -1 as the trim threshold is SIZE_MAX inside glibc: never give the heap top back.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
    if _done:
        log.info("glibc malloc: heap only, no trimming (train.retain_cpu_memory)")
    return _done
