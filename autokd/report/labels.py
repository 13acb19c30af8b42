"""Trial numbers drawn beside their own markers on a plot, where they cover no marker and no other label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class PointLabel:
    """A label to draw beside one marker: its text, the marker's data position and radius (points)."""

    text: str
    x: float
    y: float
    radius: float
    color: str = "0.25"
    priority: int = 1  # lower first: it gets the free places next to its marker


#: Where a label may sit around its marker, in order of preference: right, up-right, up, ... (x, y signs).
_DIRECTIONS = ((1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1), (-1, 0), (0, 1), (0, -1))


#: Gaps (points) between a marker's edge and its label: the first ring beside it, the others further out on
#: a leader line.
_GAPS = (1.5, 7.0, 13.0, 20.0, 28.0, 38.0)


def place_labels(ax: Any, labels: list[PointLabel], fontsize: float = 7) -> list[Any]:
    """Draw each label beside its own marker, where it covers no marker and no other label.

    Labels are placed one at a time (``priority`` first) at the cheapest spot of rings around their
    marker: covering a marker or a label costs most, then lying nearer another marker than its
    own, leaving the axes, and distance. A label that had to move out of the first ring gets a thin
    leader line to its marker. Call after the figure's layout is final (positions are in pixels).
    Returns the annotations, in the order of ``labels``.
    """
    import numpy as np

    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    px = fig.dpi / 72.0  # pixels per point
    centres = np.array([ax.transData.transform((lab.x, lab.y)) for lab in labels]).reshape(-1, 2)
    radii = np.array([lab.radius * px for lab in labels])
    markers = np.column_stack([centres - radii[:, None], centres + radii[:, None]])  # (x0, y0, x1, y1) each
    frame = ax.get_window_extent(renderer)
    frame_box = np.array([[frame.x0, frame.y0, frame.x1, frame.y1]])
    placed = np.empty((0, 4))  # the labels drawn so far, pixels
    # Every spot around a marker: ring by ring, each direction in order of preference.
    rings = np.repeat(np.arange(len(_GAPS)), len(_DIRECTIONS))
    gaps = np.repeat(np.array(_GAPS), len(_DIRECTIONS)) * px
    ux, uy = np.tile(np.array(_DIRECTIONS, dtype=float).T, len(_GAPS))
    slant = np.where((ux != 0) & (uy != 0), 0.72, 1.0)
    preference = np.tile(np.arange(len(_DIRECTIONS)), len(_GAPS))
    drawn: list[Any] = [None] * len(labels)

    def overlaps(spots: Any, others: Any) -> Any:
        """Area each spot (S, 4) shares with each of ``others`` (O, 4), summed over them: (S,)."""
        width = np.minimum(spots[:, None, 2], others[None, :, 2]) - np.maximum(spots[:, None, 0], others[None, :, 0])
        height = np.minimum(spots[:, None, 3], others[None, :, 3]) - np.maximum(spots[:, None, 1], others[None, :, 1])
        return (np.clip(width, 0, None) * np.clip(height, 0, None)).sum(axis=1)

    for i in sorted(range(len(labels)), key=lambda k: (labels[k].priority, k)):
        lab, (cx, cy), r = labels[i], centres[i], radii[i]
        probe = ax.text(0, 0, lab.text, fontsize=fontsize)
        extent = probe.get_window_extent(renderer)
        probe.remove()
        w, h = extent.width, extent.height
        area = max(w * h, 1.0)
        mx = cx + ux * ((r + gaps) * slant + w / 2)
        my = cy + uy * ((r + gaps) * slant + h / 2)
        spots = np.column_stack([mx - w / 2, my - h / 2, mx + w / 2, my + h / 2])
        # From each spot to each marker's edge (0 inside it): a label nearer another marker than its own is ambiguous.
        x, y = centres[None, :, 0], centres[None, :, 1]
        dx = np.clip(np.maximum(spots[:, None, 0] - x, x - spots[:, None, 2]), 0, None)
        dy = np.clip(np.maximum(spots[:, None, 1] - y, y - spots[:, None, 3]), 0, None)
        near = np.clip(np.hypot(dx, dy) - radii[None, :], 0, None)
        own = near[:, i].copy()
        near[:, i] = np.inf
        others = np.delete(markers, i, axis=0)
        covered = overlaps(spots, placed) + overlaps(spots, others)
        outside = area - overlaps(spots, frame_box)
        ambiguous = near.min(axis=1, initial=np.inf) < own + 1.0
        cost = 40.0 * covered / area + 8.0 * ambiguous + 3.0 * outside / area + 1.5 * rings + 0.05 * preference
        best = int(np.argmin(cost))
        box = spots[best]
        placed = np.vstack([placed, box])
        leader = dict(arrowstyle="-", color=lab.color, lw=0.6, alpha=0.8, shrinkA=0, shrinkB=lab.radius + 0.5) \
            if rings[best] > 0 else None
        drawn[i] = ax.annotate(lab.text, (lab.x, lab.y), xytext=((box[0] - cx) / px, (box[1] - cy) / px),
                               textcoords="offset points", ha="left", va="bottom", fontsize=fontsize,
                               color=lab.color, zorder=5, annotation_clip=False, arrowprops=leader)
    return drawn
