"""The one exception type users see: a problem and its fix, printed as one line."""

import errno


class AutokdError(Exception):
    """A user-facing failure (bad input, missing file, unreachable database).

    The CLI prints ``str(error)`` as a single line and exits with code 2; no traceback
    unless ``--debug``. Raise it before touching the study so nothing is left half-written.

    Example:
        >>> raise AutokdError("dataset path /x does not exist", "pass --data-root to a folder of class folders")
    """

    exit_code = 2

    def __init__(self, problem: str, fix: str):
        super().__init__(problem, fix)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return f"error: {self.problem}; fix: {self.fix}"


class SearchFailed(AutokdError):
    """A search ran trials and none of them finished: exit code 1 (bad input is 2)."""

    exit_code = 1


class DiskFull(AutokdError):
    """A disk autokd writes to (the output folder, a SQLite study) is full: exit 2; the next run,
    once there is space, resumes the interrupted trials from their last epoch checkpoint."""


#: Errors of a disk that has no room left (a quota counts as full).
FULL_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
FULL_DISK_FIX = ("free space on that disk (or choose another folder: --output, --out), then run the same command "
                 "again (a search resumes its interrupted trials from their last epoch checkpoint)")


def disk_full(err: BaseException | None) -> DiskFull | None:
    """The one-line error for ``err`` when it (or what caused it) is a full disk, else None.

    A full disk reaches autokd as ``OSError(ENOSPC)`` from a file write, or as SQLite's "database
    or disk is full" (wrapped by SQLAlchemy and then by Optuna).
    """
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, DiskFull):
            return err
        if isinstance(err, OSError) and err.errno in FULL_DISK_ERRNOS:
            return DiskFull(f"cannot write {err.filename or 'a file'}: {err.strerror}", FULL_DISK_FIX)
        text = str(getattr(err, "orig", None) or err).lower()
        if "database or disk is full" in text:
            return DiskFull("cannot write the SQLite study database: its disk is full", FULL_DISK_FIX)
        if "no space left on device" in text:  # pyarrow's and torch's writers, which keep no errno
            return DiskFull(f"cannot write a file: {str(err).strip().splitlines()[0][:200]}", FULL_DISK_FIX)
        err = err.__cause__ or err.__context__
    return None
