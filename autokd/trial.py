"""One trial, executor-agnostic: ``run_trial(config, context) -> metrics``.

Stages, in order: build the student -> distill from the teacher -> compress -> measure -> save.
Each stage is a plain function of the previous stage's output, so later capabilities (pairs with
a selector, new compression methods) are new stages, and executors (in-process, Ray Tune) only
decide where this function runs. Nothing here knows about Optuna storage or Ray.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any, Callable

from torch import nn

from autokd.checkpoint import EpochCheckpointer, save_checkpoint
from autokd.compress import checkpoint_entry, compress_model
from autokd.compress_rules import check_spec
from autokd.config import TrialConfig
from autokd.context import TrialContext, build_student, distill_student
from autokd.measure import environment, measure_model
from autokd.committee import COMMITTEE_KINDS, run_committee_trial

#: Failures that end one trial as FAIL and let the study go on (a diverged student, a shape a
#: family cannot take). Anything else stops the search.
TRIAL_FAILURES = (FloatingPointError, RuntimeError, ValueError)
#: Where a failed trial's traceback goes, inside its folder.
TRIAL_LOG = "trial.log"


def record_failure(work_dir: Path, err: BaseException) -> tuple[str, Path]:
    """Write ``err``'s traceback to the trial's log; returns (its one-line reason, the log path)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / TRIAL_LOG
    with open(log, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} trial failed\n")
        f.write("".join(traceback.format_exception(err)))
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300], log


def run_trial(config: TrialConfig, context: TrialContext, *, work_dir: Path,
              on_epoch: Callable[[int, dict], None] | None = None,
              checkpointer: EpochCheckpointer | None = None, resume_from: Path | None = None) -> dict[str, Any]:
    """Train, compress and measure one student; returns every figure plus where its weights are.

    ``on_epoch(epoch, metrics)`` sees each epoch's loss and validation accuracy and may raise to
    stop the trial. ``checkpointer`` keeps the last finished epoch; ``resume_from`` (a file it
    wrote) continues from there. Committee trials (pairs, cascades) have no epoch
    checkpoints: they start over.
    """
    if config.kind in COMMITTEE_KINDS:
        return run_committee_trial(config, context, work_dir=work_dir, on_epoch=on_epoch)
    started = time.perf_counter()
    if config.compress.method != "none":  # a setting that cannot compress fails before training
        check_spec(config.compress)
    model = build_student(config, context.data).to(context.device)
    resume = None
    if resume_from is not None and resume_from.exists():
        resume = EpochCheckpointer.load(resume_from, context.device)
        model.load_state_dict(resume["model"])
    start = getattr(model[-1], "weights_info", {})  # the weights file it started from: loaded and new tensors
    metrics: dict[str, Any] = {"kind": "single", "resumed_from_epoch": int(resume["epoch"]) if resume else 0, **start}
    metrics.update(distill_student(model, config, context, on_epoch, checkpointer, resume))
    model, compression = compress_stage(model, config, context)
    metrics.update(compression)
    metrics.update(measure_model(model, context))
    net, extra = (model[1] if isinstance(model, nn.Sequential) else model), {"kind": "single"}
    if metrics.get("compression", "none") != "none":  # recipe + compressed weights, see autokd.compress
        net, extra = nn.Module(), {"kind": "compressed", "compressed_module": checkpoint_entry(model, config.compress)}
    weights = save_checkpoint(work_dir / "student.pt", net,
                              family=config.student.family, knobs=config.student.knob_dict,
                              num_classes=context.data.num_classes, in_channels=context.data.channels,
                              image_size=context.data.image_size, mean=context.data.mean, std=context.data.std,
                              config=config.to_json(), accuracy=metrics["test_accuracy"],
                              validation_accuracy=metrics["validation_accuracy"],
                              **{k: start[k] for k in ("weights_file", "weights_sha256") if k in start}, **extra)
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), **environment(context.device))
    return metrics


def compress_stage(model: nn.Module, config: TrialConfig, context: TrialContext) -> tuple[nn.Module, dict]:
    """Compression after distillation; ``method='none'`` passes the student through untouched."""
    if config.compress.method == "none":
        return model, {"compression": "none"}
    return compress_model(model, config, context)
