"""Cost-aware early stopping for a multi-objective study: a pure rule over validation curves.

Every cost objective of an uncompressed single student (params, bytes, MACs, latency) is fixed by
its architecture, so it is known before the student trains. At the end of epoch ``k`` a running
trial is compared with the study's finished (COMPLETE) trials that cost no more on *every* cost
objective. It is stopped when some of them

* were more accurate at epoch ``k`` than it is now by more than ``margin`` (the *curve* test), and
* ended at least as accurate as the most it could plausibly still reach: its accuracy now plus the
  largest gain any finished trial made from epoch ``k`` to its end (the *reach* test).

Such a trial would end dominated (no cheaper, no more accurate than those trials), so it cannot
reach the front at its cost. The rule acts only from ``first_fraction`` of the epochs on, never at
the last epoch, and only once the study holds ``min_finished`` finished trials whose curves reach
epoch ``k`` (the reach test's gain is estimated from them). It reads validation curves only: the
test split never decides anything (docs/methodology.md).

Example:
    >>> done = [Finished(3, {"params": 4100.0}, (0.50, 0.80, 0.90, 0.91), 0.93),
    ...         Finished(4, {"params": 9000.0}, (0.40, 0.70, 0.85, 0.90), 0.92)]
    >>> stop_reason({"params": 9800.0}, (0.10, 0.11), 4, done, {"params": "minimize"}, EarlyStopRule(min_finished=2))
    'trial 3 (params 4.10k <= 9.80k, accuracy at epoch 2 80.00% vs 11.00%), trial 4 (params 9.00k <= 9.80k, \
accuracy at epoch 2 70.00% vs 11.00%): each ended at least 92.00%, above the 33.00% this trial could reach'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

#: The figures a network's architecture alone fixes (as :data:`autokd.trial.COSTS`).
COST_OBJECTIVES = ("params", "size_bytes", "macs", "latency_ms")
#: How many dominating trials a reason names before ``and N more``.
NAMED = 3


@dataclass(frozen=True)
class EarlyStopRule:
    """The rule's settings (measured in bench/early_stopping.py; docs/methodology.md).

    ``margin``: accuracy (a fraction) a cheaper trial must lead by at the same epoch;
    ``first_fraction``: the first epoch the rule may act at, as a share of the trial's epochs;
    ``min_finished``: finished trials whose curves reach that epoch, before the rule acts at all.
    """

    margin: float = 0.05
    first_fraction: float = 0.34
    min_finished: int = 3

    def first_epoch(self, epochs: int) -> int:
        """The first epoch (1-based) the rule may stop a trial of ``epochs`` epochs at."""
        return max(1, math.ceil(self.first_fraction * epochs))


@dataclass(frozen=True)
class Finished:
    """A finished trial as the rule sees it: its costs, validation curve (one accuracy per epoch,
    ``None`` where unknown) and final (objective) accuracy."""

    number: int
    costs: Mapping[str, float]
    curve: Sequence[float | None]
    final: float


def no_costlier(other: Mapping[str, float], costs: Mapping[str, float], directions: Mapping[str, str]) -> bool:
    """True when ``other`` costs no more than ``costs`` on every cost objective in ``directions``."""
    for name, direction in directions.items():
        if name not in other or name not in costs:
            return False
        if (other[name] > costs[name]) if direction == "minimize" else (other[name] < costs[name]):
            return False
    return True


def stop_reason(costs: Mapping[str, float], curve: Sequence[float], epochs: int, finished: Sequence[Finished],
                directions: Mapping[str, str], rule: EarlyStopRule = EarlyStopRule()) -> str | None:
    """Why a running trial should stop now (naming the trials that dominate it), or None to go on.

    ``costs``: the trial's cost objectives before training; ``curve``: its validation accuracy after
    each epoch so far (epoch ``k = len(curve)`` just ended) of ``epochs``; ``finished``: the study's
    COMPLETE trials; ``directions``: the study's cost objectives and their directions (empty in an
    accuracy-only study: every finished trial is then comparable).
    """
    k = len(curve)
    if k == 0 or k >= epochs or k < rule.first_epoch(epochs) or curve[-1] is None:
        return None
    now = float(curve[-1])
    reached = [f for f in finished if len(f.curve) >= k and f.curve[k - 1] is not None]
    if len(reached) < rule.min_finished:
        return None
    reach = min(1.0, now + max([0.0, *(f.final - f.curve[k - 1] for f in reached)]))
    beaten = [f for f in reached if no_costlier(f.costs, costs, directions)
              and f.curve[k - 1] - now > rule.margin and f.final >= reach]
    if not beaten:
        return None
    beaten.sort(key=lambda f: -f.final)
    named = ", ".join(_evidence(f, costs, directions, k, now) for f in beaten[:NAMED])
    more = f" and {len(beaten) - NAMED} more" if len(beaten) > NAMED else ""
    lowest = min(f.final for f in beaten)
    return (f"{named}{more}: each ended at least {_pct(lowest)}, above the {_pct(reach)} this trial could reach")


def _evidence(f: Finished, costs: Mapping[str, float], directions: Mapping[str, str], k: int, now: float) -> str:
    from autokd.readout import format_objective

    compared = ", ".join(f"{name} {format_objective(name, f.costs[name])} {'<=' if d == 'minimize' else '>='} "
                         f"{format_objective(name, costs[name])}" for name, d in directions.items())
    accuracy = f"accuracy at epoch {k} {_pct(f.curve[k - 1])} vs {_pct(now)}"
    return f"trial {f.number} ({compared + ', ' if compared else ''}{accuracy})"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def replay(trials: Sequence[Finished], epochs_of: Mapping[int, int], directions: Mapping[str, str],
           rule: EarlyStopRule = EarlyStopRule()) -> dict[int, tuple[int, str]]:
    """Apply the rule offline to trials that all trained to the end, in the order given (one at a time,
    as the local executor runs them): each is judged after every epoch against the earlier trials the
    rule let finish. Returns ``{number: (epoch it would have stopped at, reason)}``.
    """
    stopped: dict[int, tuple[int, str]] = {}
    done: list[Finished] = []
    for t in trials:
        epochs = epochs_of.get(t.number, len(t.curve))
        for k in range(1, len(t.curve) + 1):
            reason = stop_reason(t.costs, t.curve[:k], epochs, done, directions, rule)
            if reason is not None:
                stopped[t.number] = (k, reason)
                break
        else:
            done.append(t)
    return stopped
