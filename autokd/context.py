"""What every trial of a study shares, built once per process: data, teacher, augmentation, settings.

``build_context`` loads the study's data (train / validation / test) and its teacher, once;
``build_student`` and ``distill_student`` are the first two stages of every trial, single or
pair (:mod:`autokd.trial`, :mod:`autokd.pairs`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from autokd.checkpoint import EpochCheckpointer, deployable
from autokd.config import LatencySettings, StudyConfig, TrialConfig
from autokd.data import PATH_SOURCES, ImageData, load_dataset
from autokd.distill import Teacher
from autokd.hostlock import idle_during, paced
from autokd.measure import accuracy
from autokd.models import build_model
from autokd.teacher import build_teacher
from autokd.train import AugmentPolicy, TeacherLogitCache, pick_device, predict, train_model

NO_FLIP_DATASETS = ("digits", "mnist", "svhn")


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
    return AugmentPolicy(crop_pad=pad, flip=flip, seed=study.seed, inception=study.augment.inception_crop)


def study_data_source(study: StudyConfig) -> dict[str, Any]:
    """The study's data spec as ``load_dataset`` and ``inspect_dataset`` take it, paths resolved from the study file."""
    spec = study.dataset
    kind, colon, path = spec.partition(":")
    if colon and kind in PATH_SOURCES:
        spec = f"{kind}:{study.resolve(path)}"
    return {"spec": spec, "root": study.resolve(study.data_root) if study.data_root else None,
            "cache_dir": Path.cwd() / ".cache" / "autokd", "download": study.download, "image_size": study.image_size}


def load_study_data(study: StudyConfig, show_progress: bool = True) -> ImageData:
    """The study's data set: train (minus validation), validation and test splits.

    The validation split is the source's own (an image folder's ``val/``) or a stratified one
    carved from the training images, seeded by the study (``validation_fraction``, with at
    least ``validation_min_per_class`` images of each class).
    """
    data = load_dataset(**study_data_source(study), show_progress=show_progress)
    if study.subset_train or study.subset_test:
        data = data.subset(study.subset_train, study.subset_test, seed=study.seed)
    return data.with_validation(study.validation_fraction, seed=study.seed,
                                min_per_class=study.validation_min_per_class)


def build_context(study: StudyConfig, *, device: torch.device | None = None, show_progress: bool = True,
                  on_teacher_epoch: Callable[[int, dict], None] | None = None,
                  data: ImageData | None = None) -> TrialContext:
    """Load data (unless given) and teacher once; executors call this once per process."""
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
    return build_context(StudyConfig(**yaml.safe_load(study_yaml)), show_progress=False)


def build_student(config: TrialConfig, data: ImageData) -> nn.Sequential:
    """The trial's student, seeded by ``train.seed``, taking [0, 1] input: untrained, or started from
    its spec's weights file (``net.weights_info`` says what was loaded)."""
    torch.manual_seed(config.train.seed)
    net = build_model(config.student.family, num_classes=data.num_classes, in_channels=data.channels,
                      image_size=data.image_size, weights=config.student.weights, **config.student.knob_dict)
    return deployable(net, data.mean, data.std)


def distill_student(model: nn.Module, config: TrialConfig, context: TrialContext,
                    on_epoch: Callable[[int, dict], None] | None = None,
                    checkpointer: EpochCheckpointer | None = None, resume: dict | None = None) -> dict[str, Any]:
    """Train ``model`` from the teacher on the training split; the epoch curve is validation accuracy.

    ``checkpointer`` keeps the last finished epoch; ``resume`` (what it saved) continues from it.
    """
    mixup = config.distill.loss == "fm"
    policy = context.policy_for(mixup)
    with paced() as pace:  # gives way to a measurement elsewhere at every step; idle while reporting an epoch
        result = train_model(
            model, context.train_images, context.train_labels, train=config.train, distill=config.distill,
            policy=policy, teacher=context.teacher, logit_cache=context.logit_cache(mixup),
            evaluate=lambda m: accuracy(predict(m, context.val_images, pace=pace), context.val_labels),
            on_epoch=idle_during(on_epoch), checkpointer=checkpointer, resume=resume, compile_model=context.compile,
            pace=pace)
    return {"train_seconds": result.seconds, "compile_seconds": result.compile_seconds,
            "teacher_path": result.teacher_path, "history": result.history}
