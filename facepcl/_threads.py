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
torch``), so this module must run before torch is imported: ``import
facepcl`` imports it first. It never overrides a value the user (or a
launcher) set, and it does nothing once torch is already imported (then
the user's process decided; set ``OMP_WAIT_POLICY=PASSIVE`` yourself
before importing torch to get the same behaviour).
"""

from __future__ import annotations

import os
import sys

#: The policy facepcl asks for when nobody else chose one.
WAIT_POLICY = "PASSIVE"


def set_wait_policy() -> str | None:
    """Set ``OMP_WAIT_POLICY`` (unless set already, or torch is already imported).

    Returns:
        The policy in the environment afterwards (None: unset, torch came first).
    """
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return os.environ.get("OMP_WAIT_POLICY")


set_wait_policy()
