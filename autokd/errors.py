"""The one exception type users see: a problem and its fix, printed as one line."""


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
