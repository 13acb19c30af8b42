"""One trial, executor-agnostic: ``run_trial(config, context) -> metrics``.

Stages, in order: build the student -> distill from the teacher -> compress -> measure -> save.
Each stage is a plain function of the previous stage's output, so later capabilities (pairs with
a selector, new compression methods) are new stages, and executors (in-process, Ray Tune) only
decide where this function runs. Nothing here knows about Optuna storage or Ray.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from autokd.checkpoint import deployable, save_checkpoint
from autokd.config import StudyConfig, TrialConfig
from autokd.data import ImageData, load_dataset
from autokd.distill import Teacher
from autokd.measure import (LatencySettings, accuracy, count_macs, count_params, environment, latency_stats,
                            per_class_accuracy, serialized_size_bytes)
from autokd.models import build_model
from autokd.train import AugmentPolicy, TeacherLogitCache, pick_device, predict, train_model

NO_FLIP_DATASETS = ("digits", "mnist", "svhn")
#: Failures that end one trial as FAIL and let the study go on (a diverged student, a shape a
#: family cannot take). Anything else stops the search.
TRIAL_FAILURES = (FloatingPointError, RuntimeError, ValueError)
#: Where a failed trial's traceback goes, inside its folder.
TRIAL_LOG = "trial.log"


def record_failure(work_dir: Path, err: BaseException) -> tuple[str, Path]:
    """Write ``err``'s traceback to the trial's log; returns (its one-line reason, the log path)."""
    import traceback

    work_dir.mkdir(parents=True, exist_ok=True)
    log = work_dir / TRIAL_LOG
    with open(log, "a") as f:
        f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} trial failed\n")
        f.write("".join(traceback.format_exception(err)))
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300], log


@dataclass
class TrialContext:
    """What every trial of a study shares: data on the device, the teacher, measurement settings.

    Students, selectors and fine-tuning train on ``train_*``; every objective and every choice
    (epoch curves, pruning, the sampler) reads ``val_*``; ``test_*`` is evaluated once per
    finished trial, for the report only.
    """

    data: ImageData
    device: torch.device
    teacher: Teacher | None
    teacher_summary: dict[str, Any]
    policy: AugmentPolicy
    cache_dir: Path | None
    latency: LatencySettings = LatencySettings()
    compile: bool = False

    def __post_init__(self) -> None:
        if not self.data.has_validation:
            raise ValueError("a trial context needs data with a validation split (ImageData.with_validation)")
        self.train_images = self.data.train_images.to(self.device)
        self.train_labels = self.data.train_labels.to(self.device)
        self.val_images = self.data.val_images.to(self.device)
        self.val_labels = self.data.val_labels.to(self.device)
        self.test_images = self.data.test_images.to(self.device)
        self.test_labels = self.data.test_labels.to(self.device)
        self._caches: dict[str, TeacherLogitCache] = {}

    def policy_for(self, mixup: bool) -> AugmentPolicy:
        """The study's augmentation schedule, with or without mixup (function matching uses it)."""
        return dataclasses.replace(self.policy, mixup=mixup)

    def logit_cache(self, mixup: bool) -> TeacherLogitCache | None:
        if self.teacher is None:
            return None
        policy = self.policy_for(mixup)
        key = policy.key()
        if key not in self._caches:
            self._caches[key] = TeacherLogitCache(self.teacher, self.train_images, policy,
                                                  self.teacher_summary.get("id", "teacher"), self.cache_dir)
        return self._caches[key]


