"""What every trial of a study shares, built once per process: data, teacher, augmentation, settings.

``build_context`` loads the study's data (train / validation / test) and its teacher, once; the
stages of a trial (:mod:`autokd.trial`) take the pieces of the :class:`TrialContext` they use.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from autokd.config import LatencySettings, StudyConfig
from autokd.data import PATH_SOURCES, ImageData, load_dataset
from autokd.distill import Teacher
from autokd.hostlock import scope_key
from autokd.measure import Split
from autokd.teacher import build_teacher
from autokd.train import AugmentPolicy, TeacherLogitCache, pick_device

NO_FLIP_DATASETS = ("digits", "mnist", "svhn")


class Teaching:
    """What distilling from the study's teacher takes: the teacher, the augmentation schedule and the
    teacher's logits under it, computed once per schedule and shared by every trial of the process.

    Example:
        >>> teaching = context.teaching
        >>> train_model(student, images, labels, policy=teaching.policy_for(False), teacher=teaching.teacher,
        ...             logit_cache=teaching.logit_cache(False), ...)
    """

    def __init__(self, teacher: Teacher | None, policy: AugmentPolicy, images: torch.Tensor, teacher_id: str,
                 cache_dir: Path | None):
        self.teacher, self.policy = teacher, policy
        self._images, self._teacher_id, self._cache_dir = images, teacher_id, cache_dir  # (N, C, H, W) uint8
        self._caches: dict[str, TeacherLogitCache] = {}

    def policy_for(self, mixup: bool) -> AugmentPolicy:
        """The study's augmentation schedule, with or without mixup (function matching uses it)."""
        return dataclasses.replace(self.policy, mixup=mixup)

    def logit_cache(self, mixup: bool) -> TeacherLogitCache | None:
        """The teacher's logits on the training images under :meth:`policy_for` ``(mixup)``; None without a teacher."""
        if self.teacher is None:
            return None
        policy = self.policy_for(mixup)
        key = policy.key()
        if key not in self._caches:
            self._caches[key] = TeacherLogitCache(self.teacher, self._images, policy, self._teacher_id,
                                                  self._cache_dir)
        return self._caches[key]


@dataclass
class TrialContext:
    """What every trial of a study shares: data on the device, the teacher, measurement settings.

    It hands each stage of a trial (:mod:`autokd.trial`) the pieces it uses: the splits on the
    device (``train``, ``validation``, ``test``, each a :class:`autokd.measure.Split`), the
    ``teaching`` (teacher, augmentation, logit caches), ``latency`` and ``device``. Students,
    selectors and fine-tuning train on ``train``; every objective and every choice (epoch curves,
    pruning, the sampler) reads ``validation``; ``test`` is evaluated once per finished trial, for
    the report only.
    """

    data: ImageData
    device: torch.device
    teacher: Teacher | None
    teacher_summary: dict[str, Any]
    policy: AugmentPolicy
    cache_dir: Path | None
    latency: LatencySettings = LatencySettings()
    compile: bool = False
    #: Torch intra-op threads of each trial (``ExecutorConfig.trial_threads``); None: torch's own.
    threads: int | None = None
    #: The study's key for :func:`autokd.hostlock.study_scope`: a measurement pauses only its own study's trials.
    lock_scope: str | None = None

    def __post_init__(self) -> None:
        if not self.data.has_validation:
            raise ValueError("a trial context needs data with a validation split (ImageData.with_validation)")
        data, device = self.data, self.device
        self.train = Split(data.train_images.to(device), data.train_labels.to(device))
        self.validation = Split(data.val_images.to(device), data.val_labels.to(device))
        self.test = Split(data.test_images.to(device), data.test_labels.to(device))
        self.teaching = Teaching(self.teacher, self.policy, self.train.images,
                                 self.teacher_summary.get("id", "teacher"), self.cache_dir)


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
                        compile=study.compile, threads=study.executor.trial_threads(host_cores()),
                        lock_scope=scope_key(str(study.output_dir.resolve()), study.name))


def host_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@lru_cache(maxsize=2)
def cached_context(study_yaml: str) -> TrialContext:
    """One context per worker process and study (Ray workers reuse data, teacher and CUDA context)."""
    return build_context(StudyConfig(**yaml.safe_load(study_yaml)), show_progress=False)
