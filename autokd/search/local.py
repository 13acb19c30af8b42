"""The in-process executor: Optuna's ``study.optimize`` calling ``run_trial`` one trial at a time."""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from optuna.study import MaxTrialsCallback

from autokd.config import SearchSpace, StudyConfig, TrialConfig
from autokd.search.study import FINISHED, finished_count, record_metrics
from autokd.trial import TrialContext, run_trial

#: Failures that end one trial as FAIL and let the study go on (a diverged student, a shape
#: a family cannot take). Anything else stops the search.
TRIAL_FAILURES = (FloatingPointError, RuntimeError, ValueError)


def artifact_store(study_cfg: StudyConfig) -> FileSystemArtifactStore:
    path = study_cfg.output_dir / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def make_objective(study_cfg: StudyConfig, space: SearchSpace, context: TrialContext,
                   on_epoch: Callable[[optuna.Trial, int, dict], None] | None = None
                   ) -> Callable[[optuna.Trial], list[float]]:
    store = artifact_store(study_cfg)

    def objective(trial: optuna.Trial) -> list[float]:
        config = space.suggest(trial)
        trial.set_user_attr("config", config.to_params())
        trial.set_user_attr("architecture", config.describe())
        trial.set_user_attr("teacher_accuracy", context.teacher_summary.get("accuracy"))

        def epoch_hook(epoch: int, metrics: dict[str, Any]) -> None:
            if len(study_cfg.objectives) == 1 and "accuracy" in metrics:  # Optuna keeps curves of 1-objective studies only
                trial.report(metrics["accuracy"], epoch)
            if on_epoch is not None:
                on_epoch(trial, epoch, metrics | {"epochs": config.train.epochs})

        work_dir = study_cfg.output_dir / "trials" / f"{trial.number:05d}"
        metrics = run_trial(config, context, work_dir=work_dir, on_epoch=epoch_hook)
        values = record_metrics(trial, metrics, study_cfg)
        artifact_id = upload_artifact(artifact_store=store, file_path=metrics["weights_path"], study_or_trial=trial)
        trial.set_user_attr("weights_artifact", artifact_id)
        return values

    return objective


def run_local(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: TrialContext, *,
              on_epoch: Callable[[optuna.Trial, int, dict], None] | None = None,
              on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> int:
    """Run trials until the study holds ``n_trials`` finished ones (or ``timeout``); returns how many ran."""
    remaining = None if study_cfg.n_trials is None else max(0, study_cfg.n_trials - finished_count(study))
    if remaining == 0:
        return 0
    callbacks = [on_trial_end] if on_trial_end else []
    if study_cfg.n_trials is not None:
        # Several drivers may share the study: stop when the *study* reaches its budget.
        callbacks.append(MaxTrialsCallback(study_cfg.n_trials, states=FINISHED))
    before = len(study.get_trials(deepcopy=False))
    study.optimize(make_objective(study_cfg, space, context, on_epoch), n_trials=remaining,
                   timeout=study_cfg.timeout, callbacks=callbacks, catch=TRIAL_FAILURES, gc_after_trial=False)
    return len(study.get_trials(deepcopy=False)) - before


def replay(params: dict[str, Any], space: SearchSpace) -> TrialConfig:
    """Rebuild a trial's config from stored params alone (``FixedTrial``: no study, no database)."""
    return space.suggest(optuna.trial.FixedTrial(params))
