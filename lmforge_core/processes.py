"""Process helpers shared by the layers (the artifact store's writer recovery, the Triton launcher, the
temporary Prefect server and the training runs' owners)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

# Starts a child that dies with the process that started it, even when that process is killed with SIGKILL
# (nothing of it could clean up then): the child asks Linux for a signal when its parent ends
# (PR_SET_PDEATHSIG), checks that the parent did not end before that, and then becomes the real command.
# Run as `python -c DIE_WITH_PARENT PARENT_PID SIGNAL PROGRAM ARGS...` (no preexec_fn: not safe with threads).
DIE_WITH_PARENT = """
import ctypes, os, sys
parent, sig = int(sys.argv[1]), int(sys.argv[2])
if sys.platform.startswith("linux"):
    ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
if os.getppid() != parent:
    sys.exit(f"the process that started {sys.argv[3]} ended before it ran")
os.execvp(sys.argv[3], sys.argv[3:])
"""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one owned by another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dying_with_parent(argv: list[str], signal_number: int) -> list[str]:
    """``argv`` started so that it gets ``signal_number`` when this process ends, however it ends (Linux;
    elsewhere the command runs as it is): see :data:`DIE_WITH_PARENT`."""
    return [sys.executable, "-c", DIE_WITH_PARENT, str(os.getpid()), str(int(signal_number)), *argv]


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot; /proc), so a reused pid is not taken for it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def process_identity(pid: int | None = None) -> dict[str, Any]:
    """Who a record's owner is: host, pid and the process's start (to tell it from a later process that got
    the same pid)."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": pid, "start": _start_ticks(pid)}


def identity_alive(identity: dict[str, Any] | None) -> bool | None:
    """Whether the process :func:`process_identity` described still runs: True or False on this host, None
    when that cannot be told here (another host, or no identity recorded)."""
    if not identity or identity.get("host") != socket.gethostname() or not identity.get("pid"):
        return None
    pid = int(identity["pid"])
    if not pid_alive(pid):
        return False
    recorded, now = identity.get("start"), _start_ticks(pid)
    return recorded is None or now is None or recorded == now
