"""Start-up trials spread over the cost axis: TPE's first proposals, chosen by what they cost.

TPE starts with ``n_startup_trials`` random proposals. A front of accuracy against cost needs
students along the whole cost axis, and random configurations land unevenly on it (the space's knobs
are not its cost). Every cost a front is made of but latency is known before training, so each
start-up proposal is drawn from a pool of random configurations: the one whose cost lies farthest
(in log cost) from every trial the study already holds or runs, the cheapest first. The rest of
the configuration (distillation, training) is random as before.

Applies while the study holds fewer than ``n_startup_trials`` trials (finished or running, as TPE's
constant liar counts them), to studies with a cost objective and to spaces whose proposals' costs are
final before training (single uncompressed students); anywhere else the start-up stays random. A
candidate over a cost constraint on params, size or MACs never enters the pool (latency constraints
are checked on the chosen proposal alone, as on any other: timing every candidate would cost seconds).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import optuna
from optuna.trial import TrialState

from autokd.config import CONSTRAINTS, StudyConfig, TrialConfig
from autokd.early_stop import COST_OBJECTIVES
from autokd.search.early_stopping import CostProbe
from autokd.trial import costs_are_final

if TYPE_CHECKING:
    from autokd.space import SearchSpace

#: Random configurations each start-up proposal is chosen from.
POOL = 32
#: The costs spread over, in order of preference: the study's first cost objective among these.
SPREAD_COSTS = ("params", "size_bytes", "macs")


def spread_cost(study_cfg: StudyConfig) -> str:
    """The cost the start-up spreads over: the first of the study's objectives in :data:`SPREAD_COSTS`, else
    MACs (a study whose only cost is latency: its best predictor known before training)."""
    return next((o for o in study_cfg.objectives if o in SPREAD_COSTS), "macs")


class CostSpread:
    """Chooses the start-up proposals of one driver's TPE study (module docstring)."""

    def __init__(self, study_cfg: StudyConfig, space: SearchSpace, probe: CostProbe):
        self.study_cfg, self.space, self.probe = study_cfg, space, probe
        self.cost = spread_cost(study_cfg)
        # bounds a candidate's untimed costs must meet: (metric, "max" or "min", bound)
        self.bounds = [(*CONSTRAINTS[key], bound) for key, bound in study_cfg.constraints.items()
                       if CONSTRAINTS[key][0] in SPREAD_COSTS]
        self._costs: dict[str, dict[str, float]] = {}  # student spec -> untimed costs (the student's alone)

    def applies(self, study: optuna.Study) -> bool:
        cfg = self.study_cfg
        if cfg.sampler != "tpe" or cfg.startup != "spread" or not set(cfg.objectives) & set(COST_OBJECTIVES):
            return False
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        trials = study.get_trials(deepcopy=False, states=states)
        if any(t.state == TrialState.WAITING for t in trials):
            return False  # an enqueued trial comes next: its values are fixed already
        return len(trials) < self.study_cfg.startup_trials

    def choose(self, study: optuna.Study, seed: int, students: Sequence[Any] = ()) -> dict[str, Any] | None:
        """The parameters of the next start-up proposal, or None when the start-up is over or stays random."""
        if not self.applies(study):
            return None
        pool = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        candidates: list[tuple[float, dict[str, Any]]] = []
        for _ in range(POOL):
            trial = pool.ask()
            config = self.space.suggest(trial, students)
            if not costs_are_final(config):
                return None  # committees and compressed students cost what training makes of them
            if self.within_bounds(config):
                candidates.append((self.log_cost(config), dict(trial.params)))
        if not candidates:
            return None
        held = self._held_log_costs(study, students)
        if not held:
            return min(candidates, key=lambda c: c[0])[1]
        return max(candidates, key=lambda c: min(abs(c[0] - h) for h in held))[1]

    def costs(self, config: TrialConfig) -> dict[str, float]:
        key = repr(config.student)
        if key not in self._costs:
            measured = self.probe(config, False)
            self._costs[key] = {k: float(measured[k]) for k in SPREAD_COSTS}
        return self._costs[key]

    def log_cost(self, config: TrialConfig) -> float:
        return math.log10(max(self.costs(config)[self.cost], 1.0))

    def within_bounds(self, config: TrialConfig) -> bool:
        costs = self.costs(config)
        return all(costs[metric] <= bound if kind == "max" else costs[metric] >= bound
                   for metric, kind, bound in self.bounds)

    def _held_log_costs(self, study: optuna.Study, students: Sequence[Any]) -> list[float]:
        """Log costs of the trials the study holds or runs (a trial from another space is skipped)."""
        held = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
            try:
                config = self.space.replay(t.params, students)
            except (ValueError, KeyError, TypeError):
                continue
            if costs_are_final(config):
                held.append(self.log_cost(config))
        return held
