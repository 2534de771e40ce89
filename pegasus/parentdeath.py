"""A child process that ends when Pegasus dies, however it dies (``kill -9`` too).

Linux's ``PR_SET_PDEATHSIG``, set in the child before its exec: lock mode's
editor (``editorproc``) and Slurm's ``srun`` (``slurm``) use it. Elsewhere,
nothing is set.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def arm() -> Callable[[], None]:
    """What the child runs before its exec (call this before the fork: prctl is
    looked up here): SIGTERM when Pegasus dies. A Pegasus already dead between
    the fork and the prctl sends no signal: the child then ends at once."""
    prctl, parent = _prctl(), os.getpid()

    def child() -> None:
        if prctl is None:
            return
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)
    return child


def _prctl():
    """Linux's prctl; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
