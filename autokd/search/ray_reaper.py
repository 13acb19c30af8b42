"""Kill the private Ray that a driver started, as soon as that driver ends, even by SIGKILL.

Run as a script (``python ray_reaper.py ROOT:TICKS ...``, standard library only, so it starts in
a few milliseconds and holds no torch) by :func:`autokd.search.ray_executor.init_ray`, with its
standard input a pipe from the driver. The roots are the processes ``ray.init`` started (GCS,
raylet, dashboard, log monitor); every second the reaper records them and all their
descendants (workers, dashboard and runtime-env agents). When the pipe closes, because the
driver called :func:`~autokd.search.ray_executor.shutdown_ray` or because it died, each recorded
process still alive is killed with SIGKILL; a start time (``/proc/PID/stat`` field 22) read at
record time guards against a pid reused meanwhile.

Why not rely on Ray: its GCS and raylet die with the driver (``PR_SET_PDEATHSIG``), but the
raylet's agents and idle workers outlive it by a minute or more, holding memory and CPUs.
"""

from __future__ import annotations

import os
import select
import signal
import sys

POLL_SECONDS = 1.0
#: Index of the start time (field 22 of ``/proc/PID/stat``) among :func:`proc_stat`'s fields.
_START_FIELD = 19


def proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state, parent pid, ...), or None when
    ``pid`` is gone. The one reader of that file in autokd (driver ids use it too)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start ticks) of ``pid``, or None when it is gone or a zombie."""
    fields = proc_stat(pid)
    if fields is None or len(fields) <= _START_FIELD or fields[0] in ("Z", "X"):
        return None
    return int(fields[1]), fields[_START_FIELD]


def _processes() -> dict[int, tuple[int, str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                found[int(entry)] = info
    return found


def start_ticks(pid: int, *, zombies: bool = False) -> str | None:
    """When ``pid`` started (clock ticks since boot); None when it is gone (or a zombie, unless ``zombies``)."""
    if zombies:
        fields = proc_stat(pid)
        return fields[_START_FIELD] if fields is not None and len(fields) > _START_FIELD else None
    info = _stat(pid)
    return None if info is None else info[1]


def children(pid: int) -> list[int]:
    """The living direct children of ``pid``."""
    return [child for child, (ppid, _) in _processes().items() if ppid == pid]


def track(tracked: dict[int, str]) -> None:
    """Add every living descendant of the tracked processes (with its start ticks) to ``tracked``."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid, ticks in tracked.items() if pid in table and table[pid][1] == ticks]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in tracked and child != os.getpid():
                tracked[child] = table[child][1]
                todo.append(child)


def kill(tracked: dict[int, str]) -> int:
    """SIGKILL each tracked process that is still the one recorded; returns how many."""
    track(tracked)  # the last second's new workers too
    killed = 0
    for pid, ticks in tracked.items():
        info = _stat(pid)
        if info is not None and info[1] == ticks:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle; the pipe tells us the end
    tracked = {}
    for arg in argv:
        pid, _, ticks = arg.partition(":")
        tracked[int(pid)] = ticks
    stdin = sys.stdin.fileno()
    while True:
        track(tracked)
        ready, _, _ = select.select([stdin], [], [], POLL_SECONDS)
        if ready and not os.read(stdin, 4096):  # EOF: the driver is done with Ray, or dead
            break
    kill(tracked)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
