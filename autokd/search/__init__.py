"""The search layer: the only code that knows Optuna storage, SQLAlchemy and Ray.

``open_study`` is the one door to the database; an executor (``local`` or ``ray``, from
:func:`make_executor`) decides where ``autokd.trial.run_trial`` runs, and
:func:`autokd.search.executor.run_search` drives either one the same way.
"""

from autokd.search.executor import Executor, run_search
from autokd.search.local import LocalExecutor
from autokd.search.storage import open_storage, redact_url
from autokd.search.study import finished_count, open_study
from autokd.search.warmstart import enqueue_lines

__all__ = ["Executor", "LocalExecutor", "enqueue_lines", "finished_count", "make_executor", "open_storage", "open_study",
           "redact_url", "run_search"]


def make_executor(kind: str) -> Executor:
    """The executor named by a study's ``executor.kind``; Ray is imported only when asked for."""
    if kind == "ray":
        from autokd.search.ray_executor import RayExecutor

        return RayExecutor()
    return LocalExecutor()
