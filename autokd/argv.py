"""This process's command line as other users see it: a storage password in it is hidden."""

from __future__ import annotations

import re
import sys

#: A password in a URL's userinfo (``scheme://user:PASSWORD@``) or query (``?password=PASSWORD``).
ARGV_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s]*(?=@)|(?P<query>[?&]password=)[^&\s]*")


def hide_argv_password() -> bool:
    """Replace this process's title when its command line holds a storage password; True if it did.

    Anyone on the machine can read a process's command line (``ps``, ``/proc/PID/cmdline``) for as
    long as it runs, and a search runs for hours, so a ``--storage`` URL with a password is
    rewritten with ``***`` in its place (``setproctitle``, which overwrites the memory ``ps`` reads).
    Ray's processes, which record their driver's command line, see the redacted one. Hiding is
    not enough on its own: the password was readable for the half second before this ran and
    stays in the shell's history, so the caller warns with :data:`ARGV_PASSWORD_WARNING`, which names
    the ways that never expose it (``AUTOKD_STORAGE``, ``~/.pgpass``, ``PGPASSWORD``).
    """
    argv = list(getattr(sys, "orig_argv", sys.argv))
    redacted = [ARGV_PASSWORD.sub(lambda m: (m.group("head") + "***") if m.group("head")
                                  else (m.group("query") + "***"), arg) for arg in argv]
    if redacted == argv:
        return False
    try:
        import setproctitle

        setproctitle.setproctitle(" ".join(redacted))
    except ImportError:  # a trimmed install: the warning still tells what to do
        pass
    return True


#: What to print when :func:`hide_argv_password` hid a password.
ARGV_PASSWORD_WARNING = ("warning: a password on the command line is readable by other users while a command starts "
                         "and stays in shell history; set AUTOKD_STORAGE=URL, or use ~/.pgpass or PGPASSWORD, instead")
