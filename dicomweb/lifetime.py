"""Child processes end with the process that started them, even when it is killed (SIGKILL): the server's workers,
their pixel-work processes and ``dicomweb import``'s parsing processes would otherwise live on as orphans, holding
ports, files and memory."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

SUPERVISOR_PID = "DICOMWEB_SUPERVISOR_PID"  # set by ``dicomweb serve --workers N`` for its workers


def end_with(parent: int) -> None:
    """Have the kernel send this process SIGTERM when ``parent`` dies (Linux's PR_SET_PDEATHSIG). ``parent`` is the
    pid the starting process passed down, not ``os.getppid()`` read here: a parent killed before this runs has already
    handed its children to another process, whose pid getppid() would return."""
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
