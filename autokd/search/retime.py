"""Re-timing the front: its members timed again together, in one process, interleaved round-robin.

A trial's ``latency_ms`` is timed alone, when the trial ends; trials end minutes apart and a host's
speed drifts (1.3-2x over seconds on a shared 2-core machine), so the front's order by latency is
partly the order of the host's moments. After the last trial of a search (``retime_front``) and on
``autokd report --retime``, the front's members are rebuilt from their stored weights (as ``autokd
export`` loads them) and timed together, every member once per round in a shuffled order
(:func:`autokd.latency.interleaved_rounds`), with the study's backend, threads and batch; a member's
figure is its median over the rounds. Each re-timing is stored on the study
(:func:`autokd.record.record_retiming`) and kept; the trials' own figures, which the sampler saw,
stay as they were.

Example:
    >>> retiming = retime_front(optuna_study, cfg, trigger="report")
    >>> retiming["members"]["3"]["latency_ms"]
"""

from __future__ import annotations

import datetime as dt
import os
import statistics
import time
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from autokd.config import StudyConfig
from autokd.errors import AutokdError
from autokd.export import load_trial_model
from autokd.latency import interleaved_rounds, member_timers
from autokd.measure import cpu_model
from autokd.record import record_retiming, trial_figures, trial_kind
from autokd.search.weights import trial_weights

#: Why a committee on the front is not re-timed (its trial's figure is per input over a stream).
COMMITTEE_SKIPPED = "a committee: its latency is per input over a routed stream of validation images"


def front_members(study: optuna.Study) -> list[FrozenTrial]:
    """The trials a re-timing times: the Pareto-optimal, feasible COMPLETE trials on the study's objectives
    (Optuna's ``best_trials``, chosen on validation accuracy: the front the report shows), by number."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    return sorted(study.best_trials, key=lambda t: t.number)


def retime_front(study: optuna.Study, cfg: StudyConfig, *, trigger: str) -> dict[str, Any] | None:
    """Re-time the front's members together and store the re-timing on the study; returns it (None: no front).

    ``trigger`` (``search`` or ``report``) is stored with it. Committees on the front are left out,
    and say why (``skipped``). A member that cannot be loaded or timed raises :class:`AutokdError`
    (one line) before anything is stored.
    """
    front = front_members(study)
    if not front:
        return None
    singles = [t for t in front if trial_kind(trial_figures(t)) == "single"]
    skipped = {str(t.number): COMMITTEE_SKIPPED for t in front if trial_kind(trial_figures(t)) != "single"}
    models, examples = [], []
    for trial in singles:
        _, weights = trial_weights(cfg, study, trial.number)
        model, payload = load_trial_model(weights)
        models.append(model.cpu().eval())
        examples.append(_example(payload))
    settings, rounds = cfg.latency_settings, cfg.retime_rounds
    load = os.getloadavg()
    started = time.perf_counter()
    try:
        with member_timers(models, examples, settings, rounds) as timers:
            figures = interleaved_rounds([m.time for m in timers], rounds, seed=cfg.seed)
    except RuntimeError as err:  # a latency command failed, or a model has no ONNX file to hand it
        raise AutokdError(f"re-timing the front failed: {err}",
                          "fix the latency command (docs/latency.md), or set retime_front: false") from None
    members = {str(t.number): _member(t, ms, m.backend) for t, ms, m in zip(singles, figures, timers)}
    retiming = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"), "trigger": trigger,
                "backend": settings.backend, "threads": settings.threads, "batch": settings.batch, "rounds": rounds,
                "runs_per_round": settings.runs, "seconds_per_round": settings.min_seconds / rounds,
                "seconds": round(time.perf_counter() - started, 3), "cpu_model": cpu_model(),
                "load_average": [round(x, 2) for x in load], "members": members, "skipped": skipped}
    record_retiming(study, retiming)
    return retiming


def _example(payload: dict[str, Any]) -> torch.Tensor:
    """A seeded input of the trial's shape (1, C, S, S) in [0, 1]: latency does not depend on its values."""
    size = int(payload["image_size"])
    return torch.rand(1, int(payload["in_channels"]), size, size, generator=torch.Generator().manual_seed(0))


def _member(trial: FrozenTrial, rounds_ms: list[float], backend: str) -> dict[str, Any]:
    """One member's figures in a re-timing: the median over its rounds, its extremes, every round."""
    return {"latency_ms": statistics.median(rounds_ms), "min_ms": min(rounds_ms), "max_ms": max(rounds_ms),
            "rounds_ms": [round(ms, 6) for ms in rounds_ms], "backend": backend,
            "per_trial_ms": trial_figures(trial).get("latency_ms")}


def retime_line(retiming: dict[str, Any]) -> str:
    """One line on a re-timing, for the console: ``front re-timed together: 4 members, 15 interleaved rounds ...``."""
    n = len(retiming["members"])
    skipped = f"; {len(retiming['skipped'])} committee(s) left out" if retiming.get("skipped") else ""
    return (f"front re-timed together: {n} member{'s' * (n != 1)}, {retiming['rounds']} interleaved rounds "
            f"({retiming['backend']}, {retiming['threads']} thr, b{retiming['batch']}), {retiming['seconds']:.1f} s"
            f"{skipped}; the report's 're-timed ms' column")
