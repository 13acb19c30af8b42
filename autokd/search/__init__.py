"""The search layer: the only code that knows Optuna storage, SQLAlchemy and Ray.

``open_study`` is the one door to the database; an executor (``local`` or ``ray``, from
:func:`make_executor`) decides where ``autokd.trial.run_trial`` runs, and
:func:`autokd.search.executor.run_search` drives either one the same way.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from autokd.search.executor import Executor

#: Where each public name lives; imported on first use, so that ``autokd report`` (which opens a
#: study through :mod:`autokd.search.study`) does not import torch through the executors.
_HOMES = {"Executor": "executor", "run_search": "executor", "LocalExecutor": "local", "open_storage": "storage",
          "redact_url": "storage", "finished_count": "study", "open_study": "study", "enqueue_lines": "warmstart"}

__all__ = ["Executor", "LocalExecutor", "enqueue_lines", "finished_count", "make_executor", "open_storage", "open_study",
           "redact_url", "run_search"]


def make_executor(kind: str) -> Executor:
    """The executor named by a study's ``executor.kind``; Ray is imported only when asked for."""
    if kind == "ray":
        from autokd.search.ray_executor import RayExecutor

        return RayExecutor()
    from autokd.search.local import LocalExecutor

    return LocalExecutor()


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"autokd.search.{_HOMES[name]}"), name)
    raise AttributeError(f"module 'autokd.search' has no attribute {name!r}")
