"""How the networks run: the fast and exact plans, and the OpenMP thread policy.

:func:`set_wait_policy` asks OpenMP's idle threads to sleep at once instead of
spinning (``OMP_WAIT_POLICY=PASSIVE``), which keeps a 2-core machine with a busy
neighbour responsive. It must run before torch is imported; the ``facepcl``
command calls it at start, and ``import facepcl`` never does.
:func:`native_bf16` tells whether a device computes bfloat16 natively (what
the fast path uses).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._threads import WAIT_POLICY, set_wait_policy

if TYPE_CHECKING:
    from ._accel import native_bf16


def __getattr__(name: str) -> Any:
    if name == "native_bf16":  # imports torch: on first use only, so set_wait_policy can come first
        return importlib.import_module("._accel", __name__).native_bf16
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["WAIT_POLICY", "native_bf16", "set_wait_policy"]
