"""A study made ready for its trials: once the driver has built the trials' context (data, teacher),
the teacher's figures and the class names are stored on the study (measured once per teacher)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from autokd.context import TrialContext
from autokd.deployed import measure_model
from autokd.record import record_teacher, study_teacher


def store_teacher(study: Any, context: TrialContext) -> None:
    """Measure the context's teacher and store its figures on ``study``, unless this teacher's are already there."""
    summary = context.teacher_summary
    stored = study_teacher(study)
    if not stored or stored.get("id") != summary["id"]:
        measure = functools.partial(measure_model, context.teacher, context.validation, context.test,
                                    context.data.num_classes, device=context.device)
        try:  # timed as the students are, so the report compares like with like
            figures = measure(latency=context.latency)
        except RuntimeError:  # a teacher with no ONNX form (an ensemble, an ONNX file run by onnxruntime)
            figures = measure(latency=dataclasses.replace(context.latency, backend="torch"))
        record_teacher(study, {**summary, **figures, "architecture": " + ".join(summary["members"])},
                       list(context.data.classes))
