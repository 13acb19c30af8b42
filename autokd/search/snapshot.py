"""The study's settings as written beside it: ``OUTPUT/study.yaml``, resolved and without a password."""

from __future__ import annotations

from pathlib import Path

from autokd.files import write_atomically
from autokd.config import StudyConfig
from autokd.search.storage import strip_password

SNAPSHOT_FILE = "study.yaml"


def snapshot_yaml(cfg: StudyConfig) -> str:
    """The resolved study as YAML, its storage URL without a password."""
    return cfg.model_copy(update={"storage": strip_password(cfg.storage)}).to_yaml()


def write_snapshot(cfg: StudyConfig) -> Path:
    """``OUTPUT/study.yaml``: the resolved study, written atomically and without the storage password.

    Running ``autokd search OUTPUT`` again finds the password where it came from: ``AUTOKD_STORAGE``,
    ``~/.pgpass`` or ``PGPASSWORD`` (a password typed in ``--storage`` must be given again).
    """
    return write_atomically(cfg.output_dir / SNAPSHOT_FILE, snapshot_yaml(cfg).encode())


def study_settings(cfg: StudyConfig) -> str:
    """The study's ``study.yaml`` as written beside it (password-free); rebuilt the same way if missing."""
    snapshot = cfg.output_dir / SNAPSHOT_FILE
    return snapshot.read_text() if snapshot.is_file() else snapshot_yaml(cfg)
