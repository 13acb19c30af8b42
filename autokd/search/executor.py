"""Where trials run: one protocol, two executors (in-process and Ray Tune), one way to drive them.

:func:`run_search` is what ``autokd search`` calls; it does not know which executor it has.
Around every executor it holds the study (one driver per SQLite file), reclaims the trials of
drivers that died (re-enqueued to resume from their last epoch checkpoint), stops when the
study's budget is already spent, and prepares the shared context (data, teacher) once. The
executor then takes each trial through the same lifecycle (:mod:`autokd.search.lifecycle`):
proposals that never repeat a configuration, the study-wide budget, a claimed and heartbeated
RUNNING trial with an epoch checkpoint in :func:`~autokd.search.study.trial_dir`, and on Ctrl-C
the running trials told FAIL and re-enqueued (exit 130).
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, ContextManager, Protocol

import optuna
from rich.console import Console
from rich.text import Text
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from autokd.config import StudyConfig
from autokd.space import SearchSpace
from autokd.readout import format_objective, trial_line
from autokd.record import stored_objectives
from autokd.search.study import finished_count, reclaim_stale_trials, single_sqlite_driver


def best_of_each(trials: list[optuna.trial.FrozenTrial], objectives: list[str],
                 directions: list[optuna.study.StudyDirection]) -> str:
    """The best value of each objective over the COMPLETE ``trials``, naming the trial each comes from.

    ``best: trial 3 (accuracy 97.22%, params 4.66k)`` when one trial holds every best, else
    ``best of each objective, from different trials: accuracy 100.00% (trial 15), params 4.66k (trial 3)``.
    Ties go to the earliest trial.
    """
    done = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values), key=lambda t: t.number)
    if not done:
        return ""
    signs = [1.0 if d == optuna.study.StudyDirection.MAXIMIZE else -1.0 for d in directions]
    best = [max(done, key=lambda t, i=i: (signs[i] * t.values[i], -t.number)) for i in range(len(objectives))]
    values = [format_objective(name, t.values[i]) for i, (name, t) in enumerate(zip(objectives, best))]
    holders = [t for t in done if all(signs[i] * t.values[i] >= signs[i] * b.values[i] for i, b in enumerate(best))]
    if holders:
        figures = ", ".join(f"{name} {value}" for name, value in zip(objectives, values))
        return f"best: trial {holders[0].number} ({figures})"
    cells = ", ".join(f"{name} {value} (trial {t.number})" for name, value, t in zip(objectives, values, best))
    return f"best of each objective, from different trials: {cells}"


class _BarsAndBest(Progress):
    """The progress bars with one line of text under them, wrapped to the terminal between its items."""

    best = ""

    def get_renderables(self) -> Any:
        yield from super().get_renderables()
        if self.best:
            yield Text(self.best)


class SearchProgress:
    """The study's progress bar: finished trials of the budget, elapsed time (of the trials: the teacher
    comes before) and ETA; while a trial trains, a second bar shows its epochs; under the bars, the best
    so far on each objective and the trial it comes from. Each told trial also prints one line.
    """

    def __init__(self, study: optuna.Study, study_cfg: StudyConfig, console: Console, label: str):
        self.study, self.console = study, console
        self.bar = _BarsAndBest(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                TextColumn("{task.fields[info]}"), console=console)
        self.objectives = list(stored_objectives(study) or study_cfg.objectives)
        self.trials = self.bar.add_task(label, total=study_cfg.n_trials, completed=finished_count(study), info="")
        self.epochs: Any = None
        self.told: list[optuna.trial.FrozenTrial] = []
        self.bar.best = self._best()

    def _best(self) -> str:
        """:func:`best_of_each` over the COMPLETE trials of the study."""
        try:
            complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        except Exception:  # a database hiccup must not stop the search for the sake of a progress bar
            complete = self.told
        return best_of_each(complete, self.objectives, self.study.directions)

    def __enter__(self) -> "SearchProgress":
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.__exit__(*exc)

    def epoch(self, number: int, epoch: int, epochs: int, accuracy: float | None) -> None:
        if self.epochs is None:
            self.epochs = self.bar.add_task("epochs", total=epochs, info="")
        info = f"val acc {100 * accuracy:.1f}%" if accuracy is not None else ""
        self.bar.update(self.epochs, description=f"trial {number}", completed=epoch + 1, total=epochs, info=info)

    def told_trial(self, trial: optuna.trial.FrozenTrial) -> None:
        self.told.append(trial)
        self.bar.best = self._best()
        self.bar.update(self.trials, completed=finished_count(self.study))
        self.note(trial_line(trial))

    def note(self, line: str) -> None:
        self.bar.console.print(line, markup=False, highlight=False, soft_wrap=True)


class Executor(Protocol):
    """Runs trials of a prepared study until its budget is spent; returns the trials it told."""

    label: str

    def session(self, study_cfg: StudyConfig) -> ContextManager[None]:
        """What the executor holds for a whole search (Ray), begun before the teacher is prepared."""

    def run(self, study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, context: Any,
            progress: SearchProgress) -> list[optuna.trial.FrozenTrial]: ...


def run_search(study: optuna.Study, study_cfg: StudyConfig, space: SearchSpace, executor: Executor, *,
               console: Console, prepare: Callable[[], Any] | None = None) -> list[optuna.trial.FrozenTrial]:
    """Drive one search of ``study`` with ``executor``; returns the trials this driver told.

    ``prepare()`` (the CLI's data and teacher, trained once) runs only when there is work to do;
    its result is handed to the executor as the trials' shared context.
    """
    # Both executors ask and tell outside Study.optimize; the heartbeat is this layer's job
    # (autokd.search.lifecycle.Heartbeat).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    with single_sqlite_driver(study_cfg):
        reclaimed = reclaim_stale_trials(study, study_cfg)
        if reclaimed:
            console.print(f"re-enqueued {len(reclaimed)} trial(s) left RUNNING by a driver that died: "
                          f"{', '.join(map(str, reclaimed))}")
        if study_cfg.n_trials is not None and finished_count(study) >= study_cfg.n_trials:
            console.print(f"study '{study_cfg.name}' already holds {finished_count(study)} finished trials "
                          f"(budget {study_cfg.n_trials}); nothing to run")
            return []
        with executor.session(study_cfg):
            context = prepare() if prepare is not None else None
            with SearchProgress(study, study_cfg, console, executor.label) as progress:
                told = executor.run(study, study_cfg, space, context, progress)
        retime_after_search(study, study_cfg, told, console)
        return told


def retime_after_search(study: optuna.Study, study_cfg: StudyConfig, told: list[optuna.trial.FrozenTrial],
                        console: Console) -> None:
    """After the last trial, the front's members timed again together (:mod:`autokd.search.retime`) when
    ``retime_front`` is on and this run finished a trial; a re-timing that fails is a warning line, the
    search's outcome stands."""
    if not study_cfg.retime_front or not any(t.state == optuna.trial.TrialState.COMPLETE for t in told):
        return
    from autokd.errors import AutokdError
    from autokd.search.retime import retime_front, retime_line

    try:
        retiming = retime_front(study, study_cfg, trigger="search")
    except AutokdError as err:
        console.print(f"warning: {err.problem}; the trials' own latencies stand ({err.fix})", markup=False,
                      highlight=False, soft_wrap=True)
        return
    if retiming is not None:
        console.print(retime_line(retiming), markup=False, highlight=False, soft_wrap=True)

