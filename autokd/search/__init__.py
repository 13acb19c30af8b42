"""The search layer: the only code that knows Optuna storage, SQLAlchemy and Ray.

``open_study`` is the one door to the database; executors (``local``, ``ray``) decide where
``autokd.trial.run_trial`` runs and record its metrics on the Optuna trial.
"""

from autokd.search.storage import open_storage, redact_url
from autokd.search.study import finished_count, open_study, record_metrics

__all__ = ["finished_count", "open_storage", "open_study", "record_metrics", "redact_url"]
