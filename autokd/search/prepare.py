"""A study made ready for its trials: once the driver has built the trials' context (data, teacher),
the teacher's figures and the class names are stored on the study (measured once per teacher)."""

from __future__ import annotations

from typing import Any

from autokd.context import TrialContext
from autokd.measure import measure_model
from autokd.record import record_teacher, study_teacher


def store_teacher(study: Any, context: TrialContext) -> None:
    """Measure the context's teacher and store its figures on ``study``, unless this teacher's are already there."""
    summary = context.teacher_summary
    stored = study_teacher(study)
    if not stored or stored.get("id") != summary["id"]:
        figures = measure_model(context.teacher, context.validation, context.test, context.data.num_classes,
                                latency=context.latency, device=context.device)
        record_teacher(study, {**summary, **figures, "architecture": " + ".join(summary["members"])},
                       list(context.data.classes))
