"""Crash points: named places where an interrupted ``mlops`` must leave a state it can recover from.

Every durable change (a journal line, a target's record, a router switch, a registry commit)
calls ``crash_point(name)`` right after it is made. In normal runs that is one comparison. The
fault-injection tests set ``MLOPS_CRASH_TRACE=FILE`` to list the points an apply passes, then
``MLOPS_CRASH_AT=N`` to kill the process with SIGKILL at the N-th one: a crash at every commit
point, driven deterministically rather than by timing luck.
"""

from __future__ import annotations

import os
import signal

_TRACE = os.environ.get("MLOPS_CRASH_TRACE")
_AT = int(os.environ.get("MLOPS_CRASH_AT") or 0)
_count = 0


def crash_point(name: str) -> None:
    """Record or act on one commit point (no-op unless the fault-injection variables are set)."""
    global _count
    if not (_TRACE or _AT):
        return
    _count += 1
    if _TRACE:
        with open(_TRACE, "a") as trace:
            trace.write(f"{_count}\t{name}\n")
    if _count == _AT:
        os.kill(os.getpid(), signal.SIGKILL)
