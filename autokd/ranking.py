"""Rank agreement between two orderings of the same items, pure Python (no torch): the report
and the latency re-timing compare rankings with it."""

from __future__ import annotations


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Rank agreement of two orderings of the same items, in [-1, 1] (Kendall's tau-b: ties count for
    neither side). 1: the same order; 0: unrelated. NaN with fewer than two items or when either is all ties.

    Example:
        >>> kendall_tau([1.0, 2.0, 3.0], [10.0, 30.0, 20.0])
        0.3333333333333333
    """
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    n = concordant + discordant
    denominator = ((n + ties_a) * (n + ties_b)) ** 0.5
    return (concordant - discordant) / denominator if denominator else float("nan")
