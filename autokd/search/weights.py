"""A finished trial's weights file: on this disk, or downloaded from the study's artifact store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from autokd.config import StudyConfig
from autokd.errors import AutokdError
from autokd.files import atomic_path
from autokd.record import weights_artifact, weights_path
from autokd.search.study import trial_dir


def trial_weights(cfg: StudyConfig, optuna_study: Any, trial: int) -> tuple[Any, Path]:
    """A COMPLETE trial and its weights file (downloaded from the artifact store when not on this disk)."""
    trials = {t.number: t for t in optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    if trial not in trials:
        raise AutokdError(f"study '{cfg.name}' has no COMPLETE trial {trial}",
                          f"pick one of {', '.join(map(str, sorted(trials))) or '(none)'}")
    weights = Path(weights_path(trials[trial]))
    return trials[trial], weights if weights.exists() else download_weights(cfg, trials[trial])


def download_weights(cfg: StudyConfig, trial: Any) -> Path:
    """The trial's weights from the study's artifact store into its trial folder; a download cut short
    (a full disk) leaves no torn ``student.pt`` behind."""
    from optuna.artifacts import download_artifact

    from autokd.search.lifecycle import artifact_store

    artifact = weights_artifact(trial)
    if not artifact:
        raise AutokdError(f"trial {trial.number} has no stored weights", "re-run the trial")
    target = trial_dir(cfg, trial.number) / "student.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        download_artifact(artifact_store=artifact_store(cfg), file_path=str(tmp), artifact_id=artifact)
    return target
