"""OpenMP's wait policy, set before torch starts its thread pool: passive waiting on a shared machine.

torch's CPU operations run on an OpenMP pool (GNU libgomp in the PyPI
wheels). By default an idle pool thread spins for a while before it
sleeps, and every operation ends at a barrier where the threads wait for
each other. On a quiet machine that saves microseconds; with one busy
neighbour process on a 2-core machine it is ruinous: the thread that got
descheduled holds up the others, which burn their time slices spinning,
and embedding photos took several times as long as on a quiet machine
(docs/benchmarks.md, "busy neighbour"). With ``OMP_WAIT_POLICY=PASSIVE``
waiting threads sleep at once and give the core to whoever can use it.

libgomp reads the variable once, when the library loads (at ``import
torch``), so :func:`set_wait_policy` must run before torch is imported. The
``facepcl`` command calls it first thing; ``import facepcl`` never changes the
environment, so a library user who wants the same calls it before importing
torch (or sets ``OMP_WAIT_POLICY=PASSIVE`` in the environment). It never
overrides a value the user (or a launcher) set.
"""

from __future__ import annotations

import os
import sys
import warnings

#: The policy facepcl asks for when nobody else chose one.
WAIT_POLICY = "PASSIVE"


def set_wait_policy() -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, unless it is set already.

    Call it before torch is imported (OpenMP reads the variable when torch
    loads); once torch is loaded it changes nothing and says so.

    Returns:
        The policy in the environment afterwards (None: unset because torch came first).

    Warns:
        RuntimeWarning: torch was already imported, so the policy cannot take effect.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return os.environ["OMP_WAIT_POLICY"]
    if "torch" in sys.modules:
        warnings.warn("facepcl.runtime.set_wait_policy() came after import torch, when OpenMP has already read its "
                      "settings: call it before importing torch, or set OMP_WAIT_POLICY=PASSIVE in the environment",
                      RuntimeWarning, stacklevel=2)
        return None
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return WAIT_POLICY