def augment_policy(study: StudyConfig, data: ImageData) -> AugmentPolicy:
    pad = study.augment.crop_pad if study.augment.crop_pad is not None else max(1, data.image_size // 8)
    flip = study.augment.flip if study.augment.flip is not None else study.dataset not in NO_FLIP_DATASETS
    return AugmentPolicy(crop_pad=pad, flip=flip, seed=study.seed)


def load_study_data(study: StudyConfig, show_progress: bool = True) -> ImageData:
    """The study's data set: train (minus validation), validation and test splits.

    The validation split is the source's own (an image folder's ``val/``) or a stratified one
    carved from the training images, seeded by the study (``validation_fraction``, with at
    least ``validation_min_per_class`` images of each class).
    """
    root = study.resolve(study.data_root) if study.data_root else None
    spec = study.dataset
    if spec.startswith("imagefolder:"):
        spec = "imagefolder:" + str(study.resolve(spec.split(":", 1)[1]))
    data = load_dataset(spec, root=root, cache_dir=Path.cwd() / ".cache" / "autokd", download=study.download,
                        image_size=study.image_size, show_progress=show_progress)
    if study.subset_train or study.subset_test:
        data = data.subset(study.subset_train, study.subset_test, seed=study.seed)
    return data.with_validation(study.validation_fraction, seed=study.seed,
                                min_per_class=study.validation_min_per_class)


def build_context(study: StudyConfig, *, device: torch.device | None = None, show_progress: bool = True,
                  on_teacher_epoch: Callable[[int, dict], None] | None = None,
                  data: ImageData | None = None) -> TrialContext:
    """Load data (unless given) and teacher once; executors call this once per process."""
    from autokd.teacher import build_teacher

    device = device or pick_device()
    data = data if data is not None else load_study_data(study, show_progress)
    policy = augment_policy(study, data)
    teacher, summary = build_teacher(study, data, policy, device, on_epoch=on_teacher_epoch)
    return TrialContext(data=data, device=device, teacher=teacher, teacher_summary=summary, policy=policy,
                        cache_dir=study.output_dir / "teacher_cache", latency=study.latency_settings,
                        compile=study.compile)


@lru_cache(maxsize=2)
def cached_context(study_yaml: str) -> TrialContext:
    """One context per worker process and study (Ray workers reuse data, teacher and CUDA context)."""
    import yaml

    return build_context(StudyConfig(**yaml.safe_load(study_yaml)), show_progress=False)


# --------------------------------------------------------------------------- stages


def build_student(config: TrialConfig, data: ImageData) -> nn.Sequential:
    torch.manual_seed(config.train.seed)
    net = build_model(config.student.family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, **config.student.knob_dict)
    return deployable(net, data.mean, data.std)


def distill_student(model: nn.Module, config: TrialConfig, context: TrialContext,
                    on_epoch: Callable[[int, dict], None] | None = None, start_epoch: int = 0,
                    optimizer_state: dict | None = None) -> dict[str, Any]:
    mixup = config.distill.loss == "fm"
    policy = context.policy_for(mixup)
    result = train_model(
        model, context.train_images, context.train_labels, train=config.train, distill=config.distill,
        policy=policy, teacher=context.teacher, logit_cache=context.logit_cache(mixup),
        evaluate=lambda m: accuracy(predict(m, context.val_images), context.val_labels),
        on_epoch=on_epoch, start_epoch=start_epoch, optimizer_state=optimizer_state, compile_model=context.compile)
    return {"train_seconds": result.seconds, "compile_seconds": result.compile_seconds,
            "teacher_path": result.teacher_path, "history": result.history}


def split_accuracies(logits_of: Callable[[torch.Tensor], torch.Tensor], context: TrialContext) -> dict[str, Any]:
    """Accuracy and per-class accuracy on validation and test; ``accuracy`` (the objective) is validation's.

    ``logits_of(images)`` gives a model's logits for uint8 images on the context's device.
    """
    figures: dict[str, Any] = {}
    for split, images, labels in (("validation", context.val_images, context.val_labels),
                                  ("test", context.test_images, context.test_labels)):
        logits = logits_of(images)
        figures[f"{split}_accuracy"] = accuracy(logits, labels)
        figures[f"per_class_{split}_accuracy"] = per_class_accuracy(logits, labels, context.data.num_classes)
    return {"accuracy": figures["validation_accuracy"], **figures}


def measure_model(model: nn.Module, context: TrialContext) -> dict[str, Any]:
    """Every objective, measured on the model as deployed (CPU copy for size, MACs, latency).

    ``accuracy`` is validation accuracy (what the search optimises); ``test_accuracy`` is for
    the report only.
    """
    metrics = split_accuracies(lambda images: predict(model, images), context)
    example = context.data.test_images[:1].float() / 255.0
    if context.device.type == "cuda":  # latencies are timed alone: other trials wait (autokd.hostlock)
        gpu = latency_stats(model, example.to(context.device), context.latency)
        metrics.update(gpu_latency_ms=gpu.median_ms, gpu_latency_spread_ms=gpu.spread_ms)
    cpu_model = _cpu_copy(model)
    # latency_ms: median of the timed runs; latency_spread_ms: their p90 - p10 (LatencyStats)
    latency = latency_stats(cpu_model, example, context.latency)
    metrics.update(
        params=count_params(cpu_model),
        size_bytes=serialized_size_bytes(cpu_model),
        macs=count_macs(cpu_model, example),
        latency_ms=latency.median_ms,
        latency_spread_ms=latency.spread_ms,
        latency_wait_s=latency.waited_s,
        latency_alone=latency.alone,
        latency_threads=context.latency.threads,
        latency_runs=latency.runs,
    )
    return metrics


def _cpu_copy(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).cpu().eval() if next(model.parameters(), torch.empty(0)).device.type != "cpu" \
        else model.eval()


def run_trial(config: TrialConfig, context: TrialContext, *, work_dir: Path,
              on_epoch: Callable[[int, dict], None] | None = None, resume_from: Path | None = None) -> dict[str, Any]:
    """Train, compress and measure one student; returns every figure plus where its weights are.

    ``on_epoch(epoch, metrics)`` sees per-epoch accuracy (and ``_state`` for checkpointing) and
    may raise to stop the trial. ``resume_from`` continues from an epoch checkpoint.
    """
    if config.kind == "pair":  # two students + a selector: autokd.pairs (no epoch resume)
        from autokd.pairs import run_pair_trial

        return run_pair_trial(config, context, work_dir=work_dir, on_epoch=on_epoch)
    started = time.perf_counter()
    if config.compress.method != "none":  # a setting that cannot compress fails before training
        from autokd.compress import check_spec

        check_spec(config.compress)
    model = build_student(config, context.data).to(context.device)
    start_epoch, optimizer_state = 0, None
    if resume_from is not None and resume_from.exists():
        state = torch.load(resume_from, map_location=context.device, weights_only=True)
        model.load_state_dict(state["model"])
        start_epoch, optimizer_state = int(state["epoch"]), state["optimizer_state"]
    metrics: dict[str, Any] = {"resumed_from_epoch": start_epoch}
    metrics.update(distill_student(model, config, context, _with_resume_state(on_epoch, model), start_epoch,
                                   optimizer_state))
    model, compression = compress_stage(model, config, context)
    metrics.update(compression)
    metrics.update(measure_model(model, context))
    net, extra = (model[1] if isinstance(model, nn.Sequential) else model), {}
    if metrics.get("compression", "none") != "none":  # recipe + compressed weights, see autokd.compress
        from autokd.compress import checkpoint_entry

        net, extra = nn.Module(), {"compressed_module": checkpoint_entry(model, config.compress)}
    weights = save_checkpoint(work_dir / "student.pt", net,
                              family=config.student.family, knobs=config.student.knob_dict,
                              num_classes=context.data.num_classes, in_channels=context.data.channels,
                              image_size=context.data.image_size, mean=context.data.mean, std=context.data.std,
                              config=config.to_json(), accuracy=metrics["test_accuracy"],
                              validation_accuracy=metrics["validation_accuracy"], **extra)
    metrics.update(weights_path=str(weights), trial_seconds=time.perf_counter() - started,
                   device=str(context.device), **environment(context.device))
    return metrics


def _with_resume_state(on_epoch: Callable[[int, dict], None] | None,
                       model: nn.Module) -> Callable[[int, dict], None] | None:
    """Widen the lazy ``_state`` to exactly what ``resume_from`` reads: model, epoch, optimizer state."""
    if on_epoch is None:
        return None

    def hook(epoch: int, metrics: dict[str, Any]) -> None:
        optimizer_state = metrics.get("_state")
        on_epoch(epoch, metrics | {"_state": lambda: {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "epoch": epoch + 1,
            "optimizer_state": optimizer_state() if optimizer_state else None}})

    return hook


def compress_stage(model: nn.Module, config: TrialConfig, context: TrialContext) -> tuple[nn.Module, dict]:
    """Compression after distillation; ``method='none'`` passes the student through untouched."""
    if config.compress.method == "none":
        return model, {"compression": "none"}
    from autokd.compress import compress_model

    return compress_model(model, config, context)
