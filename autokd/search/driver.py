"""Who drives a trial: this process's name in a trial (``host:pid:start-ticks``) and whether a named
driver is gone."""

from __future__ import annotations

import os
import socket

from autokd.search.ray_reaper import start_ticks


def driver_id() -> str:
    """This process as ``host:pid:start-ticks``; the start time guards against a reused pid."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start_ticks(os.getpid())}"


def _start_ticks(pid: int) -> str:
    return start_ticks(pid, zombies=True) or "?"


def driver_is_dead(owner: str | None) -> bool:
    """True only when the owner ran on this host and its process is gone (other hosts: heartbeat)."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    pid, _, ticks = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return ticks not in ("?", _start_ticks(int(pid)))
