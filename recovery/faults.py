"""Test-only fault injection: proves the invariants under crashes (invariants 1 and 4).

A named point does nothing unless RECOVERY_FAULT_POINT names it, in which case the process
kills itself with SIGKILL right there: no cleanup, no exception handler, exactly what a lost
worker looks like. Deployments never set the variable.
"""

from __future__ import annotations

import os
import signal


def fault_point(name: str) -> None:
    if os.environ.get("RECOVERY_FAULT_POINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
