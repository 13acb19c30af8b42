"""Early stopping as both executors' drivers apply it: the study's finished trials read from storage,
the rule itself pure (:func:`autokd.early_stop.stop_reason`).

After each epoch of a trial the driver calls :meth:`EarlyStopping.after_epoch`: the epoch's
validation accuracy joins the trial's stored curve (always, so finished trials have curves to be
compared with), and when ``early_stopping`` is on the rule judges the trial against the study's
COMPLETE trials. The trial's costs are those of its untrained student, counted once (params, bytes,
MACs) and recorded; its latency is timed only when the rule would stop it on the other costs alone
(a latency timing costs about a second; the rule can only stop fewer trials once latency joins).
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import TrialState

from autokd.config import COMMITTEE_KINDS, StudyConfig, TrialConfig
from autokd.early_stop import COST_OBJECTIVES, EarlyStopRule, Finished, stop_reason
from autokd.record import (record_costs_before_training, record_curve, trial_accuracy, trial_curve, trial_figures,
                           trial_kind)
from autokd.trial import costs_are_final

#: ``costs(config, timed)``: the untrained student's costs, its latency too when ``timed``.
CostProbe = Callable[[TrialConfig, bool], dict[str, Any]]


def finished_trials(study: optuna.Study, cost_names: list[str]) -> list[Finished]:
    """The study's COMPLETE single-student trials with a stored curve, as the rule sees them: the costs that
    place them on the front (their final figures) and their final validation accuracy."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        figures = trial_figures(t)
        curve = trial_curve(t)
        if not curve or trial_kind(figures) in COMMITTEE_KINDS:
            continue
        costs = {name: float(figures[name]) for name in cost_names if figures.get(name) is not None}
        out.append(Finished(t.number, costs, curve, trial_accuracy(t)))
    return out


class EarlyStopping:
    """One study's early stopping (``early_stopping`` in the study file), for one driver.

    ``probe`` measures a trial's untrained student (None: nothing is judged, curves are still stored).
    """

    def __init__(self, study: optuna.Study, study_cfg: StudyConfig, probe: CostProbe | None,
                 rule: EarlyStopRule = EarlyStopRule()):
        self.study, self.probe, self.rule = study, probe, rule
        self.on = bool(study_cfg.early_stopping) and probe is not None and "accuracy" in study_cfg.objectives
        self.directions = {o: d for o, d in zip(study_cfg.objectives, study_cfg.directions) if o in COST_OBJECTIVES}
        self._curves: dict[int, list[float | None]] = {}
        self._costs: dict[int, dict[str, float]] = {}

    def after_epoch(self, trial: optuna.Trial, config: TrialConfig, epoch: int, epochs: int,
                    accuracy: float | None) -> str | None:
        """Record epoch ``epoch``'s (0-based) validation accuracy; why the trial should stop now, or None."""
        curve = self._curves.setdefault(trial.number, [])
        curve.extend([None] * (epoch + 1 - len(curve)))  # a resumed trial starts past epoch 0
        curve[epoch] = accuracy
        del curve[epoch + 1:]
        record_curve(trial, curve)
        if not self.on or accuracy is None or not costs_are_final(config):
            return None
        done = finished_trials(self.study, list(self.directions))
        costs = self._costs.get(trial.number)
        if costs is None:
            costs = self._measure(trial, config, timed=False)
        timed = "latency_ms" in self.directions and "latency_ms" not in costs
        # Untimed, latency counts as the highest: every finished trial is no slower, the most the rule could stop.
        probe = {**costs, "latency_ms": float("inf")} if timed else costs
        reason = stop_reason(probe, curve, epochs, done, self.directions, self.rule)
        if reason is not None and timed:
            reason = stop_reason(self._measure(trial, config, timed=True), curve, epochs, done, self.directions,
                                 self.rule)
        return reason

    def forget(self, number: int) -> None:
        """Drop what is kept in memory about a trial that was told."""
        self._curves.pop(number, None)
        self._costs.pop(number, None)

    def _measure(self, trial: optuna.Trial, config: TrialConfig, *, timed: bool) -> dict[str, float]:
        assert self.probe is not None
        measured = self.probe(config, timed)
        costs = {k: float(measured[k]) for k in COST_OBJECTIVES if measured.get(k) is not None}
        self._costs[trial.number] = costs
        record_costs_before_training(trial, costs)
        return costs


def cost_probe(context: Any) -> CostProbe | None:
    """The probe of a trial context's data and latency settings (None without a context)."""
    if context is None:
        return None
    from autokd.trial import costs_before_training

    return lambda config, timed: costs_before_training(config, context.data, context.latency if timed else None)


def early_stopping_of(study: optuna.Study, study_cfg: StudyConfig, context: Any) -> EarlyStopping:
    return EarlyStopping(study, study_cfg, cost_probe(context))
